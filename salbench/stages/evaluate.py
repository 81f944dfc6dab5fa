"""Stage 3: evaluate stored maps (interpretable recognition, fidelity/complexity, localization).

For each label set, every complete map store is evaluated in fixed, aligned batches: the images of a
batch are loaded once and every pending method is evaluated on them (so map-independent model passes,
e.g. the insertion/deletion curve ends, are shared through a cache). Each (method, batch) result is
written atomically as a part file, so a killed run resumes at the batch it stopped in; when a method is
complete its parts are merged into ``<method>_<kind>.csv`` (+ ``<method>_curves.npz``) and its summary
rows are upserted into ``results.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from salbench.data.sources import load_boxes, load_mask
from salbench.metrics import METRICS
from salbench.metrics.base import finite_mean
from salbench.progress import progress as progress_bar
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.diagnostics import read_targets
from salbench.stages.kinds import KINDS, Kind, compute_kind, make_state
from salbench.stages.workspace import Workspace, open_workspace
from salbench.store.maps import MapStore
from salbench.store.outputs import atomic_path, write_csv, write_run_record
from salbench.store.results import upsert_results

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Batch:
    """One aligned batch of images shared by every method evaluated on it."""

    index: int
    rows: np.ndarray
    ids: list[str]
    images: torch.Tensor
    targets: torch.Tensor
    base_probs: np.ndarray
    correct: np.ndarray
    _extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def boxes(self, ws: Workspace) -> list[np.ndarray] | None:
        if "boxes" not in self._extras:
            if ws.augmentation != "none":
                return None
            recs = [ws.data.records[int(r)] for r in self.rows]
            boxes = [load_boxes(ws.data, r) for r in recs]
            self._extras["boxes"] = None if any(b is None for b in boxes) else boxes
        return self._extras["boxes"]

    def masks(self, ws: Workspace) -> torch.Tensor | None:
        if "masks" not in self._extras:
            if ws.augmentation != "none":
                return None
            recs = [ws.data.records[int(r)] for r in self.rows]
            masks = [load_mask(ws.data, r) for r in recs] if ws.data.masks is not None else [None]
            self._extras["masks"] = None if any(m is None for m in masks) else torch.stack(masks)
        return self._extras["masks"]


def available_methods(ws: Workspace, label_set: str) -> list[str]:
    """Store ids with a complete map store for ``label_set`` (sorted)."""
    folder = ws.layout.model_dir / "maps" / label_set
    out = []
    for path in sorted(folder.glob("*.zarr")) if folder.is_dir() else []:
        try:
            if MapStore.read_only(path).complete:
                out.append(path.name.removesuffix(".zarr"))
            else:
                log.warning("%s is incomplete: rerun its generation script; not evaluated", path)
        except Exception as exc:  # an unreadable store must not stop the others
            log.warning("%s cannot be read (%s); not evaluated", path, exc)
    return out


def _part_paths(ws: Workspace, label_set: str, method: str, kind: str, b: int) -> tuple[Path, Path]:
    folder = ws.layout.evaluation_dir(label_set) / ".parts" / f"{method}_{kind}"
    return folder / f"{b:06d}.csv", folder / f"{b:06d}.npz"


def _final_path(ws: Workspace, label_set: str, method: str, kind: str) -> Path:
    return ws.layout.evaluation_dir(label_set) / f"{method}_{kind}.csv"


def _is_done(path: Path, ids: list[str]) -> bool:
    if not path.is_file():
        return False
    try:
        return pd.read_csv(path, usecols=["image_id"], dtype={"image_id": str})["image_id"].tolist() == ids
    except (ValueError, pd.errors.ParserError):
        return False


def _write_part(csv: Path, npz: Path, batch: Batch, columns: dict, arrays: dict) -> None:
    if arrays:
        with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, image_ids=np.asarray(batch.ids), **arrays)
    frame = pd.DataFrame({"image_id": batch.ids, **{k: np.asarray(v) for k, v in columns.items()}})
    write_csv(csv, frame)  # written last: its presence marks the part complete


def _merge(ws: Workspace, label_set: str, method: str, kind: str, n_batches: int) -> pd.DataFrame:
    parts = [_part_paths(ws, label_set, method, kind, b) for b in range(n_batches)]
    frame = pd.concat([pd.read_csv(c, dtype={"image_id": str}) for c, _ in parts], ignore_index=True)
    if parts[0][1].is_file():
        loaded = [np.load(z, allow_pickle=False) for _, z in parts]
        arrays = {k: np.concatenate([d[k] for d in loaded]) for k in loaded[0].files}
        out = ws.layout.evaluation_dir(label_set) / f"{method}_curves.npz"
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    write_csv(_final_path(ws, label_set, method, kind), frame)
    shutil.rmtree(parts[0][0].parent, ignore_errors=True)
    return frame


def summary_rows(
    ws: Workspace,
    label_set: str,
    method: str,
    frame: pd.DataFrame,
    kind: Kind,
    augmentation: str = "none",
    variant: str = "",
    family: str = "unknown",
) -> list[dict]:
    """Tidy results rows of ``kind``'s summarised columns: mean over the finite per-image values,
    ``n_images`` of them, ``n_skipped`` the others; the direction of the column's metric."""
    rows = []
    for col, metric in kind.columns.items():
        if col not in frame:
            continue
        value, n, n_other = finite_mean(pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64))
        rows.append(
            {
                "model": ws.cfg.model.name,
                "dataset": ws.data.name,
                "label_set": label_set,
                "method": method,
                "family": family,
                "augmentation": augmentation,
                "variant": variant,
                "level": 0,
                "metric": col,
                "value": value,
                "n_images": n,
                "n_skipped": n_other,
                "higher_is_better": METRICS.get(metric).higher_is_better,
                "protocol": ws.cfg.run.protocol,
            }
        )
    return rows


def evaluate(
    ws: Workspace, kind: Kind, methods: list[str] | None = None, progress: bool = True
) -> list[dict]:
    """Run ``kind`` for every label set of the config x available (or given) methods; returns result rows."""
    all_rows: list[dict] = []
    bs, n = ws.cfg.run.batch_size, len(ws.images)
    n_batches = -(-n // bs)
    for label_set in ws.cfg.run.label_sets:
        avail = available_methods(ws, label_set)
        todo = [m for m in (methods or avail) if m in avail]
        missing = sorted(set(methods or []) - set(avail))
        if missing:
            log.warning("%s: no complete maps for %s; run generation first", label_set, ", ".join(missing))
        if ws.cfg.run.overwrite:
            for m in todo:
                shutil.rmtree(_part_paths(ws, label_set, m, kind.name, 0)[0].parent, ignore_errors=True)
        pending = [
            m
            for m in todo
            if ws.cfg.run.overwrite or not _is_done(_final_path(ws, label_set, m, kind.name), ws.images.ids)
        ]
        if pending:
            seconds = _run_batches(ws, kind, label_set, pending, n_batches, progress)
            extra = {"kind": kind.name, "seconds_per_method": seconds, "n_images": n, **ws.describe()}
            write_run_record(
                _final_path(ws, label_set, pending[0], kind.name).parent,
                ws.cfg,
                ws.runtime,
                f"evaluation:{kind.name}",
                extra,
                manifest_name=f"{kind.name}_manifest.json",
            )
        for m in todo:
            final = _final_path(ws, label_set, m, kind.name)
            frame = (
                _merge(ws, label_set, m, kind.name, n_batches)
                if m in pending
                else pd.read_csv(final, dtype={"image_id": str})
            )
            family = MapStore.read_only(ws.layout.maps(label_set, m)).attrs["method"]["family"]
            all_rows += summary_rows(ws, label_set, m, frame, kind, ws.augmentation, ws.variant, family)
    upsert_results(ws.layout.results_csv, all_rows)
    return all_rows


def _run_batches(
    ws: Workspace, kind: Kind, label_set: str, methods: list[str], n_batches: int, progress: bool
) -> dict[str, float]:
    """Compute the missing per-batch parts of ``methods``; returns wall seconds per method (this run)."""
    bs, n = ws.cfg.run.batch_size, len(ws.images)
    targets, base = read_targets(ws.layout.diagnostics_csv, label_set, ws.images.ids)
    correct = (
        read_targets(ws.layout.diagnostics_csv, "predicted", ws.images.ids)[0]
        == read_targets(ws.layout.diagnostics_csv, "groundtruth", ws.images.ids)[0]
    )
    stores = {m: MapStore.read_only(ws.layout.maps(label_set, m)) for m in methods}
    seconds: dict[str, float] = defaultdict(float)
    state = make_state(kind, ws, label_set)
    dev = ws.runtime.torch_device
    for b in progress_bar(range(n_batches), f"{kind.name} {label_set}", enabled=progress):
        todo = [m for m in methods if not _part_paths(ws, label_set, m, kind.name, b)[0].is_file()]
        if not todo:
            continue
        rows = np.arange(b * bs, min((b + 1) * bs, n))
        images = ws.images.load(rows)
        batch = Batch(
            b,
            rows,
            [ws.images.ids[i] for i in rows],
            images.to(dev),
            torch.as_tensor(targets[rows], device=dev),
            base[rows],
            correct[rows],
        )
        for m in todo:
            t0 = time.perf_counter()
            maps = torch.from_numpy(stores[m].read(rows)).to(dev)
            columns, arrays = compute_kind(kind, ws, batch, m, maps, state)
            _write_part(*_part_paths(ws, label_set, m, kind.name, b), batch, columns, arrays)
            seconds[m] += time.perf_counter() - t0
    return dict(seconds)


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    if "kind" not in options:
        p.add_argument("kind", choices=list(KINDS), help="what to compute (one evaluation script each)")
    p.add_argument("--method", nargs="+", help="map store ids to evaluate (default: every complete store)")


def _run(args: argparse.Namespace, options: Options) -> int:
    """Config -> workspace -> :func:`evaluate` -> one printed line per results row."""
    configure_logging(args.verbose)
    ws = open_workspace(config_from_args(args))
    for r in evaluate(ws, KINDS[options.get("kind") or args.kind], args.method):
        print(
            f"{r['label_set']:12s} {r['method']:34s} {r['metric']:26s} {r['value']:10.4f} (n={r['n_images']})"
        )
    print(
        f"per-image CSVs under {ws.layout.model_dir / 'evaluation'}; summary rows in {ws.layout.results_csv}"
    )
    return 0


COMMAND = register(
    Command(
        "evaluate",
        "stage 3: score stored maps (recognition, complexity, localization, gomez)",
        _arguments,
        _run,
    )
)
