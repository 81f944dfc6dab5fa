"""The report's sanity-check section (Adebayo et al. 2018), from the ``sanity_*`` rows of ``results.csv``.

Rows: ``sanity_*`` similarities per variant ``cascading:<block>``, ``independent:<block>``, ``data``
(each with its block ``level``, 1 = output layer), 0/1 ``sanity_fails`` under the deepest cascading
variant and ``data``, and the ``sanity_threshold`` it was judged against. Per label set: a table, the
verdict on the model-free controls (the check is trustworthy only when it flags all of them) and a
cascade figure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from salbench.report.figures import line_style, save_figure
from salbench.report.presentation import (
    MetricColumn,
    method_display,
    method_order,
    natural_key,
)
from salbench.report.sections import (
    controls,
    figure_lines,
    long_label,
    method_ids,
    method_names,
    metric_column,
    table_lines,
    wide,
)
from salbench.report.tables import Table

log = logging.getLogger(__name__)

SANITY_COLUMNS = (
    MetricColumn("spearman_abs", "sanity_spearman_abs", "Spearman abs", r"Spearman $|\cdot|$"),
    MetricColumn("spearman", "sanity_spearman", "Spearman", "Spearman"),
    MetricColumn("ssim", "sanity_ssim", "SSIM", "SSIM"),
    MetricColumn("hog", "sanity_hog", "HOG", "HOG"),
)


SANITY_FAILS = "sanity_fails"


SANITY_THRESHOLD = "sanity_threshold"


_KINDS = ("cascading", "independent")


def _first_block(rows: pd.DataFrame, blocks: set[str]) -> str | None:
    """The output-side block: the one whose cascading and independent variants randomise the same
    weights, so that every method and metric scores identically; None unless exactly one qualifies."""
    values = rows.pivot_table(index=["method", "metric"], columns="variant", values="value")
    same = [
        b
        for b in blocks
        if {f"cascading:{b}", f"independent:{b}"} <= set(values.columns)
        and np.allclose(
            values[f"cascading:{b}"], values[f"independent:{b}"], rtol=0.0, atol=1e-9, equal_nan=True
        )
    ]
    return same[0] if len(same) == 1 else None


def block_order(rows: pd.DataFrame) -> tuple[list[str], bool]:
    """The randomised blocks of ``rows``, output layer first; and whether the order is certain.

    Certain when the rows record each block's ``level`` (1 = output layer, as the sanity stage writes
    it). Otherwise (files written before the column existed): the block whose cascading and
    independent scores coincide first, the deepest cascading block (its ``sanity_fails`` row) last, the
    rest by name, highest first (``layer4`` before ``layer3``).
    """
    kinds = rows["variant"].str.partition(":")
    blockwise = kinds[0].isin(_KINDS)
    blocks = set(kinds.loc[blockwise, 2])
    if "level" in rows and (rows.loc[blockwise, "level"] > 0).all():
        levels = rows.loc[blockwise].assign(block=kinds.loc[blockwise, 2]).groupby("block")["level"]
        if (levels.nunique() == 1).all():
            return list(levels.first().sort_values(kind="stable").index), True
    fails = rows[(rows["metric"] == SANITY_FAILS) & rows["variant"].str.startswith("cascading:")]
    deepest = set(fails["variant"].str.partition(":")[2])
    last = deepest.pop() if len(deepest) == 1 else None
    first = _first_block(rows[rows["metric"].isin([s.metric for s in SANITY_COLUMNS])], blocks - {last})
    middle = sorted(blocks - {first, last}, key=natural_key, reverse=True)
    return [b for b in (first, *middle, last) if b is not None], False


def sanity_flags(rows: pd.DataFrame, deepest: str) -> pd.DataFrame:
    """Per method: control?, fails model / data randomisation (True/False/None), lowest similarity.

    ``lowest`` is the smallest similarity over every randomised block and metric (1 for a map the
    randomisation cannot change).
    """
    methods = method_order(set(rows["method"]))
    marked = controls(rows)
    fails = rows[rows["metric"] == SANITY_FAILS].set_index(["method", "variant"])["value"]
    similarity = rows["metric"].isin([s.metric for s in SANITY_COLUMNS])
    blockwise = rows[rows["variant"].str.startswith(_KINDS) & similarity]
    lowest = blockwise.groupby("method")["value"].min()

    def verdict(method: str, variant: str) -> bool | None:
        value = fails.get((method, variant), np.nan)
        return None if not np.isfinite(value) else bool(value > 0.5)

    return pd.DataFrame(
        {
            "method": methods,
            "control": [m in marked for m in methods],
            "fails_model": [verdict(m, deepest) for m in methods],
            "fails_data": [verdict(m, "data") for m in methods],
            "lowest": [float(lowest.get(m, np.nan)) for m in methods],
        }
    )


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def sanity_table(rows: pd.DataFrame, label_set: str, deepest: str, flags: pd.DataFrame) -> Table | None:
    """Method x mean similarity at full cascading randomisation and under data randomisation."""
    parts = [("model", "full model rand.", "Model ", wide(rows, SANITY_COLUMNS, deepest))]
    parts.append(("data", "data rand.", "Data ", wide(rows, SANITY_COLUMNS, "data")))
    parts = [(p, g, h, d.dropna(axis=1, how="all")) for p, g, h, d in parts]
    columns = tuple(
        metric_column(rows, spec, f"{p}_{spec.key}", h, g)
        for p, g, h, d in parts
        for spec in SANITY_COLUMNS
        if spec.key in d
    )
    if not columns:
        return None
    flagged = flags.set_index("method")
    ids = method_ids(list(flagged.index), rows, control_mark=True)
    ids["fails_model_randomisation"] = [_yes_no(v) for v in flagged["fails_model"]]
    ids["fails_data_randomisation"] = [_yes_no(v) for v in flagged["fails_data"]]
    data = pd.concat([d.add_prefix(f"{p}_") for p, _, _, d in parts], axis=1).reindex(flagged.index)
    n = rows.loc[rows["variant"] == deepest, "n_images"].dropna()
    last = deepest.partition(":")[2] or "-"
    notes = [
        f"mean similarity of each method's maps on the randomised model to its maps on the original "
        f"model{f' over {int(n.max())} images' if len(n) else ''}; lower (↓) = the maps depend more on the "
        f"model; full model rand.: cascading, every block re-initialised (`{last}` "
        "last); data rand.: the model trained on shuffled labels",
        "fails: as recorded by the sanity stage (`sanity_fails`: the similarity it flags on stays above its "
        f"threshold{_threshold_text(rows)})",
    ]
    return Table(
        f"sanity_{label_set}",
        f"Sanity checks: model and data randomisation ({long_label(label_set)} targets)",
        pd.concat([ids, data.reset_index(drop=True)], axis=1),
        columns,
        ids=("family", "method", "label", "fails_model_randomisation", "fails_data_randomisation"),
        display=(
            ("family", "Family"),
            ("label", "Method"),
            ("fails_model_randomisation", "Fails model rand."),
            ("fails_data_randomisation", "Fails data rand."),
        ),
        notes=tuple(notes),
    )


def _threshold_text(rows: pd.DataFrame) -> str:
    values = set(rows.loc[rows["metric"] == SANITY_THRESHOLD, "value"].dropna())
    return f" {values.pop():g}" if len(values) == 1 else ""


def sanity_verdict(flags: pd.DataFrame) -> list[str]:
    """Whether every control is flagged (the check is trustworthy only then) and which methods act alike."""
    controls, real = flags[flags["control"]], flags[~flags["control"]]
    if controls.empty:
        return [
            "No model-free control (Fake-CAM, Edge, Random) was checked: whether the check flags maps "
            "that ignore the model is unknown, so its verdicts cannot be trusted on their own.",
            "",
        ]
    lowest = controls["lowest"].min()
    lines = [
        f"- **Controls.** {method_names(list(controls['method']))} do not depend on the model, so "
        "randomising it cannot change them and the check must flag them"
        + (f" (lowest similarity at any randomised block: {lowest:.2f})." if np.isfinite(lowest) else ".")
    ]
    for key, what in (("fails_model", "Model randomisation"), ("fails_data", "Data randomisation")):
        recorded = controls[controls[key].notna()]
        if recorded.empty:
            continue
        missed = list(recorded.loc[~recorded[key].astype(bool), "method"])
        unknown = list(controls.loc[controls[key].isna(), "method"])
        if missed:
            text = f"does **not** flag {method_names(missed)}: the check is not trustworthy on this run"
        elif unknown:
            text = f"flags {method_names(list(recorded['method']))}, not recorded for {method_names(unknown)}"
        else:
            text = "flags every control: the check is trustworthy on this run"
        like = list(real.loc[real[key].eq(True), "method"])
        passed = list(real.loc[real[key].eq(False), "method"])
        lines.append(
            f"- **{what}** {text}. Methods that behave like the controls (fail): {method_names(like)}; "
            f"pass: {method_names(passed)}."
        )
    return [*lines, ""]


def figure_cascade(rows: pd.DataFrame, blocks: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Similarity vs randomised block (output layer first), one panel per variant kind x metric.

    One line per method; controls grey and dashed. ``original`` (nothing randomised) is similarity 1.
    """
    kinds = [k for k in _KINDS if rows["variant"].str.startswith(f"{k}:").any()]
    specs = [s for s in SANITY_COLUMNS if (rows["metric"] == s.metric).any()]
    methods = method_order(set(rows["method"]))
    marked = controls(rows)
    fig = Figure(figsize=(3.9 * len(specs) + 2.2, 3.6 * len(kinds) + 0.6))
    axes = np.asarray(fig.subplots(len(kinds), len(specs), squeeze=False, sharey=True))
    ticks = ["original", *blocks]
    for r, kind in enumerate(kinds):
        for c, spec in enumerate(specs):
            ax = axes[r, c]
            part = rows[rows["metric"] == spec.metric].set_index(["method", "variant"])["value"]
            n_real = n_ctrl = 0
            for method in methods:
                ys = [part.get((method, f"{kind}:{b}"), np.nan) for b in blocks]
                if method in marked:
                    style = {"color": ("#555555", "#999999", "#777777")[n_ctrl % 3], "linestyle": "--"}
                    style["marker"] = ("x", "+", "1")[n_ctrl % 3]
                    n_ctrl += 1
                else:
                    style = line_style(n_real)
                    n_real += 1
                label = method_display(method).label + (" (control)" if method in marked else "")
                ax.plot(range(len(ticks)), [1.0, *ys], label=label, markersize=5, linewidth=1.6, **style)
            ax.set_xticks(range(len(ticks)), ticks, rotation=40, ha="right", fontsize=10)
            ax.axhline(0.0, color="black", linewidth=0.6)
            ax.set_title(f"{kind}: {spec.header}", fontsize=12)
            ax.grid(alpha=0.3)
            ax.tick_params(axis="y", labelsize=10)
        axes[r, 0].set_ylabel("similarity to the original map", fontsize=11)
        for ax in axes[r]:
            ax.set_xlabel(
                "randomised from the output layer down to"
                if kind == "cascading"
                else "randomised block alone",
                fontsize=11,
            )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=11, frameon=False)
    fig.suptitle(title or "Model-parameter randomisation: similarity to the original maps", fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)


def sanity_section(rows: pd.DataFrame, model: str, label_set: str, out: Path, sub: str) -> list[str]:
    """Table, verdict on the controls and cascade figure of one label set's sanity rows."""
    blocks, certain = block_order(rows)
    fails = rows[(rows["metric"] == SANITY_FAILS) & rows["variant"].str.startswith("cascading:")]
    deepest = fails["variant"].iloc[0] if len(fails) else (f"cascading:{blocks[-1]}" if blocks else "")
    flags = sanity_flags(rows, deepest)
    lines = [f"#### Sanity checks, {long_label(label_set)} targets", ""]
    lines += [
        "Adebayo et al. (2018): each method's maps on a model whose blocks are re-initialised from the "
        "output layer down (cascading: every block up to the one named; independent: that block alone) and "
        "on a model trained on shuffled labels, compared with its maps on the trained model "
        "(Spearman rank correlation of the stored maps and of the signed attributions, SSIM, HOG "
        "correlation).",
        "",
    ]
    table = sanity_table(rows, label_set, deepest, flags)
    if table is not None:
        lines += table_lines(table, out, sub)
    lines += sanity_verdict(flags)
    if blocks:
        controls = flags.loc[flags["control"], "lowest"]
        note = (
            " (the unchanged controls coincide at 1)" if len(controls) > 1 and (controls >= 1).all() else ""
        )
        if not certain:
            note += " (block order inferred: the results record no block levels)"
        lines += figure_lines(
            lambda p: figure_cascade(
                rows, blocks, p, f"Model-parameter randomisation, {model}, {long_label(label_set)} targets"
            ),
            out,
            sub,
            f"sanity_cascade_{label_set}",
            f"Similarity to the original maps against the randomised block, output layer first; controls "
            f"grey and dashed{note}",
        )
    return lines
