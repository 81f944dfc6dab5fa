"""Where every output of a run lives (one place, so stages and the README agree)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from salbench.config import Config


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Paths under the run's output root.

    ``<root>/benchmark/``                     generated embedded benchmark (embedded runs only)
    ``<root>/models/``                        trained embedded checkpoints + training/calibration CSVs
    ``<root>/<model>/diagnostics/``           stage 1: diagnostics.csv, complete_info.json
    ``<root>/<model>/maps/<label_set>/<method>.zarr``   stage 2 map stores
    ``<root>/<model>/evaluation/<label_set>/``          stage 3 per-image and summary CSVs
    ``<root>/results.csv``                    tidy long-format results of every stage
    ``<root>/report/``                        stage 5 tables, figures, REPORT.md
    """

    root: Path
    model: str

    @classmethod
    def from_config(cls, cfg: Config) -> RunLayout:
        return cls(Path(cfg.run.output_root), cfg.model.name)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def model_dir(self) -> Path:
        return self.root / model_folder(self.model)

    @property
    def diagnostics_dir(self) -> Path:
        return self.model_dir / "diagnostics"

    @property
    def diagnostics_csv(self) -> Path:
        return self.diagnostics_dir / "diagnostics.csv"

    def maps(self, label_set: str, method: str) -> Path:
        return self.model_dir / "maps" / label_set / f"{method}.zarr"

    def evaluation_dir(self, label_set: str) -> Path:
        return self.model_dir / "evaluation" / label_set

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"


def model_folder(name: str) -> str:
    """The folder of a model under the output root: its id, or for a ``path/to/file.py:factory`` /
    ``package.module:factory`` / ``timm:<name>`` id a name that stays inside the root and is unique to
    the id (``file.factory-<8 hex of the id's SHA-256>``)."""
    parts = name.split("/")
    if all(re.fullmatch(r"[A-Za-z0-9_.-]+", p) and p not in (".", "..") for p in parts):
        return name  # a model id, or a relative folder of one (an augmented variant's sub-run)
    where, _, attr = name.rpartition(":")
    stem = Path(where.replace("\\", "/")).name.removesuffix(".py") if where else ""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}.{attr}" if stem else attr).strip("._") or "model"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def embedded_checkpoint(cfg: Config) -> Path:
    """Default checkpoint path of an embedded model (depends on model name, data seed and train seed)."""
    return (
        Path(cfg.run.output_root)
        / "models"
        / f"{cfg.model.name}_data{cfg.data.embedded.seed}_seed{cfg.train.seed}.pt"
    )
