"""The report's "Further evaluations": sanity checks, Gomez et al.'s metrics and ROAR, from ``results.csv``.

Every part is built from the rows its stage upserts and is left out when they are absent:

* sanity checks (:mod:`salbench.stages.sanity`, Adebayo et al. 2018): ``sanity_*`` similarities per variant
  ``cascading:<block>``, ``independent:<block>``, ``data`` and 0/1 ``sanity_fails`` under the deepest
  cascading variant and ``data``; per label set a table, the verdict on the model-free controls (the
  check is trustworthy only when it flags all of them) and a cascade figure;
* Gomez & Mouchère (2023) faithfulness metrics ``<metric>_<filling>`` (:mod:`salbench.metrics.gomez`);
* ROAR (Hooker et al. 2019): ``roar_accuracy`` per ``k<NN>`` (percent of pixels removed before
  re-training; ``original`` / ``k00`` is the re-training with nothing removed), ``roar_mean_accuracy``.

``results.csv`` is rewritten sorted by key, so the order of the randomised blocks is not in its row
order; :func:`block_order` recovers it from the model's architecture or, failing that, from the rows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from salbench.report.figures import line_style, save_figure
from salbench.report.presentation import (
    CONTROL_FAMILIES,
    LABEL_SET_LONG,
    LABEL_SETS,
    MetricColumn,
    method_display,
    method_order,
    natural_key,
)
from salbench.report.render import to_csv, to_latex, to_markdown
from salbench.report.tables import Column, Table
from salbench.store.outputs import write_text

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
_GOMEZ = (
    ("iic", "IIC", 100.0, 1, True),
    ("ad_gomez", "AD", 100.0, 1, False),
    ("add", "ADD", 100.0, 1, True),
    ("dauc", "DAUC", 100.0, 1, False),
    ("dc", "DC", 1.0, 2, True),
    ("iauc", "IAUC", 100.0, 1, True),
    ("ic", "IC", 1.0, 2, True),
)
GOMEZ_FILLINGS = ("black", "blur")
GOMEZ_COLUMNS = tuple(
    # LaTeX: the filling is the group header above the metric names
    MetricColumn(f"{m}_{f}", f"{m}_{f}", f"{h} ({f})", h, s, decimals=d, higher_is_better=up)
    for f in GOMEZ_FILLINGS
    for m, h, s, d, up in _GOMEZ
)
ROAR_ACCURACY, ROAR_MEAN, ROAR_ORIGINAL = "roar_accuracy", "roar_mean_accuracy", "original"
_ROAR_K = re.compile(r"k(\d+)")
_ARROW = {True: ("↑", r"$\uparrow$"), False: ("↓", r"$\downarrow$")}


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


def _long(label_set: str) -> str:
    return LABEL_SET_LONG.get(label_set, label_set).lower()


def _direction(rows: pd.DataFrame, metric: str, default: bool) -> bool:
    stated = rows.loc[rows["metric"] == metric, "higher_is_better"].dropna()
    return bool(stated.iloc[0]) if len(stated) else default


def _column(
    rows: pd.DataFrame, spec: MetricColumn, key: str = "", prefix: str = "", group: str = ""
) -> Column:
    up = _direction(rows, spec.metric, spec.higher_is_better)
    md, tex = _ARROW[up]
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


def _wide(rows: pd.DataFrame, specs: Sequence[MetricColumn], variant: str | None = None) -> pd.DataFrame:
    """Method x spec.key frame of presented values (one variant, or the rows as they are)."""
    if variant is not None:
        rows = rows[rows["variant"] == variant]
    out = pd.DataFrame(index=pd.Index(sorted(set(rows["method"])), name="method"))
    for spec in specs:
        raw = rows[rows["metric"] == spec.metric].groupby("method")["value"].mean()
        out[spec.key] = raw.reindex(out.index).map(spec.present)
    return out


def _ids(methods: Sequence[str], rows: pd.DataFrame, control_mark: bool = False) -> pd.DataFrame:
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


def _table_lines(table: Table, out: Path, sub: str) -> list[str]:
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


def _figure_lines(make: Callable[[Path], Path], out: Path, sub: str, name: str, caption: str) -> list[str]:
    rel = "/".join(p for p in ("figures", sub) if p)
    make(out / rel / f"{name}.png")
    return [f"![{caption}]({rel}/{name}.png)", "", f"*{caption}*", ""]


# ----------------------------------------------------------------------------------------- sanity checks


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
    parts = [("model", "full model rand.", "Model ", _wide(rows, SANITY_COLUMNS, deepest))]
    parts.append(("data", "data rand.", "Data ", _wide(rows, SANITY_COLUMNS, "data")))
    parts = [(p, g, h, d.dropna(axis=1, how="all")) for p, g, h, d in parts]
    columns = tuple(
        _column(rows, spec, f"{p}_{spec.key}", h, g)
        for p, g, h, d in parts
        for spec in SANITY_COLUMNS
        if spec.key in d
    )
    if not columns:
        return None
    flagged = flags.set_index("method")
    ids = _ids(list(flagged.index), rows, control_mark=True)
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
        f"Sanity checks: model and data randomisation ({_long(label_set)} targets)",
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


def _names(methods: Sequence[str]) -> str:
    return ", ".join(method_display(m).label for m in methods) or "none"


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
        f"- **Controls.** {_names(list(controls['method']))} do not depend on the model, so randomising it "
        "cannot change them and the check must flag them"
        + (f" (lowest similarity at any randomised block: {lowest:.2f})." if np.isfinite(lowest) else ".")
    ]
    for key, what in (("fails_model", "Model randomisation"), ("fails_data", "Data randomisation")):
        recorded = controls[controls[key].notna()]
        if recorded.empty:
            continue
        missed = list(recorded.loc[~recorded[key].astype(bool), "method"])
        unknown = list(controls.loc[controls[key].isna(), "method"])
        if missed:
            text = f"does **not** flag {_names(missed)}: the check is not trustworthy on this run"
        elif unknown:
            text = f"flags {_names(list(recorded['method']))}, not recorded for {_names(unknown)}"
        else:
            text = "flags every control: the check is trustworthy on this run"
        like = list(real.loc[real[key].eq(True), "method"])
        passed = list(real.loc[real[key].eq(False), "method"])
        lines.append(
            f"- **{what}** {text}. Methods that behave like the controls (fail): {_names(like)}; "
            f"pass: {_names(passed)}."
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
    lines = [f"#### Sanity checks, {_long(label_set)} targets", ""]
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
        lines += _table_lines(table, out, sub)
    lines += sanity_verdict(flags)
    if blocks:
        controls = flags.loc[flags["control"], "lowest"]
        note = (
            " (the unchanged controls coincide at 1)" if len(controls) > 1 and (controls >= 1).all() else ""
        )
        if not certain:
            note += " (block order inferred: the results record no block levels)"
        lines += _figure_lines(
            lambda p: figure_cascade(
                rows, blocks, p, f"Model-parameter randomisation, {model}, {_long(label_set)} targets"
            ),
            out,
            sub,
            f"sanity_cascade_{label_set}",
            f"Similarity to the original maps against the randomised block, output layer first; controls "
            f"grey and dashed{note}",
        )
    return lines


# ------------------------------------------------------------------------------------------- Gomez et al.


def gomez_table(rows: pd.DataFrame, label_set: str) -> Table | None:
    """Method x the Gomez metrics of both fillings that have values (None when none)."""
    data = _wide(rows[rows["variant"] == ""], GOMEZ_COLUMNS).dropna(axis=1, how="all")
    data = data.dropna(axis=0, how="all")
    if data.empty:
        return None
    specs = [s for s in GOMEZ_COLUMNS if s.key in data.columns]
    methods = method_order(list(data.index))
    n = rows.loc[rows["metric"].isin(data.columns), "n_images"].dropna()
    notes = (
        "Gomez & Mouchère (2023); IIC (share of images whose confidence rises when only the salient part "
        "is kept), AD, ADD, DAUC, IAUC in % (x100); DC, IC: Pearson correlations (raw)",
        "↑ higher is better, ↓ lower is better (direction from `results.csv`); black: removed pixels set to "
        "black, blur: to the blurred image",
        *(
            [
                f"{int(n.min())}-{int(n.max())} images per value"
                if n.min() != n.max()
                else f"{int(n.max())} images per value"
            ]
            if len(n)
            else []
        ),
    )
    return Table(
        f"gomez_{label_set}",
        f"Gomez et al. faithfulness metrics ({_long(label_set)} targets)",
        pd.concat([_ids(methods, rows), data.loc[methods].reset_index(drop=True)], axis=1),
        tuple(_column(rows, s, group=s.key.rsplit("_", 1)[1]) for s in specs),
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------- ROAR


def roar_ks(rows: pd.DataFrame) -> list[str]:
    """``k<NN>`` variants of the ROAR accuracy rows, by increasing k."""
    found = set(rows.loc[rows["metric"] == ROAR_ACCURACY, "variant"])
    return sorted((v for v in found if _ROAR_K.fullmatch(v)), key=lambda v: int(v[1:]))


def roar_table(rows: pd.DataFrame, label_set: str) -> Table | None:
    """Method x test accuracy (%) after re-training with k% of the pixels removed, and the mean."""
    ks = roar_ks(rows)
    if not ks:
        return None
    up = _direction(rows, ROAR_ACCURACY, False)
    acc = rows[rows["metric"] == ROAR_ACCURACY].pivot_table(index="method", columns="variant", values="value")
    acc = acc.reindex(columns=ks) * 100.0
    mean = rows[(rows["metric"] == ROAR_MEAN) & (rows["variant"] == "")].groupby("method")["value"].mean()
    acc["mean"] = mean.reindex(acc.index) * 100.0
    acc = acc.dropna(axis=1, how="all")
    methods = method_order([m for m in acc.index if m != ROAR_ORIGINAL])
    order = ([ROAR_ORIGINAL] if ROAR_ORIGINAL in acc.index else []) + methods
    ids = _ids(order, rows)
    ids.loc[ids["method"] == ROAR_ORIGINAL, ["family", "label"]] = ["Reference", "Original (nothing removed)"]
    arrow, tex = _ARROW[up]
    columns = tuple(
        Column(k, f"k={int(k[1:])}% {arrow}", rf"$k={int(k[1:])}\%$ {tex}", 1, up, ROAR_ACCURACY)
        for k in ks
        if k in acc.columns
    )
    if "mean" in acc.columns:
        columns += (Column("mean", f"Mean {arrow}", f"Mean {tex}", 1, up, ROAR_MEAN),)
    notes = (
        "ROAR (Hooker et al. 2019): the k% most salient pixels of every image removed, the model re-trained "
        "from scratch, test accuracy in %; lower (↓) = the map found pixels the task depends on",
        "Original: the same re-training with nothing removed (k = 0); Mean: `roar_mean_accuracy`",
    )
    return Table(
        f"roar_{label_set}",
        f"ROAR: accuracy after removing and re-training ({_long(label_set)} maps)",
        pd.concat([ids, acc.loc[order].reset_index(drop=True)], axis=1),
        columns,
        notes=notes,
    )


def roar_verdict(rows: pd.DataFrame, control: str = "random") -> list[str]:
    """Which methods beat the random-map control: lower accuracy than it at more than half of the k."""
    acc = rows[rows["metric"] == ROAR_ACCURACY].pivot_table(index="method", columns="variant", values="value")
    acc = acc.reindex(columns=[k for k in roar_ks(rows) if k != "k00"])
    if control not in acc.index:
        return ["No random-map control in the ROAR rows: whether a method beats chance is not computed.", ""]
    beats, loses = [], []
    for method in method_order([m for m in acc.index if m not in (control, ROAR_ORIGINAL)]):
        both = acc.loc[method].notna() & acc.loc[control].notna()
        wins = int((acc.loc[method, both] < acc.loc[control, both]).sum())
        text = f"{method_display(method).label} ({wins} of {int(both.sum())})"
        (beats if 2 * wins > both.sum() else loses).append(text)
    lines = [
        f"Lower accuracy than the random-map control at most k (beats random; k where lower, of k "
        f"compared): {', '.join(beats) or 'none'}. Does not beat it: {', '.join(loses) or 'none'}."
    ]
    original = rows.loc[(rows["metric"] == ROAR_ACCURACY) & (rows["method"] == ROAR_ORIGINAL), "value"]
    if len(original):
        removed = acc.drop(index=ROAR_ORIGINAL, errors="ignore").to_numpy().ravel()
        removed = removed[np.isfinite(removed)]
        worse = int((removed >= original.iloc[0]).sum())
        if worse:
            lines.append(
                f"Caution: {worse} of {removed.size} re-trainings with pixels removed are at least as "
                f"accurate as the one with nothing removed ({100.0 * original.iloc[0]:.1f}%): removing "
                "pixels did not lower the accuracy there, so those differences reflect re-training noise, "
                "not the maps."
            )
    return [" ".join(lines), ""]


def figure_roar(rows: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Accuracy vs k (%) per method; controls dashed (random in black), the k = 0 re-training dotted."""
    acc = rows[rows["metric"] == ROAR_ACCURACY].copy()
    acc = acc[acc["variant"].isin(roar_ks(rows))]
    acc["k"] = acc["variant"].str[1:].astype(int)
    fig = Figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    n_real = n_ctrl = 0
    marked = controls(rows)
    for method in method_order([m for m in set(acc["method"]) if m != ROAR_ORIGINAL]):
        part = acc[acc["method"] == method].sort_values("k")
        label = method_display(method).label
        if method in marked:
            if method == "random":
                style = {"color": "#000000", "linestyle": "--", "marker": "x"}
            else:
                style = {"color": ("#777777", "#AAAAAA")[n_ctrl % 2], "linestyle": "--"}
                style["marker"] = ("+", "1")[n_ctrl % 2]
                n_ctrl += 1
            label += " (control)"
        else:
            style = line_style(n_real)
            n_real += 1
        ax.plot(part["k"], 100.0 * part["value"], label=label, markersize=6, linewidth=1.8, **style)
    original = acc.loc[acc["method"] == ROAR_ORIGINAL, "value"]
    if len(original):
        value = 100.0 * float(original.iloc[0])
        ax.axhline(
            value, color="#555555", linestyle=":", linewidth=1.5, label=f"nothing removed: {value:.1f}%"
        )
        ax.set_xlim(left=0)
    ax.set_xlabel("pixels removed before re-training, k (%)", fontsize=12)
    ax.set_ylabel("test accuracy after re-training (%)", fontsize=12)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=11)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=11, frameon=False)
    ax.set_title(title or "ROAR: accuracy after removing the most salient pixels", fontsize=13)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- section


def extras_section(frame: pd.DataFrame, model: str, out: Path, sub: str) -> list[str]:
    """The "Further evaluations" Markdown of one configuration's rows; [] when it has none of them."""
    metric = frame["metric"]
    sanity = frame[metric.isin([s.metric for s in SANITY_COLUMNS] + [SANITY_FAILS, SANITY_THRESHOLD])]
    gomez = frame[metric.isin([s.metric for s in GOMEZ_COLUMNS])]
    roar = frame[metric.isin([ROAR_ACCURACY, ROAR_MEAN])]
    if sanity.empty and gomez.empty and roar.empty:
        return []
    lines = ["### Further evaluations", ""]
    for label_set in label_sets_of(sanity):
        lines += sanity_section(sanity[sanity["label_set"] == label_set], model, label_set, out, sub)
    for label_set in label_sets_of(gomez):
        table = gomez_table(gomez[gomez["label_set"] == label_set], label_set)
        if table is not None:
            lines += [
                f"#### Gomez et al. metrics, {_long(label_set)} targets",
                "",
            ]
            lines += _table_lines(table, out, sub)
    for label_set in label_sets_of(roar):
        rows = roar[roar["label_set"] == label_set]
        table = roar_table(rows, label_set)
        if table is None:
            continue
        lines += [f"#### ROAR, {_long(label_set)} maps", ""]
        lines += [*_table_lines(table, out, sub), *roar_verdict(rows)]
        lines += _figure_lines(
            lambda p, r=rows, s=label_set: figure_roar(r, p, f"ROAR, {model}, {_long(s)} maps"),
            out,
            sub,
            f"roar_{label_set}",
            "ROAR test accuracy against the share of pixels removed; controls dashed (random in black), "
            "the re-training with nothing removed dotted",
        )
    return lines
