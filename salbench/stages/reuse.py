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
    """Its per-image arrays (curves) with their ``image_ids``; empty when the kind writes none."""
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
        ids_arr = np.asarray(ids, dtype=object)
        copied = self.frame.loc[list(ids_arr[copy])].reset_index()
        computed = pd.DataFrame({"image_id": list(ids_arr[~copy]), **columns})
        parts = [f for f in (computed, copied) if len(f)]
        frame = pd.concat(parts, ignore_index=True)[list(parts[0].columns)]
        frame = frame.set_index("image_id").loc[list(ids)].reset_index()
        out = {}
        if self.curves:
            at = {str(i): k for k, i in enumerate(self.curves["image_ids"])}
            taken = [at[i] for i in ids_arr[copy]]
            for name, values in self.curves.items():
                if name == "image_ids":
                    continue
                rows = np.empty((len(ids), *values.shape[1:]), dtype=values.dtype)
                rows[copy] = values[taken]
                if (~copy).any():
                    rows[~copy] = arrays[name]
                out[name] = rows
        return frame, out


def score_source(
    ws: Workspace,
    label_set: str,
    targets: np.ndarray,
    evaluation: Callable[[str], tuple[bool, Path, Path | None, MapStore, np.ndarray, np.ndarray]],
) -> ScoreSource | None:
    """The earlier label set whose finished evaluation of the same method shares the most targets.

    Args:
        targets: this label set's targets, per image of the run.
        evaluation: ``evaluation(label_set)`` -> (its output is complete for its current inputs, the
            per-image CSV, the curves file or None when the kind writes no arrays, the map store, the
            store row per image, its targets) of the same method and kind in that label set.
    """
    if not ws.cfg.run.reuse:
        return None
    best: ScoreSource | None = None
    for other in earlier_label_sets(ws, label_set):
        try:
            done, final, curves, store, position, theirs = evaluation(other)
            if not done or (curves is not None and not curves.is_file()):
                continue
            same = np.asarray(theirs) == np.asarray(targets)
            if not same.any() or (best is not None and same.sum() <= best.same.sum()):
                continue
            frame = pd.read_csv(final, dtype={"image_id": str}).set_index("image_id")
            arrays: dict[str, np.ndarray] = {}
            if curves is not None:
                with np.load(curves, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # an unreadable earlier output is no source: the scores are computed
            log.warning("%s: scores of %s not reused (%s)", label_set, other, exc)
            continue
        best = ScoreSource(other, frame, arrays, store, position, same)
    return best


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
