"""Localization metrics on hand-drawn 6x8 maps and boxes, with exact expected values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from salbench.errors import DataError
from salbench.metrics import METRICS, Metric, MetricInputs, compute
from salbench.metrics.localization import (
    LOCALIZATION,
    LocalizationParams,
    binarise,
    boxes_to_masks,
    energy_pointing_game,
    energy_pointing_game_mask,
    iou_mask,
    localization_error,
    map_boxes,
    official_metric,
    pointing_game,
    pointing_game_mask,
)

H, W = 6, 8
NAN = math.nan


def _maps() -> torch.Tensor:
    m = torch.zeros(4, H, W)
    # 0: a 2x3 block (rows 1-2, cols 1-3) with its peak 2 at (row 1, col 2) + an isolated 0.5 at (4, 6).
    m[0, 1:3, 1:4] = 1.0
    m[0, 1, 2] = 2.0
    m[0, 4, 6] = 0.5
    # 1: constant.
    m[1] = 1.0
    # 2: two tied maxima, (row 0, col 7) first in raster order, then (row 5, col 0).
    m[2, 0, 7] = 1.0
    m[2, 5, 0] = 1.0
    # 3: a 2x2 block in the top-left corner.
    m[3, 0:2, 0:2] = 1.0
    return m


def _boxes() -> list[np.ndarray]:
    return [
        np.array([[0, 0, 2, 2], [5, 3, 7, 5]]),  # xmin, ymin, xmax, ymax (inclusive)
        np.array([[0, 0, 3, 5]]),  # left half
        np.array([[0, 4, 1, 5]]),  # around (row 5, col 0) only
        np.array([[0, 0, 1, 0]]),  # 2 pixels inside the 2x2 block: IoU exactly 0.5
    ]


# Hand values below: ratios of sums of dyadic map values or of pixel counts, computed in float64 (one or
# two roundings): atol 1e-12 is exact up to that rounding.


def test_energy_pointing_game() -> None:
    # 0: inside box 1: 1 + 2 + 1 + 1 = 5, inside box 2: 0.5; total 7.5 -> 5.5 / 7.5.
    expected = [5.5 / 7.5, 0.5, 0.5, 0.5]
    np.testing.assert_allclose(energy_pointing_game(_maps(), _boxes()).numpy(), expected, atol=1e-12)


def test_pointing_game_and_tie_rule() -> None:
    # 2: the first maximum in raster order (x=7, y=0) is outside; the second (x=0, y=5) is inside.
    np.testing.assert_array_equal(pointing_game(_maps(), _boxes()).numpy(), [1.0, NAN, 0.0, 1.0])
    # distance from (x=7, y=0) to the box x 0..1, y 4..5 is sqrt(6^2 + 4^2) = 7.21.
    assert pointing_game(_maps()[2:3], _boxes()[2:3], tolerance=7.0).item() == 0.0
    assert pointing_game(_maps()[2:3], _boxes()[2:3], tolerance=7.3).item() == 1.0


def test_binarise_and_map_boxes() -> None:
    b = binarise(_maps())
    assert int(b[0].sum()) == 7 and not bool(b[1].any()) and int(b[2].sum()) == 2
    largest = map_boxes(_maps(), "largest")
    everything = map_boxes(_maps(), "all")
    # 0: largest component = the block; 1: nothing above the mean; 2: tie of two single pixels -> first.
    assert largest.tolist() == [[1, 1, 3, 2], [-1, -1, -1, -1], [7, 0, 7, 0], [0, 0, 1, 1]]
    assert everything.tolist() == [[1, 1, 6, 4], [-1, -1, -1, -1], [0, 0, 7, 5], [0, 0, 1, 1]]


def test_localization_error_variants() -> None:
    # 0: pred (1,1,3,2) area 6 vs box (0,0,2,2) area 9: intersection 2x2 = 4 -> IoU 4/11.
    le = localization_error(_maps(), _boxes())
    np.testing.assert_allclose(le.numpy(), [7 / 11, NAN, 1.0, 0.5], atol=1e-12)
    # all pixels: pred (1,1,6,4) area 24; both boxes intersect it in 4 pixels -> IoU 4/29; image 2:
    # pred = whole 6x8 map, box area 4 -> IoU 4/48.
    le_all = localization_error(_maps(), _boxes(), component="all")
    np.testing.assert_allclose(le_all.numpy(), [25 / 29, NAN, 11 / 12, 0.5], atol=1e-12)
    # ILSVRC threshold: IoU >= 0.5 counts as correct (image 3 sits exactly on 0.5).
    le_t = localization_error(_maps(), _boxes(), iou_threshold=0.5)
    np.testing.assert_array_equal(le_t.numpy(), [1.0, NAN, 1.0, 0.0])


def test_official_metric() -> None:
    correct = torch.tensor([True, True, False, True])
    np.testing.assert_allclose(
        official_metric(_maps(), _boxes(), correct).numpy(), [7 / 11, NAN, 1.0, 0.5], atol=1e-12
    )
    wrong = torch.zeros(4, dtype=torch.bool)
    np.testing.assert_array_equal(official_metric(_maps(), _boxes(), wrong).numpy(), [1.0] * 4)
    with pytest.raises(DataError, match="correct"):
        official_metric(_maps(), _boxes(), torch.ones(3, dtype=torch.bool))


def test_mask_versions() -> None:
    masks = boxes_to_masks(_boxes(), H, W)
    assert int(masks[0].sum()) == 18 and int(masks[3].sum()) == 2
    torch.testing.assert_close(
        energy_pointing_game_mask(_maps(), masks), energy_pointing_game(_maps(), _boxes())
    )
    np.testing.assert_array_equal(pointing_game_mask(_maps(), masks).numpy(), [1.0, NAN, 0.0, 1.0])
    # 0: binarised 7 pixels (block + the isolated one) vs 18 mask pixels, 4 + 1 shared -> 5 / 20;
    # 2: 1 of 2 binarised pixels in a 4-pixel mask -> 1 / 5; 3: 2 of 4 -> 2 / 4.
    np.testing.assert_allclose(iou_mask(_maps(), masks).numpy(), [5 / 20, NAN, 1 / 5, 0.5], atol=1e-12)
    with pytest.raises(DataError, match="masks"):
        iou_mask(_maps(), masks[:, :5])


def test_missing_boxes_non_finite_maps_and_bad_boxes() -> None:
    maps = _maps()[:2].clone()
    maps[1, 0, 0] = math.inf
    boxes = [np.zeros((0, 4)), np.array([[0, 0, 3, 5]])]
    for fn in (energy_pointing_game, pointing_game, localization_error):
        assert np.isnan(fn(maps, boxes).numpy()).all(), fn.__name__
    with pytest.raises(DataError, match=r"boxes\[1\]"):
        energy_pointing_game(_maps()[:2], [np.array([[0, 0, 1, 1]]), np.array([[0, 0, 8, 1]])])
    with pytest.raises(DataError, match=r"boxes\[0\]"):
        pointing_game(_maps()[:1], [np.array([[3, 0, 2, 1]])])
    with pytest.raises(DataError, match="boxes"):
        localization_error(_maps(), _boxes()[:3])


@pytest.mark.numeric
def test_batched_equals_per_image_loop() -> None:
    """float64 outputs (energy: ratios of <= 48-term sums, ~1e-15 in any order; the rest counts): the
    float64 defaults of ``assert_close`` (rtol 1e-7, atol 1e-7) are ample."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(5, H, W, generator=gen) ** 4
    boxes = [np.array([[i, 0, i + 2, 3], [0, 2, 1, 5]]) for i in range(5)]
    masks = boxes_to_masks(boxes, H, W)
    correct = torch.tensor([True, False, True, True, False])
    batched = {
        "epg": energy_pointing_game(maps, boxes),
        "spg": pointing_game(maps, boxes, tolerance=1.5),
        "le": localization_error(maps, boxes),
        "om": official_metric(maps, boxes, correct, iou_threshold=0.5),
        "epg_m": energy_pointing_game_mask(maps, masks),
        "spg_m": pointing_game_mask(maps, masks),
        "iou_m": iou_mask(maps, masks),
    }
    for i in range(5):
        m, b, k = maps[i : i + 1], boxes[i : i + 1], masks[i : i + 1]
        single = {
            "epg": energy_pointing_game(m, b),
            "spg": pointing_game(m, b, tolerance=1.5),
            "le": localization_error(m, b),
            "om": official_metric(m, b, correct[i : i + 1], iou_threshold=0.5),
            "epg_m": energy_pointing_game_mask(m, k),
            "spg_m": pointing_game_mask(m, k),
            "iou_m": iou_mask(m, k),
        }
        for key, value in single.items():
            torch.testing.assert_close(batched[key][i : i + 1], value, equal_nan=True, msg=key)


def test_declarations_and_group() -> None:
    names = {
        "energy_pointing_game": True,
        "pointing_game": True,
        "localization_error": False,
        "official_metric": False,
        "energy_pointing_game_mask": True,
        "pointing_game_mask": True,
        "iou_mask": True,
    }
    assert LOCALIZATION.metrics == tuple(names) and not LOCALIZATION.needs_model
    for name, higher in names.items():
        d = METRICS.get(name)
        assert d.higher_is_better is higher and d.category == "localization" and d.group == "localization"
    assert METRICS.get("official_metric").requires == ("boxes", "correct")
    metric = Metric("localization_error", LocalizationParams(component="all"))
    inputs = MetricInputs(maps=_maps(), boxes=_boxes(), correct=torch.ones(4, dtype=torch.bool))
    scores = compute(LOCALIZATION, inputs, metric.params)
    assert list(scores) == ["energy_pointing_game", "pointing_game", "localization_error", "official_metric"]
    metric.update(scores["localization_error"])
    summary = metric.summary()
    assert summary.value == pytest.approx(np.mean([25 / 29, 11 / 12, 0.5]), rel=1e-15)  # same 3 values
    assert (summary.n_images, summary.n_nan) == (3, 1)
    om = compute(LOCALIZATION, inputs, LocalizationParams(), ["official_metric"])
    np.testing.assert_allclose(om["official_metric"], [7 / 11, NAN, 1.0, 0.5])
    spg = compute(LOCALIZATION, inputs, LocalizationParams(tolerance=7.3), ["pointing_game"])
    np.testing.assert_array_equal(spg["pointing_game"], [1.0, NAN, 1.0, 1.0])
    no_correct = compute(LOCALIZATION, MetricInputs(maps=_maps(), boxes=_boxes()), LocalizationParams())
    assert "official_metric" not in no_correct
