"""The files of evaluation: map stores read for a run, per-(method, batch) parts, per-image CSVs.

Helpers of :mod:`salbench.stages.evaluate`: which store and rows hold a method's maps, what decides an
output (:func:`evaluation_key`), where parts and finished outputs go, how parts are written atomically
and merged, and where an earlier label set's scores may be copied from (:mod:`.reuse`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from salbench.errors import DataError
from salbench.rng import SEEDING
from salbench.stages.diagnostics import read_targets
from salbench.stages.kinds import Kind
from salbench.stages.reuse import ScoreSource, score_source
from salbench.stages.workspace import Workspace
from salbench.store.maps import MapStore
from salbench.store.outputs import atomic_path, digest, write_csv, write_json

log = logging.getLogger(__name__)


def open_store(ws: Workspace, label_set: str, method: str) -> tuple[MapStore, np.ndarray]:
    """The complete store of ``method`` and, per image of the run in order, its row in the store.

    Raises:
        DataError: the store holds another method's, label set's, model's or protocol's maps (its
            attributes say so), or other images, naming the store and what differs.
    """
    path = ws.layout.maps(label_set, method)
    store = MapStore.read_only(path)
    attrs, hint = store.attrs, "regenerate it (--overwrite) or use another --output-root"
    expected = {
        "method": (attrs.get("method", {}).get("method"), method),
        "label_set": (attrs.get("label_set"), label_set),
        "model": (attrs.get("model"), ws.cfg.model.name),
        "model_id": (attrs.get("model_id"), ws.model_id),
        "protocol": (attrs.get("protocol"), ws.cfg.run.protocol),
    }
    for key, (stored, wanted) in expected.items():
        if stored != wanted:
            raise DataError(f"map store {path}: made for {key} {stored!r}, this run has {wanted!r}; {hint}")
    position = {image_id: i for i, image_id in enumerate(store.ids)}
    missing = [i for i in ws.images.ids if i not in position]
    if missing:
        raise DataError(
            f"map store {path}: no map of image {missing[0]!r} ({len(missing)} of {len(ws.images)} images "
            f"missing); {hint}"
        )
    return store, np.array([position[i] for i in ws.images.ids], dtype=np.int64)


def read_maps(store: MapStore, rows: np.ndarray) -> np.ndarray:
    """Maps of store ``rows``; a non-finite map can only be a deleted or damaged chunk: an error."""
    maps = store.read(rows)
    bad = ~np.isfinite(maps.reshape(len(rows), -1)).all(axis=1)
    if bad.any():
        raise DataError(
            f"map store {store.path}: rows {rows[bad].min()}-{rows[bad].max()} read as missing maps (a "
            "deleted or damaged chunk); run `salbench verify` to reset them, then regenerate"
        )
    return maps


def evaluation_key(ws: Workspace, kind: Kind, label_set: str, store: MapStore, targets: Any) -> dict:
    """Everything that decides one method's ``kind`` outputs, and its digest (``key``)."""
    params = [dataclasses.asdict(p) for p in kind.params(ws)]
    store_id = {k: v for k, v in store.attrs.items() if k != "last_run"}
    inputs = {
        "kind": kind.name,
        "params": params,
        "maps": digest({"attrs": store_id, "ids": store.ids}),
        "images": ws.images_id,
        "model": ws.model_id,
        "targets": digest([np.asarray(a).tolist() for a in targets]),
        "label_set": label_set,
        "protocol": ws.cfg.run.protocol,
        "seed": ws.cfg.run.seed,
        "batch_size": ws.cfg.run.batch_size,
        "max_batch": ws.cfg.run.max_batch,
        "seeding": SEEDING,
        "precision": ws.cfg.run.precision,
    }
    return {"key": digest(inputs), "inputs": inputs}


def part_paths(ws: Workspace, label_set: str, method: str, kind: str, b: int) -> tuple[Path, Path]:
    folder = ws.layout.evaluation_dir(label_set) / ".parts" / f"{method}_{kind}"
    return folder / f"{b:06d}.csv", folder / f"{b:06d}.npz"


def final_path(ws: Workspace, label_set: str, method: str, kind: str) -> Path:
    return ws.layout.evaluation_dir(label_set) / f"{method}_{kind}.csv"


def sidecar(final: Path) -> Path:
    return final.with_suffix(".json")


def is_done(final: Path, ids: list[str], key: str) -> bool:
    """The per-image CSV exists for exactly these images and its sidecar records the same inputs."""
    if not final.is_file() or not sidecar(final).is_file():
        return False
    try:
        recorded = json.loads(sidecar(final).read_text()).get("key")
        frame = pd.read_csv(final, usecols=["image_id"], dtype={"image_id": str})
    except (ValueError, OSError, pd.errors.ParserError):
        return False
    return recorded == key and frame["image_id"].tolist() == ids


def write_part(csv: Path, npz: Path, ids: list[str], columns: dict | pd.DataFrame, arrays: dict) -> None:
    if arrays:
        with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, image_ids=np.asarray(ids), **arrays)
    if isinstance(columns, pd.DataFrame):
        frame = columns
    else:
        frame = pd.DataFrame({"image_id": ids, **{k: np.asarray(v) for k, v in columns.items()}})
    write_csv(csv, frame)  # written last: its presence marks the part complete


def merge_parts(
    ws: Workspace, label_set: str, method: str, kind: str, n_batches: int, key: dict
) -> pd.DataFrame:
    """The parts of every batch -> the per-image CSV (+ curves), its sidecar last; parts removed."""
    parts = [part_paths(ws, label_set, method, kind, b) for b in range(n_batches)]
    frame = pd.concat([pd.read_csv(c, dtype={"image_id": str}) for c, _ in parts], ignore_index=True)
    if frame["image_id"].tolist() != ws.images.ids:
        raise DataError(f"{parts[0][0].parent}: parts do not cover this run's images; rerun with --overwrite")
    if parts[0][1].is_file():
        loaded = [np.load(z, allow_pickle=False) for _, z in parts]
        arrays = {k: np.concatenate([d[k] for d in loaded]) for k in loaded[0].files}
        out = ws.layout.evaluation_dir(label_set) / f"{method}_curves.npz"
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    final = final_path(ws, label_set, method, kind)
    write_csv(final, frame)
    write_json(sidecar(final), key)  # last: a CSV without a matching sidecar is not complete
    shutil.rmtree(parts[0][0].parent, ignore_errors=True)
    return frame


def fresh_parts(ws: Workspace, label_set: str, method: str, kind: str, key: dict) -> None:
    """Keep the parts of an interrupted run only if they were computed from the same inputs."""
    folder = part_paths(ws, label_set, method, kind, 0)[0].parent
    stamp = folder / "key.json"
    recorded = json.loads(stamp.read_text()).get("key") if stamp.is_file() else None
    if ws.cfg.run.overwrite or recorded != key["key"]:
        if folder.exists():
            log.info("%s: parts of other inputs discarded", folder)
        shutil.rmtree(folder, ignore_errors=True)
        write_json(stamp, key)


def find_score_source(
    ws: Workspace, kind: Kind, label_set: str, method: str, targets: np.ndarray, correct: np.ndarray
) -> ScoreSource | None:
    """Where ``method``'s scores of ``kind`` may be copied from (:func:`.reuse.score_source`): an earlier
    label set's output counts only when it is complete for the inputs it has now (:func:`is_done` under
    its current :func:`evaluation_key`, which covers its map store, model, parameters and targets)."""
    has_arrays = any(run.group.arrays for run in kind.runs)

    def evaluation(other: str):
        store, position = open_store(ws, other, method)
        theirs = read_targets(ws.layout.diagnostics_csv, other, ws.images.ids)
        final = final_path(ws, other, method, kind.name)
        key = evaluation_key(ws, kind, other, store, [*theirs, correct])
        curves = ws.layout.evaluation_dir(other) / f"{method}_curves.npz" if has_arrays else None
        return is_done(final, ws.images.ids, key["key"]), final, curves, store, position, theirs[0]

    return score_source(ws, label_set, targets, evaluation)
