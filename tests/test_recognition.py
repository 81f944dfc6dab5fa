"""Recognition metrics: exact values on analytic models, the batched engine against a per-image loop,
the start-image cache, and agreement with torchcam 0.5."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

from salbench.errors import ConfigError, DataError
from salbench.metrics.base import METRICS, Metric
from salbench.metrics.engine import ForwardCounter, target_probs
from salbench.metrics.perturbation import gaussian_blur, mask_pixels
from salbench.metrics.recognition import (
    RECOGNITION,
    RecognitionParams,
    StartCache,
    drop_terms,
    gain_terms,
    increase_terms,
    recognition_scores,
)
from salbench.scoped import model_mode

ID_MEAN, ID_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


class RegionMean(nn.Module):
    """logits = [s * mean of channel 0 over rows r0:r1, cols c0:c1, 0]: p(class 0) = sigmoid(s * mean)."""

    def __init__(self, scale: float = 1.0, region: tuple[int, int, int, int] = (0, 100, 0, 100)) -> None:
        super().__init__()
        self.scale = scale
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r0, r1, c0, c1 = self.region
        z = self.scale * x[:, 0, r0:r1, c0:c1].mean(dim=(1, 2))
        return torch.stack([z, torch.zeros_like(z)], dim=1)


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0, classes: int = 5) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
            self.fc.weight.mul_(0.3)  # mild logits: no probability near 0 or 1
        self.bn.running_mean.copy_(torch.randn(6, generator=gen) * 0.1)
        self.bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def hand_image() -> torch.Tensor:
    """(1,3,2,2): channel 0 = [[1, 2], [3, 4]], other channels irrelevant to RegionMean."""
    img = torch.full((1, 3, 2, 2), 7.0, dtype=torch.float64)
    img[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    return img


HAND_MAP = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]], dtype=torch.float64)  # order: pixels 1, 2, 3, 0


def test_terms_exact_from_given_probabilities() -> None:
    base = np.array([0.8, 0.5, 0.2, 1.0, 0.0, np.nan])
    masked = np.array([0.4, 0.6, 0.2, 0.9, 0.3, 0.5])
    np.testing.assert_allclose(drop_terms(base, masked), [0.5, 0.0, 0.0, 0.1, 0.0, np.nan], atol=1e-15)
    np.testing.assert_array_equal(increase_terms(base, masked), [0.0, 1.0, 0.0, 0.0, 1.0, np.nan])
    np.testing.assert_allclose(gain_terms(base, masked), [0.0, 0.2, 0.0, 0.0, 0.3, np.nan], atol=1e-15)
    scores = {"average_drop": drop_terms(base, masked), "skipped": np.array([0, 0, 0, 0, 0, 1], bool)}
    metric = Metric("average_drop")
    metric.update(scores["average_drop"][~scores["skipped"]], skipped=int(scores["skipped"].sum()))
    summary = metric.summary()
    assert summary.value == pytest.approx(0.6 / 5)
    assert (summary.n_images, summary.n_skipped, summary.n_nan) == (5, 1, 0)
    assert (summary.higher_is_better, summary.category) == (False, "recognition")


def test_metric_metadata() -> None:
    expected = {
        "average_drop": False,
        "average_increase": True,
        "average_gain": True,
        "insertion": True,
        "deletion": False,
    }
    assert RECOGNITION.metrics == tuple(expected)
    for name, direction in expected.items():
        d = METRICS.get(name)
        assert (d.name, d.higher_is_better, d.category, d.group) == (
            name,
            direction,
            "recognition",
            "recognition",
        )
    params = Metric("insertion").params
    assert isinstance(params, RecognitionParams)
    assert params.as_kwargs() == {
        "step": None,
        "substrate": "zero",
        "blur_kernel": 5,
        "blur_sigma": 5.0,
        "blur_construction": "rise",
        "max_batch": 1024,
        "ai_tolerance": 1e-5,
        "ai_rule": "strict",
    }


# The analytic tests run a float64 RegionMean on float64 images: a mean of <= 12 values, a sigmoid and a
# ratio, ~1e-16, hence 1e-12 on probabilities, their areas and AD / AG (divided by Y >= 0.5).


@pytest.mark.numeric
def test_deletion_curve_and_ad_exact_on_analytic_model() -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    out = recognition_scores(
        RegionMean().double(), hand_image(), HAND_MAP, torch.tensor([0]), mean=mean, std=std, step=1
    )
    # deletion zeroes (normalised) pixels 2, 3, 4, 1 in turn: channel-0 means 10/4, 8/4, 5/4, 1/4, 0
    curve = [sigmoid(2.5), sigmoid(2.0), sigmoid(1.25), sigmoid(0.25), 0.5]
    np.testing.assert_allclose(out["deletion_curve"][0], curve, rtol=0, atol=1e-12)
    assert out["deletion"][0] == pytest.approx((sum(curve) - curve[0] / 2 - curve[-1] / 2) / 4, abs=1e-12)
    # x * m: pixel = 0.25 x + 0.5 -> times m -> (. - 0.5) / 0.25; pixels 0.75, 1.0, 1.25, 1.5
    masked = [(0.75 * 0.1 - 0.5) * 4, (1.0 * 0.9 - 0.5) * 4, (1.25 * 0.5 - 0.5) * 4, (1.5 * 0.3 - 0.5) * 4]
    y, o = sigmoid(2.5), sigmoid(sum(masked) / 4)
    assert out["base_prob"][0] == pytest.approx(y, abs=1e-12)
    assert out["masked_prob"][0] == pytest.approx(o, abs=1e-12)
    assert out["average_drop"][0] == pytest.approx((y - o) / y, abs=1e-12)
    assert out["average_increase"][0] == 0.0
    assert out["average_gain"][0] == 0.0
    # stage-1 Y is used as given (here below O): AD 0, AI 1, AG (O - Y) / (1 - Y)
    given = recognition_scores(
        RegionMean().double(), hand_image(), HAND_MAP, torch.tensor([0]), mean=mean, std=std, base_probs=[0.5]
    )
    assert (given["base_prob"][0], given["average_drop"][0], given["average_increase"][0]) == (0.5, 0.0, 1.0)
    assert given["average_gain"][0] == pytest.approx((o - 0.5) / 0.5, abs=1e-12)
    # black substrate: deleted pixels become (0 - 0.5) / 0.25 = -2; two per step: (1 + 4 - 2 - 2) / 4
    black = recognition_scores(
        RegionMean().double(),
        hand_image(),
        HAND_MAP,
        torch.tensor([0]),
        mean=mean,
        std=std,
        step=2,
        substrate="black",
    )
    np.testing.assert_allclose(
        black["deletion_curve"][0], [sigmoid(2.5), sigmoid(0.25), sigmoid(-2.0)], rtol=0, atol=1e-12
    )


@pytest.mark.numeric
def test_insertion_curve_exact_on_analytic_model() -> None:
    # 3 x 3 sampled Gaussian, sigma 1, zero padding on a 2 x 2 image: every pixel sees all four
    e = math.exp(-0.5)
    g0, g1 = e / (1 + 2 * e), 1 / (1 + 2 * e)
    w0, w1, w2 = g1 * g1, g0 * g1, g0 * g0  # self, horizontal/vertical neighbour, diagonal
    blurred = [
        w0 * 1 + w1 * 5 + w2 * 4,
        w0 * 2 + w1 * 5 + w2 * 3,
        w0 * 3 + w1 * 5 + w2 * 2,
        w0 * 4 + w1 * 5 + w2 * 1,
    ]
    x = [1.0, 2.0, 3.0, 4.0]
    reveal = [1, 2, 3, 0]
    curve = []
    for k in range(5):
        shown = set(reveal[:k])
        curve.append(sigmoid(sum(x[p] if p in shown else blurred[p] for p in range(4)) / 4))
    out = recognition_scores(
        RegionMean().double(),
        hand_image(),
        HAND_MAP,
        torch.tensor([0]),
        mean=ID_MEAN,
        std=ID_STD,
        step=1,
        blur_kernel=3,
        blur_sigma=1.0,
        blur_construction="sampled",
    )
    np.testing.assert_allclose(out["insertion_curve"][0], curve, rtol=0, atol=1e-12)
    assert out["insertion"][0] == pytest.approx((sum(curve) - curve[0] / 2 - curve[-1] / 2) / 4, abs=1e-12)


@pytest.mark.numeric
def test_constant_map_is_kept_and_deletes_in_raster_order() -> None:
    img = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    img[0, 0] = torch.arange(1.0, 10.0).view(3, 3)
    out = recognition_scores(
        RegionMean(scale=0.5).double(),
        img,
        torch.full((1, 3, 3), 0.7, dtype=torch.float64),
        torch.tensor([0]),
        mean=ID_MEAN,
        std=ID_STD,
        step=4,
    )
    # raster order: delete 1..4, then 5..8, then 9; channel-0 sums 45, 35, 9, 0
    expected = [sigmoid(0.5 * s / 9) for s in (45, 35, 9, 0)]
    np.testing.assert_allclose(out["deletion_curve"][0], expected, rtol=0, atol=1e-12)
    assert not out["skipped"][0]


def reference_loop(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    step: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> dict[str, np.ndarray]:
    """RISE-style evaluation: one image and one step at a time, Python's stable sort for the order."""
    n, _, h, w = images.shape
    steps = math.ceil(h * w / step)
    blurred = gaussian_blur(images)

    def prob(x: torch.Tensor, c: int) -> float:
        with torch.no_grad(), model_mode(model, False):
            return torch.softmax(model(x.unsqueeze(0)), dim=1)[0, c].item()

    out = {k: [] for k in ("base", "masked", "deletion_curve", "insertion_curve")}
    for i in range(n):
        c = int(targets[i])
        flat = maps[i].flatten().tolist()
        order = sorted(range(h * w), key=lambda p, flat=flat: -flat[p])
        out["base"].append(prob(images[i], c))
        out["masked"].append(prob(mask_pixels(images[i : i + 1], maps[i : i + 1], mean, std)[0], c))
        for mode in ("deletion", "insertion"):
            start = images[i].clone() if mode == "deletion" else blurred[i].clone()
            finish = torch.zeros_like(images[i]) if mode == "deletion" else images[i]
            curve = []
            for k in range(steps + 1):
                curve.append(prob(start, c))
                for p in order[k * step : (k + 1) * step]:
                    start[:, p // w, p % w] = finish[:, p // w, p % w]
            out[f"{mode}_curve"].append(curve)
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float64 CNN, images and maps: the tests below compare evaluations in other batch layouts
    (chunks, cached starts, skipped images, per-image loops, torchcam), which then differ by ~1e-16
    relative; probabilities >= 1e-3 keep (Y - O) / Y and (O - Y) / (1 - Y) within 1e-12 as well."""
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(5, 3, 7, 6, generator=gen, dtype=torch.float64)
    maps = torch.rand(5, 7, 6, generator=gen, dtype=torch.float64)
    maps[1] = 0.25  # constant map
    maps[2] = torch.randint(0, 3, (7, 6), generator=gen).double() / 2  # many ties
    targets = torch.tensor([0, 4, 2, 1, 3])
    return TinyCNN().double(), images, maps, targets


@pytest.mark.numeric
@pytest.mark.parametrize("max_batch", [3, 1024])
def test_batched_engine_equals_per_image_loop(batch, max_batch: int) -> None:
    model, images, maps, targets = batch
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    ref = reference_loop(model, images, maps, targets, step=4, mean=mean, std=std)
    counter = ForwardCounter()
    out = recognition_scores(
        model, images, maps, targets, mean=mean, std=std, step=4, max_batch=max_batch, counter=counter
    )
    assert out["deletion_curve"].shape == (5, 12)  # 42 pixels, step 4: 11 steps (last one of 2 pixels)
    for key in ("deletion_curve", "insertion_curve"):
        np.testing.assert_allclose(out[key], ref[key], atol=1e-12, rtol=0)
    np.testing.assert_allclose(out["base_prob"], ref["base"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(out["masked_prob"], ref["masked"], atol=1e-12, rtol=0)
    drop, gain = drop_terms(ref["base"], ref["masked"]), gain_terms(ref["base"], ref["masked"])
    np.testing.assert_allclose(out["average_drop"], drop, atol=1e-12, rtol=0)
    np.testing.assert_allclose(out["average_gain"], gain, atol=1e-12, rtol=0)
    rows = 5 * (3 + 1 + 2 * 10)
    assert (counter.rows, counter.calls) == (rows, math.ceil(rows / max_batch))
    assert model.training  # the module's own (training) mode is restored; BN ran with running stats


@pytest.mark.numeric
def test_cache_gives_identical_numbers_with_fewer_passes(batch) -> None:
    model, images, maps, targets = batch
    ids = [f"img{i}" for i in range(5)]
    other_maps = torch.rand(5, 7, 6, generator=torch.Generator().manual_seed(9))
    kwargs = {"mean": ID_MEAN, "std": ID_STD, "step": 4, "max_batch": 16}
    plain_counter, cached_counter = ForwardCounter(), ForwardCounter()
    cache = StartCache()
    plain = [
        recognition_scores(model, images, m, targets, counter=plain_counter, **kwargs)
        for m in (maps, other_maps)
    ]
    cached = [
        recognition_scores(model, images, m, targets, cache=cache, ids=ids, counter=cached_counter, **kwargs)
        for m in (maps, other_maps)
    ]
    assert len(cache) == 5
    assert plain_counter.rows - cached_counter.rows == 3 * 5  # second method reused 3 starts per image
    for p, c in zip(plain, cached):
        assert p.keys() == c.keys()
        for key in p:  # cached starts: other batch layouts, float64 (see the fixture)
            np.testing.assert_allclose(c[key], p[key], atol=1e-12, rtol=0)
    # map-independent ends are shared: insertion starts equal across methods
    np.testing.assert_array_equal(cached[0]["insertion_curve"][:, 0], cached[1]["insertion_curve"][:, 0])
    with pytest.raises(ConfigError, match="ids"):
        recognition_scores(model, images, maps, targets, cache=cache, **kwargs)


@pytest.mark.numeric
def test_nonfinite_maps_are_skipped_and_counted(batch) -> None:
    model, images, maps, targets = batch
    bad = maps.clone()
    bad[1, 0, 0] = float("nan")
    bad[3, 2, 2] = float("inf")
    counter = ForwardCounter()
    base = target_probs(model, images, targets)
    out = recognition_scores(model, images, bad, targets, mean=ID_MEAN, std=ID_STD, step=4, counter=counter)
    good = recognition_scores(model, images, maps, targets, mean=ID_MEAN, std=ID_STD, step=4, base_probs=base)
    assert out["skipped"].tolist() == [False, True, False, True, False]
    assert counter.rows == 3 * (3 + 1 + 2 * 10)
    keys = (
        "average_drop",
        "average_increase",
        "average_gain",
        "insertion",
        "deletion",
        "masked_prob",
        "base_prob",
    )
    for key in keys:
        assert np.isnan(out[key][[1, 3]]).all()
        np.testing.assert_allclose(out[key][[0, 2, 4]], good[key][[0, 2, 4]], rtol=0, atol=1e-12)
    assert np.isnan(out["deletion_curve"][[1, 3]]).all()
    metric = Metric("insertion")
    metric.update(out["insertion"][~out["skipped"]], skipped=int(out["skipped"].sum()))
    summary = metric.summary()
    assert (summary.n_images, summary.n_skipped, summary.n_nan) == (3, 2, 0)
    assert summary.value == pytest.approx(
        float(np.mean(out["insertion"][[0, 2, 4]])), rel=1e-15
    )  # same values
    assert out["deletion_curve"].shape == (5, 12)
    no_curves = recognition_scores(model, images, maps, targets, mean=ID_MEAN, std=ID_STD, curves=False)
    assert "insertion_curve" not in no_curves and no_curves["insertion"].shape == (5,)


def test_input_validation(batch) -> None:
    model, images, maps, targets = batch
    with pytest.raises(DataError, match="maps"):
        recognition_scores(model, images, maps[:, :-1], targets, mean=ID_MEAN, std=ID_STD)
    with pytest.raises(ConfigError, match="substrate"):
        recognition_scores(model, images, maps, targets, mean=ID_MEAN, std=ID_STD, substrate="grey")
    with pytest.raises(ConfigError, match="max_batch"):
        recognition_scores(model, images, maps, targets, mean=ID_MEAN, std=ID_STD, max_batch=0)


class FixedMaps:
    """Quacks like a torchcam CAM extractor but returns given maps (one per input, already H x W)."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model = model
        self.maps = maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs) -> list[torch.Tensor]:
        return [self.maps.clone()]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self) -> Iterator[None]:
        yield


@pytest.mark.numeric
def test_ad_ai_agree_with_torchcam(batch) -> None:
    """torchcam masks the normalised input (cam * x), so compare with mean 0 / std 1 where ``x * m`` is the
    same product. torchcam divides by Y + 1e-7 (a change of up to 1e-7 / Y = 1e-4 relative at Y = 1e-3),
    so its AD is compared with that formula applied to our Y and O: float64 on both sides, 1e-12
    relative. AI is a count and must match exactly."""
    model, images, maps, targets = batch
    out = recognition_scores(model, images, maps, targets, mean=ID_MEAN, std=ID_STD)
    assert out["base_prob"].min() > 1e-3
    assert np.abs(out["base_prob"] - out["masked_prob"]).min() > 1e-4  # no near-ties for 1[Y < O]
    metric = ClassificationMetric(FixedMaps(model, maps), partial(torch.softmax, dim=-1))
    metric.update(images, class_idx=targets.tolist())
    ref = metric.summary()
    y, o = out["base_prob"], out["masked_prob"]
    assert ref["avg_drop"] == pytest.approx(float(np.mean(np.maximum(y - o, 0.0) / (y + 1e-7))), rel=1e-12)
    assert ref["avg_drop"] == pytest.approx(float(out["average_drop"].mean()), rel=1e-4)  # the 1e-7 only
    assert ref["conf_increase"] == float(out["average_increase"].mean())
    assert 0 < ref["conf_increase"] < 1 and ref["avg_drop"] > 0.01  # the comparison is not vacuous


@pytest.mark.numeric
def test_insertion_deletion_agree_with_torchcam_on_blur_baseline(batch) -> None:
    """torchcam's DeletionInsertionMetric uses one baseline for both curves and integrates against the
    perturbed fraction; with the blurred image as baseline and a step dividing H*W (42 = 7 * 6, 7 steps) the
    fractions are evenly spaced and its AUCs are ours. float64 forwards (~1e-16), but torchcam's fractions
    k / 7 are float32 (each off by <= 2**-25): 7 trapezoids of heights <= 1 move by <= 7 * 2 * 2**-25 =
    4.2e-7 per curve; atol 1e-6 on the means."""
    model, images, maps, targets = batch
    out = recognition_scores(model, images, maps, targets, mean=ID_MEAN, std=ID_STD, step=6, substrate="blur")
    metric = DeletionInsertionMetric(
        FixedMaps(model, maps), partial(torch.softmax, dim=-1), steps=7, baseline=gaussian_blur, batch_size=4
    )
    metric.update(images, class_idx=targets.tolist())
    ref = metric.summary()
    assert ref["insertion_auc"] == pytest.approx(float(out["insertion"].mean()), abs=1e-6)
    assert ref["deletion_auc"] == pytest.approx(float(out["deletion"].mean()), abs=1e-6)
