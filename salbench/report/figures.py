"""The study's figures and two diagnostic plots, written as PNG with matplotlib's Agg renderer.

* :func:`figure1`: best / worst image per metric, every method's map over the input (paper Fig. 1).
* :func:`figure2`: AG, AD-bar, I, D-bar against the ground-truth probability y_c, binned, one curve
  per method (paper Fig. 2).
* :func:`figure_curves`: mean insertion and deletion curves per method.
* :func:`figure_rank_agreement`: Kendall tau between the method rankings of every metric pair.

Figures are built on :class:`matplotlib.figure.Figure` objects (no pyplot, so no global backend
state) and written atomically. Colours: the Okabe-Ito colour-blind-safe palette, cycled together with
markers and line styles so that more than eight methods stay distinguishable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from salbench.errors import DataError
from salbench.report.presentation import COLUMNS, method_display, method_order
from salbench.store.outputs import atomic_path

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", ":", "-.")
FIGURE2_PANELS = (
    ("AG", "average_gain"),
    ("AD_bar", "average_drop"),
    ("I", "insertion"),
    ("D_bar", "deletion"),
)
PER_IMAGE_COLUMNS = (
    "method",
    "image_id",
    "base_prob",
    "average_drop",
    "average_gain",
    "insertion",
    "deletion",
)
_DPI = 110


def line_style(i: int) -> dict[str, object]:
    return {
        "color": OKABE_ITO[i % len(OKABE_ITO)],
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)],
    }


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {', '.join(missing)}")


def binned_means(per_image: pd.DataFrame, n_bins: int = 10, min_count: int = 1) -> pd.DataFrame:
    """Per method and y_c bin, the mean presented AG, AD-bar, I, D-bar (the data of Figure 2).

    Args:
        per_image: one row per method x image with ``method``, ``base_prob`` (y_c) and the per-image
            ``average_gain``, ``average_drop``, ``insertion``, ``deletion`` in natural units.
        n_bins: equal-width bins of y_c over [0, 1] (the last bin includes 1).
        min_count: bins with fewer images are left out.

    Returns:
        Columns ``method, bin, centre, count, AG, AD_bar, I, D_bar`` (AD-bar = 100 - 100 AD per image,
        then averaged; identical to the bar of the mean since the bar is affine).
    """
    _require(per_image, [c for c in PER_IMAGE_COLUMNS if c != "image_id"], "per-image recognition data")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    data = pd.DataFrame({"method": per_image["method"].astype(str)})
    data["bin"] = np.digitize(per_image["base_prob"].to_numpy(dtype=float), edges[1:-1])
    for key, metric in FIGURE2_PANELS:
        data[key] = COLUMNS[key].present(per_image[metric].to_numpy(dtype=float))
    grouped = data.groupby(["method", "bin"], sort=True)
    out = grouped[[k for k, _ in FIGURE2_PANELS]].mean()
    out.insert(0, "count", grouped.size())
    out = out.reset_index()
    out.insert(2, "centre", (edges[out["bin"]] + edges[out["bin"] + 1]) / 2.0)
    return out[out["count"] >= min_count].reset_index(drop=True)


FAMILY_COLOURS = {
    "Uninformed": ("#000000",),
    "Gradient": ("#08519C", "#3182BD", "#6BAED6", "#9ECAE1", "#2171B5", "#4292C6", "#084594", "#C6DBEF"),
    "CAM": ("#A63603", "#E6550D", "#FD8D3C", "#FDAE6B", "#D94801", "#F16913", "#8C2D04"),
    "Occlusion": ("#006D2C", "#31A354", "#74C476"),
    "Learning": ("#54278F", "#756BB1", "#9E9AC8"),
    "Control": ("#636363", "#969696", "#BDBDBD"),
    "Other": ("#CE1256", "#E7298A", "#DF65B0"),
}
"""One hue per method family (the tables' row groups), shades within it: a reader finds a family at once."""


def family_style(method: str, index_in_family: int) -> dict[str, object]:
    """Colour from the method's family, line style and marker from its position within the family."""
    shades = FAMILY_COLOURS.get(method_display(method).family, FAMILY_COLOURS["Other"])
    return {
        "color": shades[index_in_family % len(shades)],
        "linestyle": LINESTYLES[index_in_family % len(LINESTYLES)],
        "marker": MARKERS[index_in_family % len(MARKERS)],
    }


def figure2(
    per_image: pd.DataFrame, path: str | Path, n_bins: int = 10, min_count: int = 1, title: str = ""
) -> Path:
    """Figure 2: AG, AD-bar, I, D-bar against the ground-truth probability y_c, one curve per method.

    Methods are coloured by family; grey bars (right axis) give the number of images in each bin, so
    a point resting on two images is seen as such.
    """
    means = binned_means(per_image, n_bins, min_count)
    fig = Figure(figsize=(14, 9))
    axes = fig.subplots(2, 2, sharex=True)
    methods = method_order(set(means["method"]))
    seen: dict[str, int] = {}
    styles = {}
    for method in methods:
        family = method_display(method).family
        styles[method] = family_style(method, seen.get(family, 0))
        seen[family] = seen.get(family, 0) + 1
    counts = means.groupby("centre")["count"].max()
    for ax, (key, _) in zip(axes.ravel(), FIGURE2_PANELS):
        twin = ax.twinx()
        twin.bar(counts.index, counts.to_numpy(), width=0.8 / n_bins, color="#DDDDDD", zorder=0)
        twin.set_ylabel("images per bin", fontsize=10, color="#777777")
        twin.tick_params(labelsize=9, colors="#777777")
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        for method in methods:
            part = means[means["method"] == method]
            label = method_display(method).label
            ax.plot(part["centre"], part[key], label=label, markersize=5, linewidth=1.6, **styles[method])
        ax.set_title(COLUMNS[key].header, fontsize=13)
        ax.set_ylabel(f"{COLUMNS[key].header} (%)", fontsize=12)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=11)
    for ax in axes[1]:
        ax.set_xlabel("ground-truth probability $y_c$ (binned)", fontsize=12)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=10, frameon=False)
    fig.suptitle(title or "Figure 2. Recognition metrics against the ground-truth probability", fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)


def figure_curves(curves: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Mean insertion and deletion curves per method (columns ``method, curve, fraction, value``; a band
    where ``ci_low``/``ci_high`` give the bootstrap interval of each point's mean)."""
    _require(curves, ("method", "curve", "fraction", "value"), "mean curves")
    fig = Figure(figsize=(13, 5.5))
    axes = fig.subplots(1, 2, sharey=True)
    methods = method_order(set(curves["method"].astype(str)))
    for ax, kind in zip(axes, ("insertion", "deletion")):
        for i, method in enumerate(methods):
            part = curves[(curves["method"] == method) & (curves["curve"] == kind)].sort_values("fraction")
            if not part.empty:
                style = {**line_style(i), "marker": None}
                ax.plot(
                    part["fraction"],
                    part["value"],
                    label=method_display(method).label,
                    linewidth=1.8,
                    **style,
                )
                if {"ci_low", "ci_high"} <= set(part.columns) and part["ci_low"].notna().any():
                    ax.fill_between(
                        part["fraction"], part["ci_low"], part["ci_high"], color=style["color"], alpha=0.12
                    )
        verb = "inserted" if kind == "insertion" else "deleted"
        banded = "ci_low" in curves and curves["ci_low"].notna().any()
        ax.set_title(
            f"{kind.capitalize()} (mean over images{', bootstrap band' if banded else ''})", fontsize=13
        )
        ax.set_xlabel(f"fraction of pixels {verb}, most salient first", fontsize=12)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=11)
    axes[0].set_ylabel("probability of the target class", fontsize=12)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=11, frameon=False)
    fig.suptitle(title or "Mean insertion and deletion curves", fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)


@dataclasses.dataclass(frozen=True)
class Figure1Inputs:
    """What :func:`figure1` draws: images (H,W,3) in [0,1], maps (H,W) per method and image, picks."""

    images: Mapping[str, np.ndarray]
    maps: Mapping[str, Mapping[str, np.ndarray]]
    picks: Mapping[str, tuple[str, str]]
    values: Mapping[tuple[str, str, str], float] = dataclasses.field(default_factory=dict)
    methods: tuple[str, ...] = ()


def pick_best_worst(
    per_image: pd.DataFrame, metrics: Sequence[str] = tuple(m for _, m in FIGURE2_PANELS)
) -> dict[str, tuple[str, str]]:
    """Per metric, the image with the best and the worst value averaged over methods (ties: first id).

    Args:
        per_image: rows ``method, image_id`` and one column per metric id (natural units).
        metrics: metric ids; direction from :data:`~salbench.report.presentation.COLUMNS`.
    """
    _require(per_image, ["image_id", *metrics], "per-image recognition data")
    direction = {c.metric: c.higher_is_better for c in COLUMNS.values()}
    means = per_image.groupby(per_image["image_id"].astype(str), sort=True)[list(metrics)].mean()
    picks = {}
    for metric in metrics:
        col = means[metric].dropna()
        if col.empty:
            continue
        score = col if direction.get(metric, True) else -col
        picks[metric] = (str(score.idxmax()), str(score.idxmin()))
    return picks


def _overlay(ax, image: np.ndarray | None, saliency: np.ndarray | None, clip: float = 99.0):
    """Image with the map over it, min-max scaled after clipping at the ``clip`` percentile."""
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None:
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=10, transform=ax.transAxes)
        return None
    h, w = image.shape[:2]
    ax.imshow(np.clip(image, 0.0, 1.0), extent=(0, w, h, 0))
    if saliency is None:
        return None
    s = np.asarray(saliency, dtype=float)
    if np.isfinite(s).all():
        s = np.clip(s, s.min(), np.percentile(s, clip))
    span = np.ptp(s) if np.isfinite(s).all() else 0.0
    s = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    return ax.imshow(s, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, extent=(0, w, h, 0))


def figure1(
    images: Mapping[str, np.ndarray],
    maps: Mapping[str, Mapping[str, np.ndarray]],
    picks: Mapping[str, tuple[str, str]],
    path: str | Path,
    title: str = "",
    values: Mapping[tuple[str, str, str], float] | None = None,
    methods: Sequence[str] | None = None,
    clip: float = 99.0,
) -> Path:
    """Figure 1: for each metric its best and worst image, the input and each method's map over it.

    Args:
        images: image id -> (H,W,3) float array in [0,1].
        maps: method -> image id -> (H,W) saliency map (any resolution, stretched over the image).
        picks: metric id -> (best image id, worst image id), e.g. from :func:`pick_best_worst`.
        path: PNG to write.
        values: ``(method, image id, metric) -> value`` in natural units, written under each map as
            the paper presents it (x100, bars).
        methods: the methods shown, in this order (default: every method of ``maps``, paper order).
        clip: each map is clipped at this percentile before it is scaled to [0, 1] for display.
    """
    methods = [m for m in (methods or method_order(list(maps))) if m in maps]
    rows = [
        (metric, which, ids[k]) for metric, ids in picks.items() for k, which in enumerate(("best", "worst"))
    ]
    if not rows or not methods:
        raise DataError("figure 1: no picks or no methods given")
    cols = 1 + len(methods)
    fig = Figure(figsize=(1.75 * cols + 2.6, 1.95 * len(rows) + 0.9))
    axes = np.asarray(fig.subplots(len(rows), cols, squeeze=False))
    shown = None
    for r, (metric, which, image_id) in enumerate(rows):
        image = images.get(image_id)
        _overlay(axes[r, 0], image, None)
        column = next((c for c in COLUMNS.values() if c.metric == metric), None)
        name = column.header if column else metric
        short = image_id.rsplit("/", 1)[-1]
        axes[r, 0].set_ylabel(f"{name} {which}\n{short}", fontsize=10, rotation=0, ha="right", va="center")
        for c, method in enumerate(methods, start=1):
            ax = axes[r, c]
            shown = (
                _overlay(ax, image, maps[method].get(image_id) if image is not None else None, clip) or shown
            )
            value = (values or {}).get((method, image_id, metric))
            if value is not None and np.isfinite(value):
                ax.set_xlabel(f"{name} {column.present(value) if column else value:.1f}", fontsize=8)
    axes[0, 0].set_title("Input", fontsize=11)
    for c, method in enumerate(methods, start=1):
        axes[0, c].set_title(method_display(method).label, fontsize=11)
    if shown is not None:
        fig.colorbar(
            shown, ax=axes, fraction=0.015, pad=0.01, label=f"saliency (clipped at p{clip:g}, scaled)"
        )
    fig.suptitle(title or "Figure 1. Best and worst image per metric, each method's map", fontsize=14)
    return save_figure(fig, path)


def figure_explain(
    pixels: np.ndarray,
    maps: dict[str, np.ndarray],
    title: str,
    path: str | Path,
    notes: dict[str, str] | None = None,
    clip: float = 99.0,
) -> Path:
    """One image and each method's map as an overlay with its own colorbar, side by side.

    Args:
        pixels: (H,W,3) image in [0,1] (after the model's resize and crop).
        maps: method label -> (H,W) map.
        title: the figure title (model, target class and its probability).
        path: PNG written.
        notes: method label -> text under its panel (metric values).
        clip: maps are clipped at this percentile before display, so that a few extreme pixels do not
            wash out the rest (the stored map is not changed).
    """
    n = len(maps) + 1
    fig = Figure(figsize=(3.2 * n, 3.6 if not notes else 4.0))
    axes = fig.subplots(1, n, squeeze=False)[0]
    axes[0].imshow(np.clip(pixels, 0.0, 1.0))
    axes[0].set_title("image", fontsize=11)
    for ax, (label, m) in zip(axes[1:], maps.items()):
        hi = float(np.percentile(m, clip)) if np.isfinite(m).all() else float(np.nanmax(m))
        lo = float(np.min(m))
        ax.imshow(np.clip(pixels, 0.0, 1.0))
        shown = ax.imshow(np.clip(m, lo, hi), cmap="jet", alpha=0.5, vmin=lo, vmax=hi if hi > lo else lo + 1)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(label, fontsize=11)
        if notes and label in notes:
            ax.set_xlabel(notes[label], fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)
