"""Which differences between methods the run can tell apart: paired comparisons on the same images.

For every label set and recognition metric, each method is compared with the best one on the images
both scored (:func:`salbench.stats.paired_comparison`: Wilcoxon signed-rank test of the paired
per-image differences, Holm-corrected over the comparisons with the best, and the bootstrap interval of
the mean difference). The methods whose difference is not significant at ``alpha`` form the set "not
significantly different from the best": a ranking claim about methods inside that set is not supported
by the run's images.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from salbench.report.presentation import COLUMNS, LABEL_SET_LONG, RECOGNITION_KEYS, method_display
from salbench.report.results import raw_higher_is_better
from salbench.stats import DEFAULT_BOOTSTRAP, Bootstrap, paired_comparison
from salbench.store.outputs import write_csv

ALPHA = 0.05
"""Family-wise significance level of the comparisons with the best (per label set and metric)."""


def per_metric_tables(per_image: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """``(label_set, column key, image x method values)`` per label set and recognition metric, the
    methods with no value at all left out (a per-image NaN stays: a skipped map)."""
    for label_set, rows in per_image.groupby("label_set", sort=False):
        for key in RECOGNITION_KEYS:
            metric = COLUMNS[key].metric
            if metric in rows:
                wide = rows.pivot_table(index="image_id", columns="method", values=metric, dropna=False)
                yield str(label_set), key, wide.loc[:, wide.notna().any()]


def paired_tables(
    per_image: pd.DataFrame,
    frame: pd.DataFrame,
    settings: Bootstrap = DEFAULT_BOOTSTRAP,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Paired comparisons with the best method per label set and recognition metric.

    Args:
        per_image: per-image recognition rows (``label_set, method, image_id`` and the metric columns)
            of one model.
        frame: the ``results.csv`` rows of the same configuration (directions of the metrics).
        settings: bootstrap settings of the intervals of the differences.
        alpha: family-wise significance level.

    Returns:
        ``label_set, metric`` and the columns of :func:`~salbench.stats.paired_comparison` (raw units,
        one row per method); empty when there is nothing to compare.
    """
    parts = []
    for label_set, key, wide in per_metric_tables(per_image):
        if wide.shape[1] < 2:
            continue
        values = {str(m): wide[m].to_numpy(float) for m in wide.columns}
        table = paired_comparison(values, raw_higher_is_better(frame, key), settings, alpha)
        table.insert(0, "metric", COLUMNS[key].metric)
        table.insert(0, "label_set", label_set)
        parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def significance_section(
    per_image: pd.DataFrame | None,
    frame: pd.DataFrame,
    out: Path,
    sub: str,
    settings: Bootstrap = DEFAULT_BOOTSTRAP,
    alpha: float = ALPHA,
) -> list[str]:
    """The report's section: per label set a Markdown table (metric, best method, the methods not
    significantly different from it, the significantly worse ones); the full comparisons in
    ``tables/<sub>/paired_comparisons.csv``."""
    lines = ["### Which methods the run tells apart (paired comparisons)", ""]
    table = None if per_image is None else paired_tables(per_image, frame, settings, alpha)
    if table is None or table.empty:
        return [*lines, "Not computed in this run (no per-image recognition values of two methods).", ""]
    folder = out / "tables" / sub
    write_csv(folder / "paired_comparisons.csv", table)
    lines += [
        f"Each method against the best one on the same images: Wilcoxon signed-rank test of the per-image "
        f"differences, Holm-corrected over the comparisons with the best (family-wise alpha = {alpha:g}); "
        "a method in the middle column is not significantly different from the best, so the run does not "
        f"rank it below the best. n: images every method scored. {len(table)} comparisons in "
        f"[paired_comparisons.csv]({'/'.join(p for p in ('tables', sub) if p)}/paired_comparisons.csv) "
        "(with the bootstrap interval of each mean difference).",
        "",
    ]
    for label_set, rows in table.groupby("label_set", sort=False):
        lines += [
            f"**{LABEL_SET_LONG.get(str(label_set), str(label_set))} targets**",
            "",
            "| metric | n | best | not significantly different | significantly worse |",
            "|:--|--:|:--|:--|:--|",
        ]
        header = {COLUMNS[k].metric: COLUMNS[k].header.replace("-bar", "") for k in RECOGNITION_KEYS}
        for metric, part in rows.groupby("metric", sort=False):
            best = part.iloc[0]
            tied = part.iloc[1:][part.iloc[1:]["tied_with_best"]]
            worse = part.iloc[1:][~part.iloc[1:]["tied_with_best"]]
            cells = [
                header.get(str(metric), str(metric)),
                str(int(best["n_images"])),
                f"{method_display(best['method']).label} ({best['mean']:.3f})",
                ", ".join(method_display(m).label for m in tied["method"]) or "none",
                ", ".join(method_display(m).label for m in worse["method"]) or "none",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines
