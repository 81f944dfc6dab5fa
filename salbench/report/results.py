"""Reading the tidy ``results.csv`` and pivoting it into presented (paper-unit) method x column frames.

``results.csv`` is the report's single numeric input (STYLE.md point 7): one row per
``model, dataset, label_set, method, augmentation, variant, metric`` with the value in natural units.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from salbench.errors import DataError
from salbench.report.presentation import COLUMNS, METRIC_ALIASES, NO_AUGMENTATION
from salbench.store.results import KEY_COLUMNS, RESULT_COLUMNS

log = logging.getLogger(__name__)

_NUMERIC = ("value", "n_images", "n_skipped")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


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


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    text = frame[column].str.strip()
    values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce")
    bad = values.isna() & ~text.str.lower().isin(["", "nan", "na"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}:{i + 2}: column {column!r} is not a number: {frame[column].iloc[i]!r}")
    return values.astype(float)


def _boolean(frame: pd.DataFrame, path: Path) -> pd.Series:
    text = frame["higher_is_better"].str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE | {""})
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}:{i + 2}: column 'higher_is_better' must be true/false, got {text.iloc[i]!r}")
    return text.map(lambda t: True if t in _TRUE else (False if t in _FALSE else None)).astype(object)


def load_results(path: str | Path) -> pd.DataFrame:
    """Read and validate ``results.csv``.

    Args:
        path: the tidy long-format CSV (columns :data:`RESULT_COLUMNS`).

    Returns:
        The rows with ``value``, ``n_images``, ``n_skipped`` as floats, ``higher_is_better`` as
        True/False/None, empty ``variant`` as ``""`` and empty ``augmentation`` as ``"none"``.

    Raises:
        DataError: missing file or column, non-numeric value, or two rows for the same key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"results file {str(path)!r} not found (run the evaluation stages first)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    frame = frame[list(RESULT_COLUMNS)].copy()
    for column in (
        "model",
        "dataset",
        "label_set",
        "method",
        "augmentation",
        "variant",
        "metric",
        "protocol",
    ):
        frame[column] = frame[column].astype(str).str.strip()
    for column in _NUMERIC:
        frame[column] = _numeric(frame, column, path)
    frame["higher_is_better"] = _boolean(frame, path)
    frame["augmentation"] = frame["augmentation"].where(frame["augmentation"] != "", NO_AUGMENTATION)
    frame["metric"] = frame["metric"].replace(METRIC_ALIASES)
    dup = frame.duplicated(list(KEY_COLUMNS), keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        key = ", ".join(f"{c}={frame[c].iloc[i]!r}" for c in KEY_COLUMNS)
        raise DataError(f"{path}:{i + 2}: a second row for the same result ({key})")
    return frame.reset_index(drop=True)


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
    variant: str | None = "",
) -> pd.DataFrame:
    """Method x column frame of presented values (x100, bars) for one slice of the results.

    Args:
        frame: rows of one configuration.
        keys: column keys of :data:`COLUMNS`.
        label_set: target label set.
        augmentation: ``none`` or an augmentation id.
        variant: the variant; None averages over every variant of ``augmentation`` (Table 4).

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
    wide = rows.pivot_table(index="method", columns="metric", values="value", aggfunc="mean", dropna=False)
    out = pd.DataFrame(index=pd.Index(wide.index.astype(str), name="method"))
    for metric, key in by_metric.items():
        raw = wide[metric] if metric in wide.columns else pd.Series(np.nan, index=wide.index)
        out[key] = [COLUMNS[key].present(float(v)) for v in raw.to_numpy()]
    return out[list(keys)]


def variant_counts(
    frame: pd.DataFrame, keys: Sequence[str], label_set: str, augmentation: str
) -> pd.DataFrame:
    """Method x column frame of how many variants contribute to each Table 4 mean."""
    rows = frame[(frame["label_set"] == label_set) & (frame["augmentation"] == augmentation)]
    by_metric = {COLUMNS[k].metric: k for k in keys}
    rows = rows[rows["metric"].isin(list(by_metric)) & rows["value"].notna()]
    counts = rows.groupby(["method", "metric"])["variant"].nunique().unstack("metric")
    return counts.rename(columns=by_metric).reindex(columns=list(keys)).fillna(0).astype(int)
