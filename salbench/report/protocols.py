"""Two protocols side by side: what changes when the study's quirks are replaced by the papers' definitions.

The same model, data and images evaluated under two parameter presets (``acml2024``: what the study's
code computed; ``reference``: the original papers' definitions). Per metric and method: both values with
their intervals, the difference and whether it is significant (recognition metrics: Wilcoxon
signed-rank test of the paired per-image differences; other means: a two-sided z test of the difference
of two independent means, ``d / sqrt(se_a^2 + se_b^2)``), Holm-corrected over every comparison of one
model; per metric the Kendall tau between the two method rankings; and the claims' verdicts under each.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.stats import kendalltau

from salbench.report.claims import ClaimResult, ClaimThresholds, judge_claims
from salbench.report.presentation import COLUMNS, TABLE1_KEYS, TABLE3_KEYS, method_display
from salbench.report.results import RunKey, presented, rows_of_model, select_run
from salbench.stats import Bootstrap, holm, signed_rank_p
from salbench.store.outputs import write_csv

ALPHA = 0.05
KEYS = (*TABLE1_KEYS, *TABLE3_KEYS)


def _paired_p(per_a: pd.DataFrame | None, per_b: pd.DataFrame | None, method: str, metric: str) -> tuple:
    """Wilcoxon p of the per-image differences of ``method`` under the two protocols (and n), or None."""
    if per_a is None or per_b is None or metric not in per_a or metric not in per_b:
        return None
    a = per_a[(per_a["method"] == method) & (per_a["label_set"] == "groundtruth")]
    b = per_b[(per_b["method"] == method) & (per_b["label_set"] == "groundtruth")]
    if a.empty or b.empty:
        return None
    both = (
        a.set_index(a["image_id"].astype(str))[metric]
        .to_frame("a")
        .join(b.set_index(b["image_id"].astype(str))[metric].to_frame("b"), how="inner")
    )
    both = both.dropna()
    if len(both) < 2:
        return None
    return signed_rank_p((both["a"] - both["b"]).to_numpy(float)), len(both)


def _se(frame: pd.DataFrame, method: str, metric: str) -> tuple[float, float]:
    """Standard error of a results row's mean (std / sqrt(n)) and its n; NaN where unknown."""
    row = frame[
        (frame["method"] == method)
        & (frame["metric"] == metric)
        & (frame["label_set"] == "groundtruth")
        & (frame["augmentation"] == "none")
    ]
    if row.empty or "std" not in row:
        return math.nan, math.nan
    std, n = float(row["std"].iloc[0]), float(row["n_images"].iloc[0])
    return (std / math.sqrt(n) if n > 1 and math.isfinite(std) else math.nan), n


def protocol_differences(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    per_a: pd.DataFrame | None = None,
    per_b: pd.DataFrame | None = None,
    alpha: float = ALPHA,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per metric x method the two values and their difference; per metric the rank agreement.

    Args:
        frame_a, frame_b: ``results.csv`` rows of one model under protocols a and b.
        per_a, per_b: their per-image recognition rows (paired tests), or None.
        alpha: family-wise level (Holm over every comparison).

    Returns:
        ``(cells, ranks)``: cells with ``metric, method, value_a, ci_low_a, ci_high_a, value_b, ...,
        difference, test, n, p_value, p_holm, significant`` in presented units; ranks with ``metric,
        n_methods, kendall_tau`` (the two method rankings of each metric).
    """
    values = {side: presented(f, KEYS, "groundtruth") for side, f in (("a", frame_a), ("b", frame_b))}
    lows = {
        side: presented(f, KEYS, "groundtruth", field="ci_low")
        for side, f in (("a", frame_a), ("b", frame_b))
    }
    highs = {
        side: presented(f, KEYS, "groundtruth", field="ci_high")
        for side, f in (("a", frame_a), ("b", frame_b))
    }
    methods = values["a"].index.intersection(values["b"].index)
    cells, ranks = [], []
    for key in KEYS:
        column = COLUMNS[key]
        both = pd.DataFrame({"a": values["a"].loc[methods, key], "b": values["b"].loc[methods, key]}).dropna()
        for method, (va, vb) in both.iterrows():
            paired = _paired_p(per_a, per_b, str(method), column.metric)
            if paired is not None:
                p, n, test = paired[0], paired[1], "Wilcoxon signed-rank (paired images)"
            else:
                (se_a, n_a), (se_b, _) = (
                    _se(frame_a, str(method), column.metric),
                    _se(frame_b, str(method), column.metric),
                )
                se = math.hypot(se_a, se_b) * column.scale
                n = n_a
                if math.isfinite(se) and se > 0:
                    p, test = float(2 * stats.norm.sf(abs(vb - va) / se)), "z test (independent means)"
                else:
                    p, test = (1.0 if va == vb else math.nan), "no spread recorded"
            lo_a, hi_a = sorted((lows["a"].at[method, key], highs["a"].at[method, key]))
            lo_b, hi_b = sorted((lows["b"].at[method, key], highs["b"].at[method, key]))
            cells.append(
                {
                    "metric": column.metric,
                    "key": key,
                    "method": str(method),
                    "value_a": va,
                    "ci_low_a": lo_a,
                    "ci_high_a": hi_a,
                    "value_b": vb,
                    "ci_low_b": lo_b,
                    "ci_high_b": hi_b,
                    "difference": vb - va,
                    "test": test,
                    "n": n,
                    "p_value": p,
                }
            )
        if len(both) >= 3 and both["a"].nunique() > 1 and both["b"].nunique() > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tau = float(kendalltau(both["a"].to_numpy(), both["b"].to_numpy()).statistic)
            ranks.append({"metric": column.metric, "key": key, "n_methods": len(both), "kendall_tau": tau})
    table = pd.DataFrame(cells)
    if not table.empty:
        table["p_holm"] = holm(table["p_value"].to_numpy(float))
        table["significant"] = table["p_holm"] < alpha
    return table, pd.DataFrame(ranks)


def protocol_section(
    protocols: tuple[str, str],
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    per_a: pd.DataFrame | None,
    per_b: pd.DataFrame | None,
    claims: tuple[list[ClaimResult], list[ClaimResult]],
    out: Path,
    sub: str,
    alpha: float = ALPHA,
) -> list[str]:
    """The report's section ``<a> vs <b>``: per metric the rank agreement and the methods whose value
    changed significantly, the claims under each protocol; every comparison in
    ``tables/<sub>/protocol_comparison.csv``."""
    a, b = protocols
    lines = [f"### {a} vs {b}", ""]
    cells, ranks = protocol_differences(frame_a, frame_b, per_a, per_b, alpha)
    if cells.empty:
        return [*lines, f"No metric of a method computed under both {a} and {b}.", ""]
    cells = cells.rename(
        columns={
            c: c[:-2] + f"_{a if c.endswith('_a') else b}" for c in cells.columns if c.endswith(("_a", "_b"))
        }
    )
    folder = out / "tables" / sub
    write_csv(folder / "protocol_comparison.csv", cells)
    if not ranks.empty:
        write_csv(folder / "protocol_rank_agreement.csv", ranks)
    rel = "/".join(p for p in ("tables", sub) if p)
    lines += [
        f"The same model and images under both presets. Difference = {b} - {a} (presented units); "
        "recognition metrics are tested on the paired per-image values (Wilcoxon signed-rank), the others "
        f"with a z test of two independent means; Holm-corrected over all {len(cells)} comparisons "
        f"(alpha = {alpha:g}). Kendall tau: agreement of the two method rankings (1: same order). Every "
        f"comparison with both intervals: [protocol_comparison.csv]({rel}/protocol_comparison.csv).",
        "",
        "| metric | methods | Kendall tau | changed significantly |",
        "|:--|--:|--:|:--|",
    ]
    taus = dict(zip(ranks.get("key", []), ranks.get("kendall_tau", [])))
    for key, part in cells.groupby("key", sort=False):
        changed = part[part["significant"]].sort_values("difference", key=np.abs, ascending=False)
        text = ", ".join(
            f"{method_display(r.method).label} {r.difference:+.{COLUMNS[key].decimals}f}"
            for r in changed.itertuples()
        )
        tau = taus.get(key, math.nan)
        lines.append(
            f"| {COLUMNS[key].header} | {len(part)} | {'n/a' if not math.isfinite(tau) else f'{tau:.2f}'} | "
            f"{text or 'none'} |"
        )
    lines.append("")
    ours, theirs = claims
    if ours and theirs:
        lines += [f"| # | Claim | {a} | {b} |", "|--:|:--|:--|:--|"]
        for i, (x, y) in enumerate(zip(ours, theirs), start=1):
            claim = x.claim.replace("|", r"\|")
            lines.append(f"| {i} | {claim} | {x.verdict} | {y.verdict} |")
        lines.append("")
    return lines


def protocol_sections(
    key: RunKey,
    rows: pd.DataFrame,
    per_image: pd.DataFrame | None,
    claims: list[ClaimResult],
    frame: pd.DataFrame,
    others: Mapping[str, tuple[pd.DataFrame, pd.DataFrame | None]],
    out: Path,
    sub: str,
    intervals: Bootstrap,
    thresholds: ClaimThresholds,
) -> list[str]:
    """A section per other protocol with rows of the same model and data set: from ``others`` (its own
    run folder, with per-image values) or from this ``results.csv`` (rows only)."""
    found: dict[str, tuple[pd.DataFrame, pd.DataFrame | None]] = {}
    for protocol in sorted(set(frame["protocol"]) - {key.protocol}):
        found[protocol] = (select_run(frame, RunKey(key.model, key.dataset, protocol)), None)
    for protocol, (other, other_per_image) in others.items():
        if protocol != key.protocol:
            found[protocol] = (
                select_run(other, RunKey(key.model, key.dataset, protocol)),
                rows_of_model(other_per_image, key.model, label_set=None),
            )
    lines = []
    for protocol, (other, other_per_image) in found.items():
        if other.empty:
            continue
        theirs = judge_claims(other, other_per_image, intervals, thresholds)
        lines += protocol_section(
            (key.protocol, protocol), rows, other, per_image, other_per_image, (claims, theirs), out, sub
        )
    return lines
