"""The report's "Further evaluations": sanity checks, Gomez et al.'s metrics and ROAR, from ``results.csv``.

Every part is built from the rows its stage upserts and is left out when they are absent:

* sanity checks (Adebayo et al. 2018): :mod:`salbench.report.sanity`;
* Gomez & Mouchère (2023) faithfulness metrics ``<metric>_<filling>`` (:mod:`salbench.metrics.gomez`);
* ROAR (Hooker et al. 2019): ``roar_accuracy`` per ``k<NN>`` (percent of pixels removed before
  re-training; ``original`` / ``k00`` is the re-training with nothing removed), ``roar_mean_accuracy``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from salbench.report.figures import line_style, save_figure
from salbench.report.presentation import (
    MetricColumn,
    method_display,
    method_order,
)
from salbench.report.sanity import SANITY_COLUMNS, SANITY_FAILS, SANITY_THRESHOLD, sanity_section
from salbench.report.sections import (
    ARROWS,
    controls,
    direction,
    figure_lines,
    label_sets_of,
    long_label,
    method_ids,
    metric_column,
    table_lines,
    wide,
)
from salbench.report.tables import Column, Table

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------------------- sanity checks


# ------------------------------------------------------------------------------------------- Gomez et al.


def gomez_table(rows: pd.DataFrame, label_set: str) -> Table | None:
    """Method x the Gomez metrics of both fillings that have values (None when none)."""
    data = wide(rows[rows["variant"] == "none"], GOMEZ_COLUMNS).dropna(axis=1, how="all")
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
        f"Gomez et al. faithfulness metrics ({long_label(label_set)} targets)",
        pd.concat([method_ids(methods, rows), data.loc[methods].reset_index(drop=True)], axis=1),
        tuple(metric_column(rows, s, group=s.key.rsplit("_", 1)[1]) for s in specs),
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
    up = direction(rows, ROAR_ACCURACY, False)
    acc = rows[rows["metric"] == ROAR_ACCURACY].pivot_table(index="method", columns="variant", values="value")
    acc = acc.reindex(columns=ks) * 100.0
    mean = rows[(rows["metric"] == ROAR_MEAN) & (rows["variant"] == "none")].groupby("method")["value"].mean()
    acc["mean"] = mean.reindex(acc.index) * 100.0
    acc = acc.dropna(axis=1, how="all")
    methods = method_order([m for m in acc.index if m != ROAR_ORIGINAL])
    order = ([ROAR_ORIGINAL] if ROAR_ORIGINAL in acc.index else []) + methods
    ids = method_ids(order, rows)
    ids.loc[ids["method"] == ROAR_ORIGINAL, ["family", "label"]] = ["Reference", "Original (nothing removed)"]
    arrow, tex = ARROWS[up]
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
        f"ROAR: accuracy after removing and re-training ({long_label(label_set)} maps)",
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
                f"#### Gomez et al. metrics, {long_label(label_set)} targets",
                "",
            ]
            lines += table_lines(table, out, sub)
    for label_set in label_sets_of(roar):
        rows = roar[roar["label_set"] == label_set]
        table = roar_table(rows, label_set)
        if table is None:
            continue
        lines += [f"#### ROAR, {long_label(label_set)} maps", ""]
        lines += [*table_lines(table, out, sub), *roar_verdict(rows)]
        lines += figure_lines(
            lambda p, r=rows, s=label_set: figure_roar(r, p, f"ROAR, {model}, {long_label(s)} maps"),
            out,
            sub,
            f"roar_{label_set}",
            "ROAR test accuracy against the share of pixels removed; controls dashed (random in black), "
            "the re-training with nothing removed dotted",
        )
    return lines
