"""Label sets that share a target: each map and each score is computed once.

Where an image's target is the same class in two label sets of a run (the predicted class is the
ground truth for every correctly classified image), its map and every score of that map are the same
computation. Every random draw of generation and evaluation is seeded per (image, target)
(:mod:`salbench.rng`), so a map or a score does not depend on the label set or the batch it is computed
in; a later label set therefore copies what an earlier one computed for the same image and target:

- maps (:func:`map_source`): from the earlier label set's store of the same method, made with the same
  settings (store attributes equal but for the label set), for rows whose target is the same;
- scores (:func:`score_source`): an earlier label set's per-image rows of the same evaluation (same
  parameters and inputs but for the label set and its targets), for images whose target and map bytes
  are the same.

Methods whose maps depend on the batch (active dropout in training mode draws one mask for the whole
batch: :attr:`~salbench.methods.base.SaliencyMethod.row_separable`) are always computed. The copies are
counted in the generation records (``n_reused``) and the evaluation manifests (``reused_rows``).
``run.reuse: false`` (``--no-reuse``) computes everything, the check that reuse changes no number.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from salbench.methods.base import SaliencyMethod
from salbench.stages.diagnostics import read_targets
from salbench.stages.workspace import Workspace
from salbench.store.maps import MapStore

log = logging.getLogger(__name__)

_RUN_ATTRS = ("label_set", "last_run")
"""Store attributes that say which label set and run made a store, not how its maps are computed."""


@dataclasses.dataclass
class MapSource:
    """An earlier label set's store whose maps a later label set may copy."""

    label_set: str
    store: MapStore
    same: np.ndarray
    """Per row of the run: the target is the same in both label sets and the source row is written."""

    def copyable(self, rows: np.ndarray) -> np.ndarray:
        """Boolean mask over ``rows``: maps to copy instead of computing."""
        return self.same[rows]


def earlier_label_sets(ws: Workspace, label_set: str) -> list[str]:
    """The run's label sets before ``label_set`` (the ones a copy may come from)."""
    sets = list(ws.cfg.run.label_sets)
    return sets[: sets.index(label_set)] if label_set in sets else []


def map_source(
    ws: Workspace, label_set: str, method: SaliencyMethod, attrs: dict[str, Any], targets: np.ndarray
) -> MapSource | None:
    """The earlier label set whose store of ``method`` shares the most targets with ``targets`` and
    was made with the same ``attrs`` (but for the label set); None without one or with reuse off."""
    if not ws.cfg.run.reuse or not method.row_separable:
        return None
    wanted = _identity(attrs)
    best: MapSource | None = None
    for other in earlier_label_sets(ws, label_set):
        path = ws.layout.maps(other, method.store_id)
        if not path.is_dir():
            continue
        try:
            store = MapStore.read_only(path)
            if store.ids != ws.images.ids or _identity(store.attrs) != wanted:
                continue
            theirs, _ = read_targets(ws.layout.diagnostics_csv, other, ws.images.ids)
            done = np.ones(len(ws.images), dtype=bool)
            done[store.pending()] = False
        except Exception as exc:  # an unreadable store is no source: the maps are computed instead
            log.warning("%s: not reused (%s)", path, exc)
            continue
        same = (np.asarray(theirs) == np.asarray(targets)) & done
        if same.any() and (best is None or same.sum() > best.same.sum()):
            best = MapSource(other, store, same)
    return best


def _identity(attrs: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in attrs.items() if k not in _RUN_ATTRS}, sort_keys=True)


@dataclasses.dataclass
class ScoreSource:
    """An earlier label set's per-image scores of one method and evaluation that a later one may copy."""

    label_set: str
    frame: pd.DataFrame
    """The earlier per-image CSV, indexed by image id."""
    curves: dict[str, np.ndarray]
    """Its per-image arrays (curves) by image id order of ``curve_ids``, if any."""
    curve_ids: dict[str, int]
    store: MapStore
    position: np.ndarray
    """Per image of the run: its row in ``store``."""
    same: np.ndarray
    """Per image of the run: the same target in both label sets."""

    def copyable(self, rows: np.ndarray, maps: np.ndarray, read) -> np.ndarray:
        """Boolean mask over ``rows`` (images of the run) whose ``maps`` are byte-identical to the
        earlier label set's (read with ``read(store, store_rows)``) for the same target."""
        mask = self.same[rows].copy()
        if mask.any():
            theirs = read(self.store, self.position[rows[mask]])
            mine = maps[mask]
            equal = (theirs.reshape(len(theirs), -1) == mine.reshape(len(mine), -1)).all(axis=1)
            mask[np.flatnonzero(mask)[~equal]] = False
        return mask

    def part(
        self, ids: list[str], copy: np.ndarray, columns: dict[str, np.ndarray], arrays: dict[str, np.ndarray]
    ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """One batch's per-image frame and arrays: the copied rows from the earlier label set, the others
        from ``columns``/``arrays`` (computed for the images ``ids[~copy]``, in order)."""
        computed = pd.DataFrame({"image_id": [i for i, c in zip(ids, copy) if not c], **columns})
        copied = self.frame.loc[[i for i, c in zip(ids, copy) if c]].reset_index()
        names = list(computed.columns) if len(computed) else list(copied.columns)
        frame = pd.concat([computed, copied[names]], ignore_index=True) if len(computed) else copied[names]
        order = {image_id: k for k, image_id in enumerate(frame["image_id"])}
        frame = frame.iloc[[order[i] for i in ids]].reset_index(drop=True)
        out = {}
        for name in self.curves if self.curves else arrays:
            rows = []
            it = iter(arrays.get(name, []))
            for image_id, c in zip(ids, copy):
                rows.append(self.curves[name][self.curve_ids[image_id]] if c else next(it))
            out[name] = np.stack(rows)
        return frame, out


def score_source(
    ws: Workspace,
    label_set: str,
    key: dict[str, Any],
    targets: np.ndarray,
    evaluation: Callable[[str], tuple[Path, Path | None, MapStore, np.ndarray]],
) -> ScoreSource | None:
    """The earlier label set whose finished evaluation of the same method was made from the same
    inputs as ``key`` but for the label set, its targets and its maps, sharing the most targets.

    Args:
        key: this label set's evaluation key (``{"key", "inputs"}``).
        targets: this label set's targets, per image of the run.
        evaluation: ``evaluation(label_set)`` -> (final per-image CSV, curves file or None when the
            kind writes no arrays, map store, store row per image) of the same method and kind in that
            label set.
    """
    if not ws.cfg.run.reuse:
        return None
    best: ScoreSource | None = None
    for other in earlier_label_sets(ws, label_set):
        try:
            final, curves, store, position = evaluation(other)
            sidecar = final.with_suffix(".json")
            if not (final.is_file() and sidecar.is_file()):
                continue
            recorded = json.loads(sidecar.read_text())
            if _score_identity(recorded) != _score_identity(key):
                continue
            frame = pd.read_csv(final, dtype={"image_id": str})
            if frame["image_id"].tolist() != ws.images.ids:
                continue
            theirs, _ = read_targets(ws.layout.diagnostics_csv, other, ws.images.ids)
            arrays, curve_ids = {}, {}
            if curves is not None and not curves.is_file():
                continue
            if curves is not None:
                with np.load(curves, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files if k != "image_ids"}
                    curve_ids = {str(i): k for k, i in enumerate(data["image_ids"])}
        except Exception as exc:  # an unreadable earlier output is no source: the scores are computed
            log.warning("%s: scores of %s not reused (%s)", label_set, other, exc)
            continue
        same = np.asarray(theirs) == np.asarray(targets)
        if same.any() and (best is None or same.sum() > best.same.sum()):
            best = ScoreSource(other, frame.set_index("image_id"), arrays, curve_ids, store, position, same)
    return best


def _score_identity(key: dict[str, Any]) -> str:
    inputs = {k: v for k, v in key["inputs"].items() if k not in ("label_set", "targets", "maps")}
    return json.dumps(inputs, sort_keys=True, default=str)


def reuse_summary(model_dir: Path) -> dict[str, Any]:
    """What reuse saved in one model's run: per label set, maps copied (with the model passes their
    computation took per image in the same store) and per-image scores copied per evaluation."""
    maps: dict[str, dict[str, Any]] = {}
    for path in sorted(model_dir.glob("maps/*/*.zarr")):
        try:
            last = MapStore.read_only(path).attrs.get("last_run") or {}
        except Exception:  # an unreadable store says nothing about reuse
            continue
        if not last.get("n_reused"):
            continue
        computed = max(int(last.get("n_computed", 0)), 1)
        per_image = (int(last.get("forward_rows", 0)) + int(last.get("backward_rows", 0))) / computed
        entry = maps.setdefault(path.parent.name, {"maps_reused": 0, "passes_saved": 0.0})
        entry["maps_reused"] += int(last["n_reused"])
        entry["passes_saved"] += round(int(last["n_reused"]) * per_image, 1)
    scores: dict[str, dict[str, int]] = {}
    for path in sorted(model_dir.glob("evaluation/*/*_manifest.json")):
        try:
            rows = json.loads(path.read_text()).get("reused_rows") or {}
        except (OSError, ValueError):
            continue
        if sum(rows.values()):
            kind = path.name.removesuffix("_manifest.json")
            scores.setdefault(path.parent.name, {})[kind] = int(sum(rows.values()))
    return {"maps": maps, "scores": scores}
