"""``salbench plan``: what ``salbench run`` would still compute for a config, without computing anything.

It reads only the run folder (no model is built, no image decoded): the trained checkpoints, the
diagnostics, every map store the pipeline's generation steps write (rows done of rows listed) and every
per-image evaluation file, then prints one line per step with what is done and what is missing. Whether
a completed output still matches its inputs (model, maps, parameters) is checked by the stage itself
when it runs: ``plan`` reports what is on disk.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from salbench.config import CONFIG_DIR, Config
from salbench.errors import DataError
from salbench.stages.cli import Command, Options, config_from_args, register
from salbench.stages.generate import _fields
from salbench.stages.pipeline import GT, Step, steps
from salbench.store.layout import RunLayout, embedded_checkpoint, model_folder
from salbench.store.maps import MapStore

_EVALUATED = {"recognition": None, "complexity": ("groundtruth",), "localization": ("groundtruth",)}
"""Evaluation kinds of the pipeline and the label sets each is run on (None: the run's label sets)."""


@dataclasses.dataclass(frozen=True)
class StoreStatus:
    """One expected map store: ``done`` rows of ``total`` (``total`` 0: the store does not exist)."""

    label_set: str
    store_id: str
    done: int
    total: int

    @property
    def state(self) -> str:
        if not self.total:
            return "missing"
        return "done" if self.done == self.total else f"{self.done}/{self.total} rows"


def _argv_value(argv: tuple[str, ...], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def expected_stores(cfg: Config, step: Step) -> Iterator[tuple[str, str]]:
    """``(label_set, store id)`` of every map store a generation step writes."""
    label_sets = ("groundtruth",) if _argv_value(step.argv, "--label-set") == GT[1] else cfg.run.label_sets
    listed = _argv_value(step.argv, "--method")
    methods = [a for a in step.argv[step.argv.index("--method") + 1 :]] if listed else step.options["methods"]
    deprocess = _argv_value(step.argv, "--deprocess")
    for label_set in label_sets:
        for method in methods:
            if "deprocess" in _fields(method):
                yield label_set, f"{method}_{deprocess or 'smoothgrad'}"
            else:
                yield label_set, method


def store_status(layout: RunLayout, label_set: str, store_id: str) -> StoreStatus:
    path = layout.maps(label_set, store_id)
    if not path.exists():
        return StoreStatus(label_set, store_id, 0, 0)
    try:
        store = MapStore.read_only(path)
    except DataError:
        return StoreStatus(label_set, store_id, 0, 0)
    total = len(store.ids)
    return StoreStatus(label_set, store_id, total - len(store.pending()), total)


def evaluation_done(layout: RunLayout, label_set: str, store_id: str, kind: str) -> bool:
    """The per-image file of ``kind`` and its record of inputs exist."""
    final = layout.evaluation_dir(label_set) / f"{store_id}_{kind}.csv"
    return final.is_file() and final.with_suffix(".json").is_file()


def _details(todo: list[StoreStatus]) -> Iterator[str]:
    """One line per label set: the stores to compute, with their rows done where they are partial."""
    for label_set in dict.fromkeys(s.label_set for s in todo):
        names = [
            s.store_id + ("" if s.state == "missing" else f" ({s.state})")
            for s in todo
            if s.label_set == label_set
        ]
        yield f"      {label_set}: {', '.join(names)}"


def _with_model(cfg: Config, name: str) -> Config:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=name))


def plan_lines(cfg: Config, casme_checkpoint: str | None = None) -> list[str]:
    """The plan as printed lines: one per step, then a count of what remains."""
    layout = RunLayout.from_config(cfg)
    lines = [f"run folder {layout.root} (model {cfg.model.name}, protocol {cfg.run.protocol})"]
    stores: list[StoreStatus] = []
    missing = 0
    detail: list[str] = []
    for step in steps(cfg.data.kind, casme_checkpoint):
        if step.command == "train":
            names = [a for a in step.argv if not a.startswith("--")]
            paths = [embedded_checkpoint(_with_model(cfg, n)) for n in names]
            state = "done" if all(p.is_file() for p in paths) else "to train"
        elif step.command == "diagnostics":
            model = _argv_value(step.argv, "--model") or cfg.model.name
            state = (
                "done"
                if (layout.root / model_folder(model) / "diagnostics" / "diagnostics.csv").is_file()
                else "to run"
            )
        elif step.command == "train-casme":
            from casme_utils.checkpoint import resolve_checkpoint

            state = "done" if Path(resolve_checkpoint(cfg)).is_file() else "to train"
        elif step.command == "generate":
            found = [store_status(layout, ls, s) for ls, s in expected_stores(cfg, step)]
            stores += found
            todo = [s for s in found if s.state != "done"]
            state = "done" if not todo else f"{len(todo)} of {len(found)} stores to compute"
            detail = list(_details(todo))
        elif step.command == "evaluate":
            kind = step.options["kind"]
            label_sets = _EVALUATED.get(kind) or cfg.run.label_sets
            pairs = [(s.label_set, s.store_id) for s in stores if s.label_set in label_sets]
            todo = [p for p in pairs if not evaluation_done(layout, *p, kind)]
            state = (
                "done" if pairs and not todo else f"{len(todo)} of {len(pairs)} (label set, method) to score"
            )
        elif step.command == "report":
            state = "written" if (layout.report_dir / "REPORT.md").is_file() else "to write"
        else:
            state = "checked when it runs"
        missing += state not in ("done", "written", "checked when it runs")
        lines += [f"  {step.title:44s} {state}", *detail]
        detail = []
    lines.append("nothing left to compute" if not missing else f"{missing} step(s) with work left")
    return lines


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("--casme-checkpoint", help="CASME masker for non-embedded data (as for salbench run)")


def _run(args: argparse.Namespace, options: Options) -> int:
    if args.config is None:
        args.config = str(CONFIG_DIR / "embedded.yaml")
    cfg = config_from_args(args)
    print("\n".join(plan_lines(cfg, args.casme_checkpoint)))
    return 0


COMMAND = register(
    Command("plan", "what `salbench run` would still compute (reads the run folder only)", _arguments, _run)
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)
