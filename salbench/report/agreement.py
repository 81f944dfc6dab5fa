"""Do the metrics rank the methods alike? Kendall tau-b between metric columns, with its uncertainty.

:func:`rank_agreement` is scipy's tau-b over the methods two columns share; :func:`rank_agreement_samples`
computes the same for many resampled tables at once (pair signs, vectorised), from which
:func:`tau_intervals` takes percentile intervals; :func:`figure_rank_agreement` draws the heatmap.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import kendalltau

from salbench.report.figures import save_figure
from salbench.report.presentation import COLUMNS
from salbench.report.results import ResultsView, presented_higher_is_better, resampled_values
from salbench.stats import Bootstrap
from salbench.store.outputs import write_csv


def rank_agreement(values: pd.DataFrame, higher_is_better: Mapping[str, bool]) -> pd.DataFrame:
    """Kendall tau (``scipy.stats.kendalltau``, tau-b) between the method rankings of every column pair.

    Args:
        values: methods x metric columns (presented values).
        higher_is_better: direction of each column; values are oriented so that +1 means the two
            metrics rank the methods identically from best to worst.

    Returns:
        Square frame of tau over the methods both columns cover; NaN with fewer than 3 such methods
        or a constant column.
    """
    oriented = pd.DataFrame({k: values[k] if higher_is_better[k] else -values[k] for k in values.columns})
    keys = list(oriented.columns)
    tau = pd.DataFrame(np.nan, index=keys, columns=keys)
    for i, a in enumerate(keys):
        for b in keys[i:]:  # tau is symmetric
            both = oriented[a].notna() & oriented[b].notna()
            x, y = oriented.loc[both, a], oriented.loc[both, b]
            if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tau.loc[a, b] = tau.loc[b, a] = kendalltau(x.to_numpy(), y.to_numpy()).statistic
    return tau


def rank_agreement_samples(samples: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Kendall tau-b between every column pair of each resampled methods x metrics table, vectorised.

    tau-b = sum of the products of the pair signs / sqrt(untied pairs in x * untied pairs in y), over
    the pairs of methods both columns cover (the value :func:`rank_agreement` computes with scipy).

    Args:
        samples: (B, methods, metrics) presented values; NaN where a method lacks a metric (the same
            methods in every sample).
        higher_is_better: direction of each metric column.

    Returns:
        (B, metrics, metrics) tau; NaN where fewer than 3 methods are covered or a column is constant.
    """
    x = np.asarray(samples, dtype=float) * np.where(np.asarray(higher_is_better), 1.0, -1.0)
    b, m, k = x.shape
    i, j = np.triu_indices(m, 1)
    signs = np.sign(x[:, i, :] - x[:, j, :])  # (B, pairs, metrics)
    valid = np.isfinite(signs)
    signs = np.where(valid, signs, 0.0)
    covered = np.isfinite(x[0])  # (methods, metrics)
    tau = np.full((b, k, k), np.nan)
    for a in range(k):
        for c in range(a, k):
            if int((covered[:, a] & covered[:, c]).sum()) < 3:
                continue
            both = valid[:, :, a] & valid[:, :, c]
            sa, sc = signs[:, :, a] * both, signs[:, :, c] * both
            denominator = np.sqrt((sa != 0).sum(axis=1) * (sc != 0).sum(axis=1).astype(float))
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.where(denominator > 0, (sa * sc).sum(axis=1) / denominator, np.nan)
            tau[:, a, c] = tau[:, c, a] = value
    return tau


def figure_rank_agreement(
    tau: pd.DataFrame,
    path: str | Path,
    title: str = "",
    low: pd.DataFrame | None = None,
    high: pd.DataFrame | None = None,
) -> Path:
    """Heatmap of a :func:`rank_agreement` matrix (diverging, colour-blind-safe PuOr, annotated; with
    ``low``/``high`` each cell also prints the bootstrap interval of its tau)."""
    n = len(tau)
    intervals = low is not None and high is not None
    scale = 1.25 if intervals else 1.0
    fig = Figure(figsize=(1.0 + 0.75 * n * scale, 0.8 + 0.7 * n * scale))
    ax = fig.subplots()
    image = ax.imshow(tau.to_numpy(dtype=float), cmap="PuOr", vmin=-1.0, vmax=1.0)
    labels = [COLUMNS[k].header if k in COLUMNS else str(k) for k in tau.index]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=11)
    ax.set_yticks(range(n), labels, fontsize=11)
    for i in range(n):
        for j in range(n):
            v = tau.iat[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
            if intervals and i != j and np.isfinite(v) and np.isfinite(low.iat[i, j]):
                text += f"\n[{low.iat[i, j]:.2f}, {high.iat[i, j]:.2f}]"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7 if intervals else 9,
                color="white" if abs(v) > 0.6 else "black",
            )
    ax.set_xlabel("metric", fontsize=12)
    ax.set_ylabel("metric", fontsize=12)
    fig.colorbar(
        image,
        ax=ax,
        label="Kendall tau of the method rankings" + (" [bootstrap interval]" if intervals else ""),
    )
    ax.set_title(title or "Rank agreement between metrics (Kendall tau over methods)", fontsize=13)
    fig.tight_layout()
    return save_figure(fig, path)


def tau_intervals(
    frame: pd.DataFrame, per_image: pd.DataFrame | None, values: pd.DataFrame, settings: Bootstrap
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Percentile intervals of each Kendall tau over resampled results (paired over images where the
    per-image values are known, :func:`~salbench.report.results.resampled_values`); None without any."""
    if settings.resamples == 0:
        return None, None
    samples, _, how = resampled_values(frame, per_image, settings)
    if not how:
        return None, None
    keys = list(values.columns)
    view = ResultsView(frame)
    tables = [
        view.with_values(row).presented(keys, "groundtruth").reindex(values.index)[keys].to_numpy()
        for row in samples
    ]
    directions = [presented_higher_is_better(frame, k) for k in keys]
    taus = rank_agreement_samples(np.stack(tables), directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        ends = np.nanquantile(taus, [(1 - settings.level) / 2, (1 + settings.level) / 2], axis=0)
    return (pd.DataFrame(ends[0], index=keys, columns=keys), pd.DataFrame(ends[1], index=keys, columns=keys))


def write_tau(
    path: Path, tau: pd.DataFrame, low: pd.DataFrame | None, high: pd.DataFrame | None, settings: Bootstrap
) -> None:
    """The rank agreement as a tidy CSV: one row per metric pair, with the interval where computed."""
    keys = list(tau.index)
    rows = []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            rows.append(
                {
                    "metric_a": COLUMNS[a].metric,
                    "metric_b": COLUMNS[b].metric,
                    "kendall_tau": tau.at[a, b],
                    "ci_low": np.nan if low is None else low.at[a, b],
                    "ci_high": np.nan if high is None else high.at[a, b],
                    "ci_level": settings.level if low is not None else np.nan,
                }
            )
    write_csv(path, pd.DataFrame(rows))
