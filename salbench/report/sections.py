"""Building blocks of the report's Markdown sections: labels, families, presented columns, files."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from salbench.report.presentation import (
    CONTROL_FAMILIES,
    LABEL_SET_LONG,
    LABEL_SETS,
    MetricColumn,
    method_display,
)
from salbench.report.render import to_csv, to_latex, to_markdown
from salbench.report.tables import Column, Table
from salbench.store.outputs import write_text

log = logging.getLogger(__name__)


ARROWS = {True: ("↑", r"$\uparrow$"), False: ("↓", r"$\downarrow$")}


def label_sets_of(rows: pd.DataFrame) -> list[str]:
    """Label sets of ``rows``: the paper's order, then any other id."""
    present = set(rows["label_set"])
    return [s for s in LABEL_SETS if s in present] + sorted(present - set(LABEL_SETS))


def family_of(method: str, rows: pd.DataFrame) -> str:
    """The method's family as ``results.csv`` records it (the paper's table for files without one)."""
    recorded = rows.loc[rows["method"] == method, "family"] if "family" in rows else pd.Series(dtype=str)
    known = [f for f in recorded if f not in ("", "unknown")]
    return known[0] if known else method_display(method).family


def controls(rows: pd.DataFrame) -> set[str]:
    """The model-free controls among ``rows``' methods (family ``Uninformed`` or ``Control``)."""
    return {m for m in set(rows["method"]) if family_of(m, rows) in CONTROL_FAMILIES}


def long_label(label_set: str) -> str:
    return LABEL_SET_LONG.get(label_set, label_set).lower()


def direction(rows: pd.DataFrame, metric: str, default: bool) -> bool:
    stated = rows.loc[rows["metric"] == metric, "higher_is_better"].dropna()
    return bool(stated.iloc[0]) if len(stated) else default


def metric_column(
    rows: pd.DataFrame, spec: MetricColumn, key: str = "", prefix: str = "", group: str = ""
) -> Column:
    up = direction(rows, spec.metric, spec.higher_is_better)
    md, tex = ARROWS[up]
    return Column(
        key or spec.key,
        f"{prefix}{spec.header} {md}",
        f"{spec.latex} {tex}",
        spec.decimals,
        up,
        spec.metric,
        group,
        group,
    )


def wide(rows: pd.DataFrame, specs: Sequence[MetricColumn], variant: str | None = None) -> pd.DataFrame:
    """Method x spec.key frame of presented values (one variant, or the rows as they are)."""
    if variant is not None:
        rows = rows[rows["variant"] == variant]
    out = pd.DataFrame(index=pd.Index(sorted(set(rows["method"])), name="method"))
    for spec in specs:
        raw = rows[rows["metric"] == spec.metric].groupby("method")["value"].mean()
        out[spec.key] = raw.reindex(out.index).map(spec.present)
    return out


def method_ids(methods: Sequence[str], rows: pd.DataFrame, control_mark: bool = False) -> pd.DataFrame:
    marked = controls(rows) if control_mark else set()

    def label(m: str) -> str:
        return f"{method_display(m).label} (control)" if m in marked else method_display(m).label

    return pd.DataFrame(
        {
            "family": [family_of(m, rows) for m in methods],
            "method": list(methods),
            "label": [label(m) for m in methods],
        }
    )


def table_lines(table: Table, out: Path, sub: str) -> list[str]:
    """Write ``table`` as CSV, Markdown, LaTeX under ``out/tables/sub``; its Markdown, notes, file links."""
    folder = out / "tables" / sub
    for ext, render in (("csv", to_csv), ("md", to_markdown), ("tex", to_latex)):
        write_text(folder / f"{table.name}.{ext}", render(table))
    rel = "/".join(p for p in ("tables", sub, table.name) if p)
    notes = [f"*Notes:* {'; '.join(table.notes)}.", ""] if table.notes else []
    return [
        to_markdown(table),
        *notes,
        f"Files: [CSV]({rel}.csv), [Markdown]({rel}.md), [LaTeX]({rel}.tex)",
        "",
    ]


def figure_lines(make: Callable[[Path], Path], out: Path, sub: str, name: str, caption: str) -> list[str]:
    rel = "/".join(p for p in ("figures", sub) if p)
    make(out / rel / f"{name}.png")
    return [f"![{caption}]({rel}/{name}.png)", "", f"*{caption}*", ""]


def method_names(methods: Sequence[str]) -> str:
    return ", ".join(method_display(m).label for m in methods) or "none"
