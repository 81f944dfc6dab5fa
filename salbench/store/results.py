"""The tidy long-format ``results.csv``: the only source the report's tables are built from.

One row per (model, dataset, label set, method, augmentation, variant, metric, protocol); values in
natural units (fractions, not x100). Stages upsert their rows: a rerun replaces its own rows and keeps
everyone else's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from salbench.store.outputs import write_csv

RESULT_COLUMNS = [
    "model",
    "dataset",
    "label_set",
    "method",
    "augmentation",
    "variant",
    "metric",
    "value",
    "n_images",
    "n_skipped",
    "higher_is_better",
    "protocol",
]
KEY_COLUMNS = ["model", "dataset", "label_set", "method", "augmentation", "variant", "metric", "protocol"]


def read_results(path: str | Path) -> pd.DataFrame:
    """Load ``results.csv`` (empty frame with the schema when it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return pd.read_csv(p, dtype={"variant": str, "augmentation": str}, keep_default_na=False, na_values=[""])


def upsert_results(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Replace rows with the same key and append new ones; atomic rewrite. Returns the whole table."""
    new = pd.DataFrame(list(rows), columns=RESULT_COLUMNS)
    if new.empty:
        return read_results(path)
    new["variant"] = new["variant"].fillna("").astype(str)
    old = read_results(path)
    if not old.empty:
        old["variant"] = old["variant"].fillna("").astype(str)
        keys = set(map(tuple, new[KEY_COLUMNS].astype(str).to_numpy()))
        keep = [tuple(r) not in keys for r in old[KEY_COLUMNS].astype(str).to_numpy()]
        merged = pd.concat([old[keep], new], ignore_index=True)
    else:
        merged = new
    merged = merged.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    write_csv(path, merged)
    return merged
