"""Metric sanity: the uninformed maps (Random, Edge, Fake-CAM) as the yardstick of every metric.

A metric that ranks a map which knows nothing about the model at least as well as the typical informed
method does not measure explanation quality on this model and data: on a CIFAR-10 ResNet-20 a random map
gets a better deletion score than Grad-CAM (scattered removal pushes the image off the data
distribution), and Fake-CAM, which changes one pixel, gets the best Average Increase. For every label set
and recognition metric, each control is compared with every informed method on the same images
(Wilcoxon signed-rank test of the paired differences, Holm-corrected over the informed methods): the
metric is flagged when a control is significantly better than at least half of the informed methods (its
mean reaching the median informed method's alone can be a tie), with the numbers.

Average Gain divides by ``1 - Y``: when the model is sure (``Y`` near 1) a probability change far below
a point of probability becomes a large term (7e-6 / 1.2e-5 = 0.59). The share of such terms (a change
under :data:`TINY_CHANGE` that gives a term of at least :data:`LARGE_TERM`) and their part of the mean
are reported per method.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from salbench.report.presentation import COLUMNS, LABEL_SET_LONG, RECOGNITION_KEYS, method_display
from salbench.report.results import raw_higher_is_better
from salbench.report.significance import per_metric_tables
from salbench.stats import holm, signed_rank_p
from salbench.store.outputs import write_csv

CONTROL_FAMILIES = ("Control", "Uninformed")
"""Method families whose maps ignore the model (Random, Edge, Fake-CAM)."""
TINY_CHANGE = 0.01
"""A probability change below one point (``O - Y``)."""
LARGE_TERM = 0.1
"""An Average Gain term of at least 10 points."""
ALPHA = 0.05


def is_control(method: str) -> bool:
    return method_display(method).family in CONTROL_FAMILIES


def control_checks(per_image: pd.DataFrame, frame: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Each control against the informed methods, per label set and recognition metric.

    Args:
        per_image: per-image recognition rows (``label_set, method, image_id`` and the metric columns).
        frame: ``results.csv`` rows of the same configuration (metric directions).
        alpha: family-wise level of the comparisons of one control with the informed methods.

    Returns:
        One row per label set, metric and control: ``n_images`` (every method scored them),
        ``control_mean``, ``informed_median``, ``n_informed``, ``beats_median`` (its mean reaches the
        median informed method's), ``n_significantly_better`` / ``n_significantly_worse`` (informed
        methods the control beats / loses to after Holm), ``flagged`` (it beats at least half of them),
        ``best_informed`` and its mean; raw metric units.
    """
    rows = []
    for label_set, key, wide in per_metric_tables(per_image):
        metric = COLUMNS[key].metric
        wide = wide.dropna()
        controls = [str(m) for m in wide.columns if is_control(str(m))]
        informed = [str(m) for m in wide.columns if not is_control(str(m))]
        if not controls or not informed or wide.empty:
            continue
        sign = 1.0 if raw_higher_is_better(frame, key) else -1.0
        means = wide.mean()
        oriented = sign * means
        median = float(np.median(oriented[informed]))
        best = max(informed, key=lambda m: float(oriented[m]))
        for control in controls:
            diffs = [sign * (wide[control] - wide[m]).to_numpy() for m in informed]
            p = holm([signed_rank_p(d) for d in diffs])
            mean_diff = np.array([d.mean() for d in diffs])
            rows.append(
                {
                    "label_set": str(label_set),
                    "metric": metric,
                    "control": control,
                    "n_images": len(wide),
                    "control_mean": float(means[control]),
                    "informed_median": sign * median,
                    "n_informed": len(informed),
                    "beats_median": bool(float(oriented[control]) >= median),
                    "n_significantly_better": (better := int(((p < alpha) & (mean_diff > 0)).sum())),
                    "flagged": bool(2 * better >= len(informed)),
                    "n_significantly_worse": int(((p < alpha) & (mean_diff < 0)).sum()),
                    "best_informed": best,
                    "best_informed_mean": float(means[best]),
                }
            )
    return pd.DataFrame(rows)


def gain_denominator_terms(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per label set and method: the Average Gain terms a tiny probability change makes large.

    Returns:
        ``label_set, method, n_images, n_terms`` (change ``O - Y`` in (0, TINY_CHANGE) and term
        ``>= LARGE_TERM``), ``share`` and ``share_of_mean`` (their part of the method's AG).
    """
    needed = {"base_prob", "masked_prob", "average_gain"}
    if not needed <= set(per_image.columns):
        return pd.DataFrame()
    rows = []
    for (label_set, method), part in per_image.groupby(["label_set", "method"], sort=False):
        change = (part["masked_prob"] - part["base_prob"]).to_numpy(float)
        term = part["average_gain"].to_numpy(float)
        ok = np.isfinite(term) & np.isfinite(change)
        inflated = ok & (change > 0) & (change < TINY_CHANGE) & (term >= LARGE_TERM)
        total = float(term[ok].sum())
        rows.append(
            {
                "label_set": str(label_set),
                "method": str(method),
                "n_images": int(ok.sum()),
                "n_terms": int(inflated.sum()),
                "share": float(inflated.sum() / ok.sum()) if ok.any() else float("nan"),
                "share_of_mean": float(term[inflated].sum() / total) if total > 0 else 0.0,
            }
        )
    return pd.DataFrame(rows)


def controls_section(
    per_image: pd.DataFrame | None, frame: pd.DataFrame, out: Path, sub: str, alpha: float = ALPHA
) -> list[str]:
    """The report's section: the metrics a control scores as well as the informed methods, and the
    inflated Average Gain terms; the full comparisons in ``tables/<sub>/metric_sanity.csv``."""
    lines = ["### Metric sanity: the uninformed maps as yardstick", ""]
    checks = pd.DataFrame() if per_image is None else control_checks(per_image, frame, alpha)
    if checks.empty:
        note = "Not computed in this run (no per-image values of a control and an informed method)."
        return [*lines, note, ""]
    folder = out / "tables" / sub
    write_csv(folder / "metric_sanity.csv", checks)
    rel = "/".join(p for p in ("tables", sub) if p)
    lines += [
        "Random, Edge and Fake-CAM ignore the model. Where one of them scores significantly better than "
        "at least half of the informed methods, the metric does not tell informative maps from "
        "uninformative ones on this model and data: read its column with care. Each control is compared "
        "with every informed method on the same images (Wilcoxon signed-rank, Holm-corrected, "
        f"alpha = {alpha:g}); all comparisons in [metric_sanity.csv]({rel}/metric_sanity.csv).",
        "",
    ]
    header = {COLUMNS[k].metric: COLUMNS[k].header.replace("-bar", "") for k in RECOGNITION_KEYS}
    flagged = checks[checks["flagged"]]
    if flagged.empty:
        lines += ["No control beats half of the informed methods on any recognition metric.", ""]
    else:
        lines += [
            "| targets | metric | control | control | median informed | significantly better than |",
            "|:--|:--|:--|--:|--:|:--|",
        ]
        for r in flagged.itertuples(index=False):
            lines.append(
                f"| {LABEL_SET_LONG.get(r.label_set, r.label_set)} | {header.get(r.metric, r.metric)} | "
                f"{method_display(r.control).label} | {r.control_mean:.3f} | {r.informed_median:.3f} | "
                f"{r.n_significantly_better} of {r.n_informed} informed methods |"
            )
        per_set = []
        for ls, part in flagged.groupby("label_set", sort=False):
            names = ", ".join(dict.fromkeys(header.get(m, m) for m in part["metric"]))
            per_set.append(f"{LABEL_SET_LONG.get(ls, ls)} targets: {names}")
        lines += ["", f"Flagged as uninformative here: {'; '.join(per_set)}.", ""]
    terms = gain_denominator_terms(per_image) if per_image is not None else pd.DataFrame()
    if not terms.empty:
        write_csv(folder / "gain_denominator_terms.csv", terms)
        worst = terms.sort_values("share_of_mean", ascending=False).iloc[0]
        targets = LABEL_SET_LONG.get(worst["label_set"], worst["label_set"])
        lines += [
            f"Average Gain terms inflated by the 1 - Y denominator (a change O - Y under "
            f"{TINY_CHANGE:g} giving a term of at least {LARGE_TERM:g}): {int(terms['n_terms'].sum())} of "
            f"{int(terms['n_images'].sum())} terms; the most affected is "
            f"{method_display(worst['method']).label} ({targets} targets), {100 * worst['share']:.1f}% of "
            f"its images making {100 * worst['share_of_mean']:.1f}% of its AG "
            f"([gain_denominator_terms.csv]({rel}/gain_denominator_terms.csv)).",
            "",
        ]
    return lines
