"""The tidy long-format ``results.csv``: the only source the report is built from.

One row per (model, dataset, label set, method, augmentation, variant, metric, protocol); values in
natural units (fractions, not x100). Besides the key and the value a row carries what the report needs
to present it without asking any other part of the package: the method's ``family`` (table group,
``Uninformed``/``Control`` for the model-free controls), the randomisation ``level`` of a sanity-check
variant (1 = output layer; 0 where no level applies), ``n_images`` averaged, ``n_skipped`` and the
metric's ``higher_is_better``, and what produced it: ``checkpoint``, the first 12 hex digits of the
SHA-256 of the model's weights, and ``inputs``, the digest of everything that decided the value (maps,
images, model, parameters, protocol), recorded beside the per-image files. A value that is a mean over
images also carries the standard deviation of its per-image values (``std``) and a bootstrap interval of
the mean (``ci_low``, ``ci_high`` at ``ci_level``; :mod:`salbench.stats`), and an indicator metric
(average increase, IIC) the count of images whose two probabilities were within its tie tolerance
(``n_ties``); these are empty where they do not apply (accuracies of a re-trained model, published
numbers). Stages upsert their rows: a rerun replaces its own rows and keeps everyone else's. Files
written before a column existed are read with its :data:`DEFAULTS` value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from salbench.errors import DataError
from salbench.store.outputs import file_lock, write_csv

RESULT_COLUMNS = [
    "model",
    "dataset",
    "label_set",
    "method",
    "family",
    "augmentation",
    "variant",
    "level",
    "metric",
    "value",
    "n_images",
    "n_skipped",
    "higher_is_better",
    "protocol",
    "checkpoint",
    "inputs",
    "precision",
    "std",
    "ci_low",
    "ci_high",
    "ci_level",
    "n_ties",
]
KEY_COLUMNS = ["model", "dataset", "label_set", "method", "augmentation", "variant", "metric", "protocol"]
DEFAULTS = {
    "family": "unknown",
    "level": 0,
    "augmentation": "none",
    "variant": "none",
    "checkpoint": "unknown",
    "inputs": "unknown",
    "precision": "fp32",
    "std": math.nan,
    "ci_low": math.nan,
    "ci_high": math.nan,
    "ci_level": math.nan,
    "n_ties": math.nan,
}
"""Values of columns an older or hand-written file may lack (or leave empty)."""
UNCERTAINTY_COLUMNS = ("std", "ci_low", "ci_high", "ci_level", "n_ties")
"""Optional numbers: NaN (an empty cell) where they do not apply."""
NO_VARIANT = "none"
"""``variant`` of a row that is no variant of anything (un-augmented images, a mean over the ROAR
fractions): a word, so a bare ``pd.read_csv`` reads no NaN (files that left it empty read as this)."""
METRIC_ALIASES = {"completeness": "completeness_gap"}
"""Metric ids an earlier writer used for the same quantity."""
_TEXT = (
    "model",
    "dataset",
    "label_set",
    "method",
    "family",
    "augmentation",
    "variant",
    "metric",
    "protocol",
    "checkpoint",
    "inputs",
)
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _bad(path: Path, row: int, message: str) -> DataError:
    return DataError(f"{path}:{row + 2}: {message}")


def _numbers(frame: pd.DataFrame, column: str, path: Path, integer: bool = False) -> pd.Series:
    text = frame[column].str.strip()
    values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce")
    bad = values.isna() & ~text.str.lower().isin(["", "nan", "na"])
    if integer:
        bad |= values.isna() | (values != values.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        what = "a whole number" if integer else "a number"
        raise _bad(path, i, f"column {column!r} is not {what}: {frame[column].iloc[i]!r}")
    return values.astype(np.int64) if integer else values.astype(float)


def _booleans(frame: pd.DataFrame, path: Path) -> pd.Series:
    text = frame["higher_is_better"].str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE | {""})
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _bad(path, i, f"column 'higher_is_better' must be true/false, got {text.iloc[i]!r}")
    return text.map(lambda t: True if t in _TRUE else (False if t in _FALSE else None)).astype(object)


def read_results(path: str | Path, missing_ok: bool = True) -> pd.DataFrame:
    """Read and validate ``results.csv``.

    Args:
        path: the tidy long-format CSV.
        missing_ok: a missing file is an empty table (else a :class:`DataError`).

    Returns:
        Columns :data:`RESULT_COLUMNS`: ``value`` and :data:`UNCERTAINTY_COLUMNS` float (NaN where
        empty), ``n_images``/``n_skipped``/``level`` int, ``higher_is_better`` True/False/None, text
        columns stripped (defaults of :data:`DEFAULTS` where absent or empty), earlier metric ids
        renamed (:data:`METRIC_ALIASES`).

    Raises:
        DataError: unreadable file, a missing required column, a malformed value or two rows for the
            same key, naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        raise DataError(f"results file {str(path)!r} not found (run the evaluation stages first)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns and c not in DEFAULTS]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    for column, default in DEFAULTS.items():
        if column not in frame.columns:
            frame[column] = str(default)
    frame = frame[list(RESULT_COLUMNS)].copy()
    for column in _TEXT:
        frame[column] = frame[column].astype(str).str.strip()
        if column in DEFAULTS:
            frame[column] = frame[column].where(frame[column] != "", str(DEFAULTS[column]))
    for column in ("value", *UNCERTAINTY_COLUMNS):
        frame[column] = _numbers(frame, column, path)
    for column in ("n_images", "n_skipped", "level"):
        frame[column] = _numbers(frame, column, path, integer=True)
    frame["higher_is_better"] = _booleans(frame, path)
    frame["metric"] = frame["metric"].replace(METRIC_ALIASES)
    dup = frame.duplicated(list(KEY_COLUMNS), keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        key = ", ".join(f"{c}={frame[c].iloc[i]!r}" for c in KEY_COLUMNS)
        raise _bad(path, i, f"a second row for the same result ({key})")
    return frame.reset_index(drop=True)


def upsert_results(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Replace rows with the same key and append new ones; atomic rewrite. Returns the whole table.

    Rows may omit the columns of :data:`DEFAULTS`; the file is checked before it is changed, and the
    read-modify-write cycle holds a lock (``results.csv.lock``), so concurrent stages lose no rows.
    """
    new = pd.DataFrame([{**DEFAULTS, **r} for r in rows], columns=RESULT_COLUMNS)
    path = Path(path)
    with file_lock(path.with_name(path.name + ".lock")):
        return _upsert(path, new)


def _upsert(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    old = read_results(path)
    if new.empty:
        return old
    new["variant"] = new["variant"].fillna(NO_VARIANT).replace("", NO_VARIANT).astype(str)
    if not old.empty:
        keys = set(map(tuple, new[KEY_COLUMNS].astype(str).to_numpy()))
        keep = [tuple(r) not in keys for r in old[KEY_COLUMNS].astype(str).to_numpy()]
        merged = pd.concat([old[keep], new], ignore_index=True)
    else:
        merged = new
    merged = merged.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    merged["n_ties"] = pd.to_numeric(merged["n_ties"]).round().astype("Int64")  # a count, "" where none
    write_csv(path, merged)
    return merged
