"""Gomez et al.'s metrics: exact values on an analytic model, agreement with saliency-maps-metrics 0.0.26
on a tiny CNN (single-image batches), the non-multiple step case, per-image normalisation, streaming.

Tolerances: every comparison of two computations runs both in float64 (model, images, maps; the
package under ``default_dtype(float64)`` so that its blur kernel and masks are float64 too), where
batch layouts and thread counts change results by ~1e-16 relative; see ``tests/_tolerance.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from saliency_maps_metrics.multi_step_metrics import Deletion, Insertion
from saliency_maps_metrics.single_step_metrics import ADD, IIC_AD
from torch import nn

from salbench.api import build_metric
from salbench.errors import ConfigError, DataError
from salbench.metrics.base import METRICS
from salbench.metrics.engine import ForwardCounter
from salbench.metrics.gomez import (
    GOMEZ_DELETION,
    GOMEZ_INSERTION,
    GOMEZ_SINGLE,
    blur_kernel_size,
    box_blur,
    curve_scores,
    filling_images,
    pixels_per_step,
    single_step_scores,
)
from salbench.metrics.shared import StartCache
from tests._tolerance import F64_REL, default_dtype, double, dyadic_map

ID_MEAN, ID_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
IDS = ("iic", "ad_gomez", "add", "dauc", "dc", "iauc", "ic")


@pytest.fixture
def trapz(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package calls ``np.trapz``, removed in NumPy 2.4; alias it for the reference only."""
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


class AffineMean(nn.Module):
    """p(class 0) = 0.25 + 0.5 * mean of all input values, as logits [log p, log(1 - p)]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = 0.25 + 0.5 * x.mean(dim=(1, 2, 3))
        return torch.stack([p.log(), (1 - p).log()], dim=1)


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0, classes: int = 4) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
            self.fc.weight.mul_(0.5)  # logits a few units apart: probabilities away from 0 and 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(z.flatten(1))


def softmaxed(model: nn.Module) -> nn.Module:
    """The package expects probabilities from the model; ours applies the softmax itself."""
    return nn.Sequential(model, nn.Softmax(dim=1)).eval()


# Hand case: a 4x4 image of four 2x2 cells, a 2x2 map; nearest upsampling gives each map cell one
# image cell. Order by decreasing saliency: cells (0,1), (1,0), (1,1), (0,0) with values .5, 0, .25, 1.
HAND_CELLS = torch.tensor([[1.0, 0.5], [0.0, 0.25]], dtype=torch.float64)
HAND_MAP = torch.tensor([[[0.1, 0.9], [0.4, 0.3]]], dtype=torch.float64)


def hand_image() -> torch.Tensor:
    cells = HAND_CELLS.repeat_interleave(2, 0).repeat_interleave(2, 1)
    return cells.expand(1, 3, 4, 4).clone()


@pytest.mark.numeric
def test_hand_deletion_and_insertion_exact() -> None:
    """float64 throughout: a mean of 48 dyadic values, log, softmax: ~1e-16 error, so 1e-12 absolute
    on probabilities, their areas and (drop spread >= 0.03) their correlation."""
    img, t = hand_image(), torch.tensor([0])
    # p = 0.25 + 0.5 * (sum of remaining cell values) / 4; deletion removes .5, 0, .25, 1 in turn
    d_curve = [0.46875, 0.40625, 0.40625, 0.375, 0.25]
    i_curve = [0.25, 0.3125, 0.3125, 0.34375, 0.46875]
    dele = curve_scores(AffineMean(), img, HAND_MAP, t, game="deletion", mean=ID_MEAN, std=ID_STD)
    ins = curve_scores(
        AffineMean(), img, HAND_MAP, t, game="insertion", filling="black", mean=ID_MEAN, std=ID_STD
    )
    np.testing.assert_allclose(dele["curve"][0], d_curve, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ins["curve"][0], i_curve, rtol=0, atol=1e-12)
    assert dele["dauc"][0] == pytest.approx((1.90625 - 0.46875 / 2 - 0.25 / 2) / 4, abs=1e-12)  # 0.38671875
    assert ins["iauc"][0] == pytest.approx((1.6875 - 0.25 / 2 - 0.46875 / 2) / 4, abs=1e-12)  # 0.33203125
    np.testing.assert_allclose(dele["step_saliency"][0], [0.9, 0.4, 0.3, 0.1], rtol=1e-15)  # one cell each
    # drops (= gains) per step: .0625, 0, .03125, .125 against saliency .9, .4, .3, .1
    drops, sal = np.array([0.0625, 0.0, 0.03125, 0.125]), np.array([0.9, 0.4, 0.3, 0.1])
    dc, sc = drops - drops.mean(), sal - sal.mean()
    expected = (dc * sc).sum() / math.sqrt((dc**2).sum() * (sc**2).sum())
    assert dele["dc"][0] == pytest.approx(expected, abs=1e-12)
    assert ins["ic"][0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.numeric
def test_hand_single_step_exact_and_per_image_minmax() -> None:
    """float64 model and images, 0/1 masks (exact through the float32 min-max): ~1e-16 errors, so 1e-12
    absolute on the probabilities and on AD/ADD (divided by Y = 0.75)."""
    img = torch.ones(2, 3, 4, 4, dtype=torch.float64)  # p(original) = 0.75
    binary = torch.zeros(4, 4, dtype=torch.float64)
    binary[1:3, 1:3] = 1.0  # 4 of 16 pixels salient
    maps = torch.stack([2 + 3 * binary, -7 + 10 * binary])  # same map after per-image min-max
    out = single_step_scores(AffineMean(), img, maps, torch.tensor([0, 0]), mean=ID_MEAN, std=ID_STD)
    np.testing.assert_allclose(out["base_prob"], [0.75, 0.75], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["kept_prob"], [0.375, 0.375], rtol=0, atol=1e-12)  # 4/16 pixels left
    np.testing.assert_allclose(out["removed_prob"], [0.625, 0.625], rtol=0, atol=1e-12)  # 12/16 left
    np.testing.assert_allclose(out["ad_gomez"], [0.5, 0.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["add"], [1 / 6, 1 / 6], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out["iic"], [0.0, 0.0])


def test_box_blur_and_fillings_in_pixel_space() -> None:
    assert [blur_kernel_size(h) for h in (4, 28, 50, 60, 224)] == [9, 9, 11, 13, 45]
    ones = torch.ones(1, 3, 4, 4, dtype=torch.float64)  # float64 sums of 16 terms: default rtol 1e-7 ample
    # a 9x9 window around any pixel of a 4x4 image covers all 16 pixels: 16/81 everywhere
    torch.testing.assert_close(box_blur(ones), torch.full_like(ones, 16 / 81))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    normalised = (ones - 0.5) / 0.25
    torch.testing.assert_close(
        filling_images(normalised, "blur", mean, std), (16 / 81 - 0.5) / 0.25 + 0 * ones
    )
    torch.testing.assert_close(filling_images(normalised, "black", mean, std), torch.full_like(ones, -2.0))
    with pytest.raises(ConfigError, match="filling"):
        filling_images(ones, "grey", mean, std)  # type: ignore[arg-type]


def test_pixels_per_step_rule() -> None:
    assert pixels_per_step(7 * 7) == 1
    assert pixels_per_step(14 * 14) == 1
    assert pixels_per_step(16 * 16) == 1  # 256 // 196
    assert pixels_per_step(28 * 28) == 4
    assert pixels_per_step(21 * 21) == 2  # 441 cells: 220 steps of 2 and a last step of 1
    assert pixels_per_step(28 * 28, bound_max_step=False) == 1


def _case(seed: int, res: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 image and a :func:`~tests._tolerance.dyadic_map` (exact min-max, no ties)."""
    gen = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, 16, 16, generator=gen, dtype=torch.float64)
    return img, dyadic_map(res, gen), torch.tensor([seed % 4])


@pytest.mark.numeric
@pytest.mark.usefixtures("trapz")
@pytest.mark.parametrize("filling", ["black", "blur"])
@pytest.mark.parametrize("res", [(4, 4), (16, 16)], ids=["low_res", "input_res"])
def test_agreement_with_saliency_maps_metrics(filling: str, res: tuple[int, int]) -> None:
    """Single-image batches (the package normalises over the batch). Both sides in float64 on the same
    float64 network: they differ only in batch layout (the package: 1 or 20 rows, ours: up to 1024),
    the blur convolution call and the summation order of areas and correlations, all ~1e-16 relative.
    AD/ADD divide by Y (~0.1..0.9) and the correlations by the spread of probability steps (>= 1e-3):
    ``F64_REL`` (1e-9) relative on everything, with 1e-12 absolute for values near 0.
    IIC is compared only where |O - Y| > 1e-4, far above that noise."""
    model = double(TinyCNN())
    ref_model = softmaxed(model)
    for seed in range(2):
        img, m, t = _case(seed, res)
        single = single_step_scores(model, img, m, t, mean=ID_MEAN, std=ID_STD, filling=filling)  # type: ignore[arg-type]
        with default_dtype(torch.float64):
            ref = IIC_AD(filling)(ref_model, img, m.unsqueeze(1), t) | ADD(filling)(
                ref_model, img, m.unsqueeze(1), t
            )
        assert abs(single["kept_prob"][0] - single["base_prob"][0]) > 1e-4  # IIC not decided by noise
        assert single["iic"][0] == ref["iic"]
        assert single["ad_gomez"][0] == pytest.approx(ref["ad"], rel=F64_REL, abs=1e-12)
        assert single["add"][0] == pytest.approx(ref["add"], rel=F64_REL, abs=1e-12)
        for game, cls, (area, corr) in (
            ("deletion", Deletion, ("dauc", "dc")),
            ("insertion", Insertion, ("iauc", "ic")),
        ):
            ours = curve_scores(model, img, m, t, game=game, filling=filling, mean=ID_MEAN, std=ID_STD)  # type: ignore[arg-type]
            with default_dtype(torch.float64):
                theirs = cls(filling)(ref_model, img, m.unsqueeze(1), t)
            assert ours["curve"].shape == (1, res[0] * res[1] + 1)
            assert ours[area][0] == pytest.approx(theirs[area], rel=F64_REL, abs=1e-12)
            assert ours[corr][0] == pytest.approx(theirs[corr], rel=F64_REL, abs=1e-12)
            assert abs(theirs[corr]) > 1e-3  # a real correlation, not a degenerate zero


@pytest.mark.numeric
@pytest.mark.usefixtures("trapz")
def test_bound_max_step_agrees_and_non_multiple_works() -> None:
    """float64 on both sides, as :func:`test_agreement_with_saliency_maps_metrics` (``F64_REL``)."""
    model = double(TinyCNN(seed=1))
    gen = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 28, 28, generator=gen, dtype=torch.float64)
    m28, m21, t = (
        torch.rand(1, 28, 28, generator=gen, dtype=torch.float64),
        torch.rand(1, 21, 21, generator=gen, dtype=torch.float64),
        torch.tensor([1]),
    )
    ours = curve_scores(model, img, m28, t, game="deletion", mean=ID_MEAN, std=ID_STD)
    with default_dtype(torch.float64):
        theirs = Deletion("black")(softmaxed(model), img, m28.unsqueeze(1), t)
    assert ours["curve"].shape == (1, 197)  # 784 cells, 4 per step
    assert ours["dauc"][0] == pytest.approx(theirs["dauc"], rel=F64_REL, abs=1e-12)
    assert ours["dc"][0] == pytest.approx(theirs["dc"], rel=F64_REL, abs=1e-12)
    # 441 cells, 2 per step: the package asks topk for 442 of 441 cells at the last step
    with pytest.raises(RuntimeError, match="out of range"):
        Deletion("black")(softmaxed(model), img, m21.unsqueeze(1), t)
    counter = ForwardCounter()
    out = curve_scores(
        model, img, m21, t, game="deletion", mean=ID_MEAN, std=ID_STD, max_batch=100, counter=counter
    )
    assert out["curve"].shape == (1, 222) and counter.rows == 222 and counter.calls == 3
    assert np.isfinite(out["dauc"][0]) and np.isfinite(out["dc"][0])
    # last step: the one least salient cell, a difference of float64 cumulative sums of <= 441 values
    # in [0, 1] (error <= 441 * 2**-53 * 441 ~ 2e-11)
    assert out["step_saliency"][0, -1] == pytest.approx(float(m21.min()), rel=0, abs=1e-10)
    with torch.no_grad():
        black_prob = float(torch.softmax(model(torch.zeros_like(img)), 1)[0, 1])
    # float64, another batch layout (100 rows vs 1): ~1e-16
    assert out["curve"][0, -1] == pytest.approx(black_prob, rel=0, abs=1e-12)


@pytest.mark.numeric
@pytest.mark.usefixtures("trapz")
def test_batch_equals_single_images_unlike_package() -> None:
    """Per-image min-max: a batch scores each image as alone; the package's batch-wide min-max does not.
    float64 model and inputs: batch and single rows differ by ~1e-16 relative, so AD/ADD (divided by
    Y >= ~0.1) and curve points agree to 1e-12 absolute."""
    model = double(TinyCNN(seed=2))
    gen = torch.Generator().manual_seed(5)
    img = torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    maps = torch.rand(2, 4, 4, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 20.0]).view(2, 1, 1)
    t = torch.tensor([0, 3])
    batch = single_step_scores(model, img, maps, t, mean=ID_MEAN, std=ID_STD)
    alone = [
        single_step_scores(model, img[i : i + 1], maps[i : i + 1], t[i : i + 1], mean=ID_MEAN, std=ID_STD)
        for i in range(2)
    ]
    for key in ("ad_gomez", "add"):
        np.testing.assert_allclose(batch[key], [a[key][0] for a in alone], rtol=0, atol=1e-12)
    theirs = ADD("black")(softmaxed(model), img, maps.unsqueeze(1), t)["add"]
    assert abs(theirs - batch["add"].mean()) > 1e-3
    curves = curve_scores(model, img, maps, t, game="insertion", mean=ID_MEAN, std=ID_STD)
    for i in range(2):
        one = curve_scores(
            model, img[i : i + 1], maps[i : i + 1], t[i : i + 1], game="insertion", mean=ID_MEAN, std=ID_STD
        )
        np.testing.assert_allclose(curves["curve"][i], one["curve"][0], rtol=0, atol=1e-12)


@pytest.mark.numeric
def test_curve_ends_computed_once_per_image_for_every_game_and_method() -> None:
    """With a cache the image itself and the whole filling are evaluated once per image, target and
    filling: the first deletion makes every point, the insertion with the same filling only its interior,
    a second method too; the curves equal those computed without a cache (float64: ~1e-16 relative
    between batch layouts, so 1e-12 absolute on probabilities)."""
    model = double(TinyCNN(seed=3))
    gen = torch.Generator().manual_seed(7)
    img = torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    first, second = (torch.rand(2, 4, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    t, ids = torch.tensor([1, 2]), ("a", "b")
    cache = StartCache()
    kw = {"mean": ID_MEAN, "std": ID_STD, "filling": "black"}
    rows = []
    for maps in (first, second):
        for game in ("deletion", "insertion"):
            counter = ForwardCounter()
            out = curve_scores(model, img, maps, t, game=game, counter=counter, cache=cache, ids=ids, **kw)
            plain = curve_scores(model, img, maps, t, game=game, **kw)
            np.testing.assert_allclose(out["curve"], plain["curve"], rtol=0, atol=1e-12)
            rows.append(counter.rows)
    points = plain["curve"].shape[1]  # 17: a 4x4 map, one cell per step
    assert points == 17 and rows == [2 * points, 2 * (points - 2), 2 * (points - 2), 2 * (points - 2)]
    counter = ForwardCounter()  # another filling: its filled end is new, the image itself is not
    curve_scores(
        model,
        img,
        first,
        t,
        game="insertion",
        counter=counter,
        cache=cache,
        ids=ids,
        mean=ID_MEAN,
        std=ID_STD,
        filling="blur",
    )
    assert counter.rows == 2 * (points - 1)
    with pytest.raises(ConfigError, match="ids"):
        curve_scores(model, img, first, t, game="deletion", cache=StartCache(), **kw)


@pytest.mark.numeric
def test_streaming_skips_counts_and_raises_before_update() -> None:
    """float64 model and inputs: the streamed batches (4 + 1 rows) and the whole batch (5) agree to
    1e-12 (~1e-16 relative layout noise on probabilities in [0, 1])."""
    model = double(TinyCNN(seed=3))
    gen = torch.Generator().manual_seed(7)
    img = torch.rand(5, 3, 16, 16, generator=gen, dtype=torch.float64)
    maps = torch.rand(5, 4, 4, generator=gen, dtype=torch.float64)
    maps[1, 2, 2] = float("nan")
    maps[3] = 0.5  # constant
    t = torch.tensor([0, 1, 2, 3, 0])
    metric = build_metric({"type": "dauc"}, model=model, mean=ID_MEAN, std=ID_STD)
    with pytest.raises(RuntimeError, match="before any update"):
        metric.summary()
    first = metric.update(img[:4], maps[:4], t[:4])["value"]
    assert np.isnan(first[[1, 3]]).all() and np.isfinite(first[[0, 2]]).all()
    second = metric.update(img[4:], maps[4:], t[4:])["value"]
    s = metric.summary()
    assert (s.n_images, s.n_skipped, s.n_nan) == (3, 2, 0)
    assert s.value == pytest.approx(np.mean([first[0], first[2], second[0]]), rel=1e-15)  # same 3 values
    assert (s.metric, s.higher_is_better, s.category) == ("dauc", False, "fidelity")
    whole = curve_scores(model, img, maps, t, game="deletion", mean=ID_MEAN, std=ID_STD)
    np.testing.assert_allclose(whole["dauc"], np.concatenate([first, second]), rtol=0, atol=1e-12)
    # a model whose output never changes: DC is undefined (NaN), counted as NaN, not skipped
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).double()
    nn.init.zeros_(flat[1].weight)
    dc = build_metric({"type": "dc"}, model=flat, mean=ID_MEAN, std=ID_STD)
    dc.update(img, maps, t)
    s = dc.summary()
    assert (s.n_images, s.n_skipped, s.n_nan) == (0, 2, 3) and math.isnan(s.value)


def test_declarations_groups_and_params() -> None:
    for name in IDS:
        definition = METRICS.get(name)
        assert definition.name == name and definition.category == "fidelity"
    assert [METRICS.get(n).higher_is_better for n in IDS] == [True, False, True, False, True, True, True]
    assert GOMEZ_SINGLE.metrics == ("iic", "ad_gomez", "add") and GOMEZ_DELETION.metrics == ("dauc", "dc")
    assert GOMEZ_INSERTION.metrics == ("iauc", "ic") and GOMEZ_INSERTION.params_cls().filling == "blur"
    model, img = AffineMean(), hand_image()
    black = build_metric({"type": "iauc", "filling": "black"}, model=model, mean=ID_MEAN, std=ID_STD)
    # float64 analytic model (see test_hand_deletion_and_insertion_exact)
    assert black.evaluate(img[0], HAND_MAP[0], 0)["value"] == pytest.approx(0.33203125, abs=1e-12)
    counter = ForwardCounter()
    ad = build_metric({"type": "ad_gomez"}, model=model, mean=ID_MEAN, std=ID_STD)
    out = ad.evaluate_batch(img, HAND_MAP, torch.tensor([0]), counter=counter)
    assert counter.rows == 2 and np.isfinite(out["value"][0])  # original + kept only, no ADD row


def test_input_validation() -> None:
    img, t = hand_image(), torch.tensor([0])
    with pytest.raises(DataError, match="maps"):
        curve_scores(AffineMean(), img, HAND_MAP[0], t, game="deletion", mean=ID_MEAN, std=ID_STD)
    with pytest.raises(DataError, match="larger than the input"):
        single_step_scores(AffineMean(), img, torch.rand(1, 5, 5), t, mean=ID_MEAN, std=ID_STD)
    with pytest.raises(ConfigError, match="game"):
        curve_scores(AffineMean(), img, HAND_MAP, t, game="both", mean=ID_MEAN, std=ID_STD)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_step_nb"):
        curve_scores(AffineMean(), img, HAND_MAP, t, game="deletion", max_step_nb=0, mean=ID_MEAN, std=ID_STD)
    with pytest.raises(ConfigError, match="mean/std"):
        single_step_scores(AffineMean(), img, HAND_MAP, t, filling="blur", mean=(0.0,), std=(1.0,))
