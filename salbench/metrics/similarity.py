"""Similarity of two saliency maps, for the randomisation sanity checks (Adebayo et al., NeurIPS 2018).

- ``sanity_spearman_abs``: Spearman rank correlation of the maps as the benchmark stores them (already
  absolute-valued or non-negative for every registered method; the paper's "absolute value" variant);
- ``sanity_spearman``: Spearman rank correlation of signed maps;
- ``sanity_ssim``: ``skimage.metrics.structural_similarity`` (``data_range=1``, 7x7 uniform window,
  sample covariance) of the maps clipped to [0, 1];
- ``sanity_hog``: Pearson correlation of the ``skimage.feature.hog`` vectors (:data:`HOG_PARAMS`) of
  the maps clipped to [0, 1].

A correlation is undefined when a map is constant; it is then 1 when the two maps are identical and 0
otherwise (a constant map shares no ranking).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

METRIC_IDS = ("sanity_spearman_abs", "sanity_spearman", "sanity_ssim", "sanity_hog")
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (3, 3), "block_norm": "L2-Hys"}


def _correlation(x: np.ndarray, y: np.ndarray, fn: Callable) -> float:
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if np.array_equal(x, y):  # exactly 1 by definition, free of rounding (controls must score 1)
        return 1.0
    if x.min() == x.max() or y.min() == y.max():
        return 0.0
    return float(np.clip(fn(x, y).statistic, -1.0, 1.0))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (any shape, flattened; ties get average ranks)."""
    return _correlation(a, b, spearmanr)


def ssim_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of two (H,W) maps clipped to [0, 1]; ``data_range=1``, defaults.

    Maps smaller than the 7 x 7 window use the largest odd window that fits (NaN below 3 x 3).
    """
    a, b = (np.clip(np.asarray(m, np.float64), 0.0, 1.0) for m in (a, b))
    side = min(a.shape)
    if side >= 7:
        return float(structural_similarity(a, b, data_range=1.0))
    win = side if side % 2 == 1 else side - 1
    return float(structural_similarity(a, b, data_range=1.0, win_size=win)) if win >= 3 else float("nan")


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the HOG vectors (Dalal & Triggs 2005; :data:`HOG_PARAMS`) of two (H,W) maps.

    Maps smaller than one block (3 x 3 cells of 8 pixels, 24 pixels) use cells of ``min(H, W) // 3``
    pixels, so that one block fits (NaN below 3 x 3).
    """
    params = dict(HOG_PARAMS)
    side = min(np.shape(a))
    if side < 24:
        if side < 3:
            return float("nan")
        params["pixels_per_cell"] = (side // 3, side // 3)
    ha, hb = (hog(np.clip(np.asarray(m, np.float64), 0.0, 1.0), **params) for m in (a, b))
    return _correlation(ha, hb, pearsonr)


def similarity_scores(
    reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-image :data:`METRIC_IDS` between ``(maps (N,H,W), signed maps (N,H,W))`` pairs -> (N,) each."""
    (maps0, signed0), (maps1, signed1) = reference, other
    fns = (
        lambda i: rank_correlation(maps0[i], maps1[i]),
        lambda i: rank_correlation(signed0[i], signed1[i]),
        lambda i: ssim_similarity(maps0[i], maps1[i]),
        lambda i: hog_similarity(maps0[i], maps1[i]),
    )
    return {k: np.array([fn(i) for i in range(len(maps0))]) for k, fn in zip(METRIC_IDS, fns)}
