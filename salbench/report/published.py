"""The published numbers of Zhang et al. (ACML 2024), Tables 1-4, and their comparison with a run.

``configs/acml2024_tables.csv`` holds them as printed (ResNet50 on the ImageNet validation set, 50k
images; Table 4 on the 1,000-image subset): AD_bar = 100 - AD and D_bar = 100 - D, values x100 except
Monotonicity, MS, AS, Complexity, EC. The paper prints Fake-CAM / Resize AD_bar 2.0 and AG 90.5; next
to every other augmentation (AD_bar ~ 97, AG ~ 1) these look swapped. They are shown as printed and
flagged (:data:`SUSPECT`), never silently corrected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from salbench.config import CONFIG_DIR
from salbench.errors import DataError
from salbench.report.presentation import (
    AUGMENTATION_LABELS,
    COLUMNS,
    LABEL_SET_SHORT,
    NO_AUGMENTATION,
    method_display,
    method_order,
)
from salbench.report.results import RunKey
from salbench.report.tables import Table

PUBLISHED_CSV = CONFIG_DIR / "acml2024_tables.csv"
STUDY = RunKey(model="resnet50", dataset="imagenet", protocol="acml2024")
_PUBLISHED_COLUMNS = (
    "table",
    "method",
    "method_label",
    "family",
    "label_set",
    "augmentation",
    "metric",
    "value",
)
# (table, method, augmentation, metric) of the printed values that look swapped with each other.
SUSPECT = {("table4", "fakecam", "resize", "AD_bar"), ("table4", "fakecam", "resize", "AG")}
SUSPECT_NOTE = (
    "the paper prints Fake-CAM / Resize AD-bar 2.0 and AG 90.5; next to the other augmentations they look "
    "swapped (AD-bar ~ 90.5, AG ~ 2.0); shown as printed"
)


def is_study_configuration(key: RunKey) -> bool:
    """True for the study's own setting: ResNet50 on ImageNet under the ``acml2024`` protocol."""
    return key == STUDY


def load_published(path: str | Path = PUBLISHED_CSV) -> pd.DataFrame:
    """The published numbers as printed (columns ``table, method, ..., metric, value``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"published tables {str(path)!r} not found")
    frame = pd.read_csv(path, dtype={"value": float}, keep_default_na=False)
    missing = [c for c in _PUBLISHED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    unknown = sorted(set(frame["metric"]) - set(COLUMNS))
    if unknown:
        raise DataError(f"{path}: unknown metric column(s) {', '.join(unknown)}")
    return frame


def published_as_results(published: pd.DataFrame) -> pd.DataFrame:
    """The published numbers converted back to ``results.csv`` rows (natural units).

    Tables 1 and 3 give the ground-truth rows, Table 2 the predicted and least-likely rows and Table 4
    the augmented rows (variant ``mean``: the paper prints only the mean over variants). Used to check
    the claims on the paper's own numbers.
    """
    keep = (
        published["table"].isin(["table1", "table3"])
        | ((published["table"] == "table2") & (published["label_set"] != "groundtruth"))
        | (published["table"] == "table4")
    )
    rows = published[keep]
    specs = [COLUMNS[k] for k in rows["metric"]]
    return pd.DataFrame(
        {
            "model": STUDY.model,
            "dataset": STUDY.dataset,
            "label_set": rows["label_set"].to_numpy(),
            "method": rows["method"].to_numpy(),
            "augmentation": rows["augmentation"].to_numpy(),
            "variant": np.where(rows["augmentation"] == "none", "none", "mean"),
            "metric": [s.metric for s in specs],
            "value": [s.unpresent(float(v)) for s, v in zip(specs, rows["value"])],
            "n_images": np.where(rows["table"] == "table4", 1000.0, 50000.0),
            "n_skipped": 0.0,
            "higher_is_better": [s.higher_is_better for s in specs],
            "protocol": STUDY.protocol,
        }
    )


def _our_cells(table: Table) -> dict[tuple[str, str, str, str], float]:
    """(published method, label_set, augmentation, metric) -> our printed value."""
    shown = table.shown()
    cells: dict[tuple[str, str, str, str], float] = {}
    for i, row in table.rows.iterrows():
        published = method_display(row["method"]).published
        if published is None:
            continue
        for c in table.columns:
            label_set = c.group if table.name == "table2" else "groundtruth"
            augmentation = c.group if table.name == "table4" else NO_AUGMENTATION
            cells.setdefault((published, label_set, augmentation, c.metric), float(shown.at[i, c.key]))
    return cells


def compare(tables: dict[str, Table | None], published: pd.DataFrame) -> pd.DataFrame:
    """Long frame of ours vs published for every published cell of Tables 1-4.

    Returns:
        Columns ``table, method, label, label_set, augmentation, metric, ours, published, difference,
        flag``; ``ours`` is the printed (rounded) value, NaN where the run lacks the cell;
        ``difference = ours - published``; ``flag`` names suspect published values.
    """
    records = []
    for name in ("table1", "table2", "table3", "table4"):
        table = tables.get(name)
        ours = _our_cells(table) if table is not None else {}
        for row in published[published["table"] == name].itertuples(index=False):
            mine = ours.get((row.method, row.label_set, row.augmentation, row.metric), np.nan)
            decimals = COLUMNS[row.metric].decimals
            diff = round(mine - row.value, decimals) if np.isfinite(mine) else np.nan
            suspect = (name, row.method, row.augmentation, row.metric) in SUSPECT
            records.append(
                {
                    "table": name,
                    "method": row.method,
                    "label": row.method_label,
                    "label_set": row.label_set,
                    "augmentation": row.augmentation,
                    "metric": row.metric,
                    "ours": mine,
                    "published": float(row.value),
                    "difference": 0.0 if diff == 0 else diff,
                    "flag": "suspect: looks swapped with AG/AD_bar" if suspect else "",
                }
            )
    return pd.DataFrame.from_records(records)


def _cell(row: pd.Series) -> str:
    decimals = COLUMNS[row["metric"]].decimals
    paper = f"{row['published']:.{decimals}f}" + ("†" if row["flag"] else "")
    if not np.isfinite(row["ours"]):
        return f"n/a / {paper}"
    return f"{row['ours']:.{decimals}f} / {paper} ({row['difference']:+.{decimals}f})"


def comparison_markdown(comparison: pd.DataFrame, table: str) -> str:
    """Markdown side by side for one table: cells ``ours / paper (ours - paper)``; † marks suspect values."""
    part = comparison[comparison["table"] == table]
    if part.empty:
        return ""
    group = {"table2": "label_set", "table4": "augmentation"}.get(table)
    keys = list(dict.fromkeys(zip(part[group] if group else [""] * len(part), part["metric"])))
    names = {"table2": LABEL_SET_SHORT, "table4": AUGMENTATION_LABELS}.get(table, {})
    header = ["Method"] + [f"{names.get(g, g)} {COLUMNS[m].header}".strip() for g, m in keys]
    lines = ["| " + " | ".join(header) + " |", "|:--|" + "--:|" * len(keys)]
    cells = {(r["method"], r[group] if group else "", r["metric"]): _cell(r) for _, r in part.iterrows()}
    for method in method_order(list(dict.fromkeys(part["method"]))):
        row = [method_display(method).label] + [cells.get((method, g, m), "") for g, m in keys]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
