"""Render a :class:`~salbench.report.tables.Table` as CSV, Markdown or LaTeX (booktabs).

All three print the same rounded numbers; Markdown and LaTeX mark the best value of each column in
bold (direction from ``higher_is_better``, bars already flipped), follow a value with its bootstrap
interval ``[low, high]`` where it has one, and show missing values as ``n/a`` resp. ``--``; the CSV
leaves them empty and keeps one number per cell (the published tables' layout), the intervals go to a
second CSV (:func:`to_ci_csv`).
"""

from __future__ import annotations

import csv
import io
import itertools
import math

from salbench.report.tables import Table

MISSING_MD = "n/a"
MISSING_TEX = "--"
_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def to_csv(table: Table) -> str:
    """CSV text: the identifier columns, then the printed numbers (no bold, empty when missing)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*table.ids, *(c.key for c in table.columns)])
    for _, row in table.rows.iterrows():
        writer.writerow([*(row[i] for i in table.ids), *(c.format(row[c.key]) for c in table.columns)])
    return buf.getvalue()


def to_ci_csv(table: Table) -> str:
    """CSV text of the numbers with their intervals: each column ``KEY`` followed by ``KEY_ci_low`` and
    ``KEY_ci_high`` (presented units, rounded as printed; empty where there is no interval)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [*table.ids, *(f"{c.key}{s}" for c in table.columns for s in ("", "_ci_low", "_ci_high"))]
    )
    for i, row in table.rows.iterrows():
        cells = []
        for c in table.columns:
            ends = table.interval(i, c) or (math.nan, math.nan)
            cells += [c.format(row[c.key]), c.format(ends[0]), c.format(ends[1])]
        writer.writerow([*(row[k] for k in table.ids), *cells])
    return buf.getvalue()


CI_NOTE = "[low, high]: percentile bootstrap interval of the mean over images (level: results.csv ci_level)"
"""The note under a table whose cells show intervals."""


def _display_cells(table: Table) -> list[list[str]]:
    """Identifier cells per row, the first one blanked where it repeats the row above (row groups)."""
    out = []
    previous = None
    for _, row in table.rows.iterrows():
        cells = [str(row[col]) for col, _ in table.display]
        first = cells[0]
        if first == previous:
            cells[0] = ""
        previous = first
        out.append(cells)
    return out


def _number_cells(table: Table, missing: str, bold: str) -> list[list[str]]:
    best = table.best()
    out = []
    for i, row in table.rows.iterrows():
        cells = []
        for c in table.columns:
            text = c.format(row[c.key])
            if not text:
                cells.append(missing)
                continue
            text = bold.format(text) if best.at[i, c.key] else text
            ends = table.interval(i, c)
            cells.append(text if ends is None else f"{text} [{c.format(ends[0])}, {c.format(ends[1])}]")
        out.append(cells)
    return out


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table (no caption); best value per column in ``**bold**``."""
    header = [h for _, h in table.display] + [c.header for c in table.columns]
    align = [":--"] * len(table.display) + ["--:"] * len(table.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for ids, numbers in zip(_display_cells(table), _number_cells(table, MISSING_MD, "**{}**")):
        lines.append("| " + " | ".join(ids + numbers) + " |")
    return "\n".join(lines) + "\n"


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _group_header(table: Table) -> list[str]:
    """``\\multicolumn`` row and ``\\cmidrule`` s for grouped columns (empty when ungrouped)."""
    if not any(c.group_latex for c in table.columns):
        return []
    cells = [""] * len(table.display)
    rules = []
    start = len(table.display) + 1
    for group, members in itertools.groupby(table.columns, key=lambda c: c.group_latex):
        n = len(list(members))
        cells.append(rf"\multicolumn{{{n}}}{{c}}{{{tex_escape(group)}}}" if group else "")
        if group:
            rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        cells.extend([""] * (0 if group else n - 1))
        start += n
    return [" & ".join(cells) + r" \\", " ".join(rules)]


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment with caption and label; best value per column in bold."""
    spec = "l" * len(table.display) + "r" * len(table.columns)
    header = [tex_escape(h) for _, h in table.display] + [c.latex for c in table.columns]
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{tex_escape(table.title)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        *_group_header(table),
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    numbers = _number_cells(table, MISSING_TEX, r"\textbf{{{}}}")
    for k, (ids, nums) in enumerate(zip(_display_cells(table), numbers)):
        if k > 0 and ids[0]:
            lines.append(r"\midrule")
        lines.append(" & ".join([tex_escape(x) for x in ids] + nums) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
