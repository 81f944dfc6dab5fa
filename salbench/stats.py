"""How sure a mean over images is: a seeded percentile bootstrap over images, vectorised over rows.

Every ``results.csv`` value that is a mean of per-image values carries the sample standard deviation of
those values (``std``, ddof = 1) and a two-sided percentile bootstrap interval of the mean (``ci_low``,
``ci_high`` at ``ci_level``; Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, sec. 13.3):
``resamples`` resamples of the images with replacement, the interval between the ``(1 - level) / 2``
and ``(1 + level) / 2`` quantiles (linear interpolation) of their means.

The interval is exactly ``scipy.stats.bootstrap((x,), np.mean, n_resamples=B, confidence_level=level,
method="percentile", vectorized=True, rng=np.random.default_rng(seed))``: the same index draws
(``Generator.integers(0, n, (B, n))`` from a fresh generator of ``seed``), the same means and
``scipy.stats.quantile``. Computing it here instead lets every row with ``n`` values share one draw of
indices and one gather, so ~1,600 rows x 1,000 resamples x 64 images take about a second.

Every row is resampled from a fresh generator of the same ``seed``: reruns and row order change
nothing, and two rows over the same ``n`` images (two methods' values of one metric) are resampled
with the same image indices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from salbench.errors import ConfigError

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
_CHUNK_VALUES = 4_000_000
"""Resampled values gathered at once (32 MB of float64): bounds the memory of one chunk of rows."""


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """Settings of the percentile bootstrap (``run.ci_resamples``, ``run.ci_level``, ``run.ci_seed``).

    Attributes:
        resamples: B, resamples of the images per interval (0: no intervals, only ``std``).
        level: two-sided confidence level in (0, 1).
        seed: seed of every row's fresh generator.
    """

    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 0:
            raise ConfigError(
                f"config key 'run.ci_resamples' must be an integer >= 0, got {self.resamples!r}"
            )
        if not 0.0 < float(self.level) < 1.0:
            raise ConfigError(
                f"config key 'run.ci_level' must lie strictly between 0 and 1, got {self.level!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"config key 'run.ci_seed' must be an integer >= 0, got {self.seed!r}")

    @classmethod
    def from_run(cls, run: Any) -> Bootstrap:
        """The settings of a :class:`~salbench.config.RunConfig` (defaults where it has none)."""
        return cls(
            getattr(run, "ci_resamples", DEFAULT_RESAMPLES),
            getattr(run, "ci_level", DEFAULT_LEVEL),
            getattr(run, "ci_seed", DEFAULT_SEED),
        )

    def describe(self) -> dict[str, Any]:
        """What a manifest records."""
        return {"method": "percentile bootstrap over images", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class MeanSummary:
    """The mean of one row's finite per-image values and how sure it is.

    Attributes:
        value: mean of the finite values (NaN when none).
        n: finite values averaged.
        n_other: non-finite values left out.
        std: sample standard deviation (ddof = 1) of the finite values; NaN when n < 2.
        low: lower end of the bootstrap interval of the mean; NaN when n < 2 or no resamples.
        high: upper end.
        level: the interval's confidence level; NaN where there is no interval.
    """

    value: float
    n: int
    n_other: int
    std: float
    low: float
    high: float
    level: float

    def columns(self) -> dict[str, float | int]:
        """The ``results.csv`` columns of this summary."""
        return {
            "value": self.value,
            "n_images": self.n,
            "n_skipped": self.n_other,
            "std": self.std,
            "ci_low": self.low,
            "ci_high": self.high,
            "ci_level": self.level,
        }


def resample_indices(n: int, settings: Bootstrap) -> np.ndarray:
    """(B, n) int64 image indices of the resamples: scipy's draw from a fresh generator of ``seed``."""
    return np.random.default_rng(settings.seed).integers(0, n, (settings.resamples, n))


def bootstrap_means(values: np.ndarray, settings: Bootstrap) -> np.ndarray:
    """(R, B) means of every resample of each row of the (R, n) finite ``values``."""
    values = np.asarray(values, dtype=np.float64)
    rows, n = values.shape
    index = resample_indices(n, settings)
    out = np.empty((rows, settings.resamples))
    step = max(1, _CHUNK_VALUES // max(1, index.size))
    for start in range(0, rows, step):
        part = values[start : start + step]
        # (r, B, n) -> (r B, n): each resample's mean reduced exactly as scipy reduces a (B, n) array
        out[start : start + step] = part[:, index].reshape(-1, n).mean(axis=-1).reshape(len(part), -1)
    return out


def percentile_intervals(values: np.ndarray, settings: Bootstrap) -> tuple[np.ndarray, np.ndarray]:
    """(R,) lower and upper ends of the percentile bootstrap interval of each row's mean.

    Args:
        values: (R, n) finite per-image values, n >= 2, one row per result.
        settings: resamples, level, seed.
    """
    alpha = (1.0 - settings.level) / 2.0
    means = bootstrap_means(values, settings)
    ends = stats.quantile(means, np.array([alpha, 1.0 - alpha]), axis=-1)
    return ends[..., 0], ends[..., 1]


def summarise_means(columns: Sequence[Any], settings: Bootstrap = Bootstrap()) -> list[MeanSummary]:
    """A :class:`MeanSummary` of each column of per-image values (NaN/inf values left out and counted).

    Columns with the same count of finite values are resampled together (one index draw, one gather).
    """
    arrays = [np.asarray(c, dtype=np.float64).reshape(-1) for c in columns]
    finite = [a[np.isfinite(a)] for a in arrays]
    low = np.full(len(arrays), math.nan)
    high = np.full(len(arrays), math.nan)
    if settings.resamples > 0:
        by_n: dict[int, list[int]] = {}
        for i, f in enumerate(finite):
            if f.size >= 2:
                by_n.setdefault(f.size, []).append(i)
        for members in by_n.values():
            lo, hi = percentile_intervals(np.stack([finite[i] for i in members]), settings)
            low[members], high[members] = lo, hi
    out = []
    for i, (a, f) in enumerate(zip(arrays, finite)):
        has_interval = math.isfinite(low[i])
        out.append(
            MeanSummary(
                value=float(f.mean()) if f.size else math.nan,
                n=int(f.size),
                n_other=int(a.size - f.size),
                std=float(f.std(ddof=1)) if f.size >= 2 else math.nan,
                low=float(low[i]),
                high=float(high[i]),
                level=float(settings.level) if has_interval else math.nan,
            )
        )
    return out


def summarise_mean(values: Any, settings: Bootstrap = Bootstrap()) -> MeanSummary:
    """:func:`summarise_means` of one column."""
    return summarise_means([values], settings)[0]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm, *Scand. J. Statist.* 1979): the ``i``-th smallest of
    ``m`` is multiplied by ``m - i`` (i from 0), made non-decreasing in that order and capped at 1; NaN
    values are left out of ``m`` and stay NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (``scipy.stats.wilcoxon``, zero
    differences dropped as Wilcoxon did); 1.0 when every difference is zero (nothing to test)."""
    d = np.asarray(differences, dtype=np.float64)
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_comparison(
    values: Mapping[str, Any],
    higher_is_better: bool,
    settings: Bootstrap = Bootstrap(),
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every method against the best one on the same images: which are not significantly worse.

    The images compared are those with a finite value for every method. The best method has the best
    mean; each other method's paired differences ``best - method`` (oriented so that positive means
    the best is better) get the bootstrap interval of their mean (:func:`summarise_means`, the same
    seeded resamples) and a Wilcoxon signed-rank p-value, Holm-corrected over the comparisons with the
    best. A method is ``tied_with_best`` when its corrected p-value is at least ``alpha``.

    Args:
        values: method -> (n,) per-image values, in the same image order for every method.
        higher_is_better: direction of the metric.
        settings: bootstrap settings.
        alpha: family-wise significance level of the comparisons with the best.

    Returns:
        One row per method, best first (rank by mean): ``method, rank, n_images, mean, diff_to_best,
        diff_ci_low, diff_ci_high, p_value, p_holm, tied_with_best``.
    """
    methods = list(values)
    matrix = np.stack([np.asarray(values[m], dtype=np.float64).reshape(-1) for m in methods])
    matrix = matrix[:, np.isfinite(matrix).all(axis=0)]
    oriented = matrix if higher_is_better else -matrix
    means = matrix.mean(axis=1) if matrix.shape[1] else np.full(len(methods), math.nan)
    order = np.argsort(-(means if higher_is_better else -means), kind="stable")
    best = int(order[0])
    diffs = [oriented[best] - oriented[i] for i in range(len(methods))]
    spread = summarise_means(diffs, settings)
    p = np.array([math.nan if i == best else signed_rank_p(diffs[i]) for i in range(len(methods))])
    adjusted = holm(p)
    rows = []
    for rank, i in enumerate(order, start=1):
        rows.append(
            {
                "method": methods[i],
                "rank": rank,
                "n_images": int(matrix.shape[1]),
                "mean": float(means[i]),
                "diff_to_best": spread[i].value,
                "diff_ci_low": spread[i].low,
                "diff_ci_high": spread[i].high,
                "p_value": float(p[i]),
                "p_holm": float(adjusted[i]),
                "tied_with_best": bool(i == best or adjusted[i] >= alpha),
            }
        )
    return pd.DataFrame(rows)


DEFAULT_BOOTSTRAP = Bootstrap()
"""The default settings (1,000 resamples, 95%, seed 0)."""
