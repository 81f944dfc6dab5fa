"""Pivoting the tidy ``results.csv`` into presented (paper-unit) method x column frames.

``results.csv`` (read and validated by :func:`salbench.store.results.read_results`) is the report's
single input: one row per ``model, dataset, label_set, method, augmentation, variant, metric`` with the
value in natural units, the method's family and the metric's direction.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from salbench.report.presentation import COLUMNS, NO_AUGMENTATION, method_display
from salbench.stats import Bootstrap

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, order=True)
class RunKey:
    """One configuration a report section covers."""

    model: str
    dataset: str
    protocol: str

    @property
    def slug(self) -> str:
        return f"{self.model}__{self.dataset}__{self.protocol}"

    def describe(self) -> str:
        return f"{self.model} on {self.dataset} (protocol {self.protocol})"


def families(frame: pd.DataFrame) -> dict[str, str]:
    """Method -> family as recorded in ``results.csv`` (methods of older files without one are absent)."""
    if "family" not in frame:
        return {}
    known = frame[~frame["family"].isin(["", "unknown"])]
    return dict(zip(known["method"], known["family"]))


NOT_APPLICABLE = "not_applicable"
"""Metric id of generation's rows for methods that do not apply to the model (value 1)."""


def not_applicable(frame: pd.DataFrame) -> list[str]:
    """Methods the generation stage found not applicable to the model of these rows (value 1), sorted."""
    if frame.empty:
        return []
    rows = frame[(frame["metric"] == NOT_APPLICABLE) & (frame["value"] == 1)]
    return sorted(set(rows["method"].astype(str)))


def run_keys(frame: pd.DataFrame) -> list[RunKey]:
    """The distinct (model, dataset, protocol) configurations, sorted."""
    keys = frame[["model", "dataset", "protocol"]].drop_duplicates().itertuples(index=False)
    return sorted(RunKey(str(m), str(d), str(p)) for m, d, p in keys)


def select_run(frame: pd.DataFrame, key: RunKey) -> pd.DataFrame:
    """Rows of one configuration."""
    mask = (
        (frame["model"] == key.model)
        & (frame["dataset"] == key.dataset)
        & (frame["protocol"] == key.protocol)
    )
    return frame[mask]


def raw_higher_is_better(frame: pd.DataFrame, key: str) -> bool:
    """Direction of the raw metric behind column ``key``: from ``results.csv``, else the column default."""
    column = COLUMNS[key]
    stated = frame.loc[frame["metric"] == column.metric, "higher_is_better"].dropna()
    if stated.empty:
        return column.higher_is_better
    if stated.nunique() > 1:
        log.warning("metric %s: conflicting higher_is_better values; using the first", column.metric)
    return bool(stated.iloc[0])


def presented_higher_is_better(frame: pd.DataFrame, key: str) -> bool:
    """Direction of the presented column ``key`` (bars flip the raw direction)."""
    return COLUMNS[key].presented_higher_is_better(raw_higher_is_better(frame, key))


def presented(
    frame: pd.DataFrame,
    keys: Sequence[str],
    label_set: str,
    augmentation: str = NO_AUGMENTATION,
    variant: str | None = "none",
    field: str = "value",
) -> pd.DataFrame:
    """Method x column frame of presented values (x100, bars) for one slice of the results.

    Args:
        frame: rows of one configuration.
        keys: column keys of :data:`COLUMNS`.
        label_set: target label set.
        augmentation: ``none`` or an augmentation id.
        variant: the variant; None averages over every variant of ``augmentation`` (Table 4).
        field: the ``results.csv`` column presented (``value``, ``ci_low``, ``ci_high``); an interval's
            end is presented as a value is, so a bar's ``ci_low`` becomes the upper end.

    Returns:
        Float frame indexed by method id (unordered), one column per key; NaN where missing.
    """
    rows = frame[(frame["label_set"] == label_set) & (frame["augmentation"] == augmentation)]
    if variant is not None:
        rows = rows[rows["variant"] == variant]
    by_metric = {COLUMNS[k].metric: k for k in keys}
    rows = rows[rows["metric"].isin(list(by_metric))]
    if rows.empty:
        return pd.DataFrame({k: pd.Series(dtype=float) for k in keys}, index=pd.Index([], name="method"))
    wide = rows.pivot_table(index="method", columns="metric", values=field, aggfunc="mean", dropna=False)
    out = pd.DataFrame(index=pd.Index(wide.index.astype(str), name="method"))
    for metric, key in by_metric.items():
        raw = wide[metric] if metric in wide.columns else pd.Series(np.nan, index=wide.index)
        out[key] = [COLUMNS[key].present(float(v)) for v in raw.to_numpy()]
    return out[list(keys)]


def presented_intervals(
    frame: pd.DataFrame,
    keys: Sequence[str],
    label_set: str,
    augmentation: str = NO_AUGMENTATION,
    variant: str = "none",
) -> pd.DataFrame:
    """Method x ``<key>_ci_low, <key>_ci_high`` frame: each value's bootstrap interval in presented
    units (a bar flips the ends, so low <= high stays true); NaN where the row has no interval.

    Only one variant at a time: the mean over variants of Table 4 has no interval of its own.
    """
    if not {"ci_low", "ci_high"} <= set(frame.columns):
        frame = frame.assign(ci_low=np.nan, ci_high=np.nan)
    ends = [presented(frame, keys, label_set, augmentation, variant, f) for f in ("ci_low", "ci_high")]
    out = pd.DataFrame(index=ends[0].index)
    for key in keys:
        out[f"{key}_ci_low"] = np.fmin(ends[0][key], ends[1][key])
        out[f"{key}_ci_high"] = np.fmax(ends[0][key], ends[1][key])
    return out


def variant_counts(
    frame: pd.DataFrame, keys: Sequence[str], label_set: str, augmentation: str
) -> pd.DataFrame:
    """Method x column frame of how many variants contribute to each Table 4 mean."""
    rows = frame[(frame["label_set"] == label_set) & (frame["augmentation"] == augmentation)]
    by_metric = {COLUMNS[k].metric: k for k in keys}
    rows = rows[rows["metric"].isin(list(by_metric)) & rows["value"].notna()]
    counts = rows.groupby(["method", "metric"])["variant"].nunique().unstack("metric")
    return counts.rename(columns=by_metric).reindex(columns=list(keys)).fillna(0).astype(int)


def resampled_values(
    frame: pd.DataFrame, per_image: pd.DataFrame | None, settings: Bootstrap
) -> tuple[np.ndarray, np.ndarray, str]:
    """(B, rows) resampled ``value`` columns of ``frame``, the images behind each row, and how.

    Rows whose per-image values are in ``per_image`` (un-augmented recognition metrics) are resampled
    over images, the same image draws for every method of a label set (paired). Any other mean with a
    ``std`` and ``n_images`` is drawn from the normal approximation of its mean, independently per row.
    Rows that are no mean over images keep their value.
    """
    rng = np.random.default_rng(settings.seed)
    b = settings.resamples
    values = frame["value"].to_numpy(float)
    out = np.repeat(values[None, :], b, axis=0)
    n_rows = frame["n_images"].to_numpy(float) if "n_images" in frame else np.zeros(len(frame))
    paired = np.zeros(len(frame), dtype=bool)
    if per_image is not None and not per_image.empty:
        plain = (frame["augmentation"] == "none").to_numpy()
        for label_set, rows in per_image.groupby("label_set", sort=True):
            ids = np.array(sorted(rows["image_id"].astype(str).unique()))
            draws = rng.integers(0, len(ids), (b, len(ids)))
            # each method's rows aligned to ``ids`` once, not once per results row
            by_method = {
                str(m): g.set_index(g["image_id"].astype(str)).reindex(ids) for m, g in rows.groupby("method")
            }
            for i in np.flatnonzero(plain & (frame["label_set"] == label_set).to_numpy()):
                metric, mine = frame["metric"].iat[i], by_method.get(str(frame["method"].iat[i]))
                if mine is None or metric not in mine:
                    continue
                v = mine[metric].to_numpy(float)
                finite = np.isfinite(v)
                # only values this file reproduces (a NaN map is skipped there and here alike)
                if not finite.any() or not np.isclose(v[finite].mean(), values[i], rtol=1e-6, atol=1e-9):
                    continue
                taken = v[draws]
                counts = np.isfinite(taken).sum(axis=1)
                sums = np.where(np.isfinite(taken), taken, 0.0).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[:, i] = np.where(counts > 0, sums / np.maximum(counts, 1), values[i])
                paired[i] = True
    std = frame["std"].to_numpy(float) if "std" in frame else np.full(len(frame), np.nan)
    normal = ~paired & np.isfinite(std) & np.isfinite(values) & (n_rows > 1)
    z = rng.standard_normal((b, int(normal.sum())))
    out[:, normal] = values[normal] + z * (std[normal] / np.sqrt(n_rows[normal]))
    how = []
    if paired.any():
        how.append("paired bootstrap over images (the same draws for every method of a label set)")
    if normal.any():
        how.append("normal approximation of the other means (std / sqrt(n), independent per row)")
    return out, n_rows, " and ".join(how)


class ResultsView:
    """The presented slices of one configuration's rows, re-evaluated cheaply for other values.

    ``presented(keys, label_set, augmentation, variant)`` equals
    :func:`~salbench.report.results.presented` on the rows; which rows make each cell is found once,
    so :meth:`with_values` (a resample of the ``value`` column, same rows) costs a gather, not a pivot.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.values = frame["value"].to_numpy(float) if "value" in frame else np.zeros(len(frame))
        self._slices: dict[tuple, tuple[pd.Index, np.ndarray]] = {}
        self._directions: dict[str, bool] = {}
        self._cache: dict[str, Any] = {}

    def with_values(self, values: np.ndarray) -> ResultsView:
        """The same rows with ``value`` replaced (shares the slice index)."""
        view = copy.copy(self)
        view.values = np.asarray(values, dtype=float)
        return view

    def _slice(self, keys: tuple[str, ...], label_set: str, augmentation: str, variant: str | None):
        key = (keys, label_set, augmentation, variant)
        if key not in self._slices:
            f = self.frame
            mask = (f["label_set"] == label_set) & (f["augmentation"] == augmentation)
            if variant is not None:
                mask &= f["variant"] == variant
            metrics = [COLUMNS[k].metric for k in keys]
            mask &= f["metric"].isin(metrics)
            rows = np.flatnonzero(mask.to_numpy())
            methods = pd.Index(sorted(f["method"].iloc[rows].astype(str).unique()), name="method")
            cells: list[list[int]] = [[] for _ in range(len(methods) * len(keys))]
            where = {m: i for i, m in enumerate(methods)}
            for r in rows:
                m, metric = str(f["method"].iat[r]), f["metric"].iat[r]
                for j, k in enumerate(keys):
                    if COLUMNS[k].metric == metric:
                        cells[where[m] * len(keys) + j].append(int(r))
            width = max((len(c) for c in cells), default=0)
            positions = np.full((len(cells), max(width, 1)), -1, dtype=np.int64)
            for i, c in enumerate(cells):
                positions[i, : len(c)] = c
            self._slices[key] = (methods, positions)
        return self._slices[key]

    def presented(
        self,
        keys: Sequence[str],
        label_set: str,
        augmentation: str = NO_AUGMENTATION,
        variant: str | None = "none",
    ) -> pd.DataFrame:
        """Method x column frame of presented values, as :func:`~salbench.report.results.presented`."""
        methods, out = self.presented_array(keys, label_set, augmentation, variant)
        return pd.DataFrame(out, index=methods, columns=list(keys))

    def presented_array(
        self,
        keys: Sequence[str],
        label_set: str,
        augmentation: str = NO_AUGMENTATION,
        variant: str | None = "none",
    ) -> tuple[pd.Index, np.ndarray]:
        """:meth:`presented` as (methods, (methods, keys) array): no frame built (resampling loops)."""
        keys = tuple(keys)
        methods, positions = self._slice(keys, label_set, augmentation, variant)
        taken = np.where(positions >= 0, self.values[np.maximum(positions, 0)], np.nan)
        present = np.isfinite(taken)
        counts = present.sum(axis=1)
        raw = np.where(present, taken, 0.0).sum(axis=1) / np.maximum(counts, 1)
        raw = np.where(counts > 0, raw, np.nan).reshape(len(methods), len(keys))
        out = np.empty_like(raw)
        for j, k in enumerate(keys):
            c = COLUMNS[k]
            out[:, j] = 100.0 - raw[:, j] * c.scale if c.bar else raw[:, j] * c.scale
        return methods, out

    def cached(self, name: str, compute):
        """``compute()`` once per view and its resamples (a value of the rows, not of ``value``)."""
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    def higher_is_better(self, key: str) -> bool:
        """Direction of the presented column ``key``."""
        if key not in self._directions:
            self._directions[key] = presented_higher_is_better(self.frame, key)
        return self._directions[key]


def rows_of_model(
    frame: pd.DataFrame | None, model: str, label_set: str | None = "groundtruth"
) -> pd.DataFrame | None:
    """Rows of ``model`` (and ``label_set``) when the frame has those columns; None when nothing is left."""
    if frame is None:
        return None
    if "model" in frame.columns:
        frame = frame[frame["model"] == model]
    if label_set is not None and "label_set" in frame.columns:
        frame = frame[frame["label_set"] == label_set]
    return frame if not frame.empty else None


@functools.lru_cache(maxsize=64)
def compared_mask(methods: tuple[str, ...]) -> np.ndarray:
    """Which of ``methods`` the claims compare (the same few method lists, resampled 1,000 times)."""
    return np.array([method_display(m).compared for m in methods], dtype=bool)


def common_rows(methods: pd.Index, base: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``methods`` and in ``base`` of the compared methods both have (in ``methods`` order)."""
    kept = methods[compared_mask(tuple(methods))]
    common = kept[kept.isin(base[compared_mask(tuple(base))])]
    return methods.get_indexer(common), base.get_indexer(common)
