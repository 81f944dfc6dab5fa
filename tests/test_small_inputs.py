"""Small inputs of any channel count: MNIST-like (1, 28, 28) and CIFAR-like (3, 32, 32) images through every
registered method and metric with a tiny user-defined CNN (properties: shapes, finiteness, ranges), and the
rule that scales the protocol presets' pixel lengths (:mod:`salbench.scaling`)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.transform import resize
from torch import nn

from casme_utils.architecture import build_masker
from salbench.config import resolve_config
from salbench.errors import ConfigError
from salbench.methods import METHODS, MethodContext, build_method, method_context
from salbench.methods.base import Preparation
from salbench.methods.casme import CasmeParams
from salbench.methods.lime import Lime, LimeParams
from salbench.metrics import GROUPS, METRICS, MetricInputs, compute
from salbench.metrics.recognition import RecognitionParams, recognition_scores
from salbench.metrics.similarity import hog_similarity, ssim_similarity
from salbench.scaling import blur_at_size, length_scale, scaled_kernel, scaled_length

K = 10
SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
# Few samples, steps and masks: the properties do not depend on them, the run time does.
FAST = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 3},
    "rise": {"n_masks": 16},
    "lime": {"n_samples": 16},
    "iba": {"steps": 2, "n_noise": 2},
    "scorecam": {"batch_size": 64},
    "ablationcam": {"batch_size": 64},
}


class TinyCNN(nn.Module):
    """A researcher's own classifier: three 3x3 convolutions, two max-pools (28 -> 7, 32 -> 8), a linear
    head. ``features[-1]`` is the default CAM layer of models without a family rule."""

    def __init__(self, channels: int, num_classes: int = K) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _pixels(shape: tuple[int, int, int], n: int = 2) -> torch.Tensor:
    """(n,C,H,W) in [0, 1]: a smooth ramp with a bright square (a different place per image)."""
    c, h, w = shape
    ramp = torch.linspace(0.1, 0.4, w).view(1, 1, 1, w).expand(n, c, h, w).clone()
    for i in range(n):
        y, x = 4 + 6 * i, 6 + 5 * i
        ramp[i, :, y : y + 10, x : x + 10] = torch.linspace(0.7, 1.0, c).view(c, 1, 1)
    return ramp


@pytest.fixture(scope="module", params=sorted(SHAPES))
def setup(request):
    """(name, model, context, normalised images (2,C,H,W), top-1 targets) for one input format."""
    name = request.param
    shape = SHAPES[name]
    torch.manual_seed(0)
    model = TinyCNN(shape[0]).eval()
    mean, std = STATS[name]
    context = method_context(model, mean=mean, std=std)
    images = context.normalize(_pixels(shape))
    with torch.no_grad():
        targets = model(images).argmax(1)
    return name, model, context, images, targets


def _method(method_id: str, model: nn.Module, context: MethodContext):
    if method_id == "casme":  # a masker on a copy of the user's CNN (VGG-style: read after its max-pools)
        masker = build_masker(copy.deepcopy(model), 4, torch.Generator().manual_seed(0)).eval()
        return METHODS.get("casme")(model, context, CasmeParams(), masker=masker)
    return build_method(
        method_id,
        model,
        protocol="acml2024",
        mean=context.mean,
        std=context.std,
        num_classes=K,
        **FAST.get(method_id, {}),
    )


@pytest.mark.parametrize("method_id", METHODS.names())
def test_every_method_on_small_inputs(setup, method_id):
    """Maps of the input's spatial size, float32, finite, in [0, 1], for 1 and 3 channels."""
    name, model, context, images, targets = setup
    method = _method(method_id, model, context)
    method.check_applies(images[:1])
    method.prepare(Preparation(lambda: [images], tuple(images.shape[-2:])))
    maps = method(images, targets, torch.Generator().manual_seed(0))
    assert maps.shape == (2, *images.shape[-2:]) and maps.dtype == torch.float32, (name, method_id)
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


INF = math.inf
UNIT = (0.0, 1.0)


def _ranges(h: int, w: int) -> dict[str, tuple[float, float]]:
    """Every registered metric's range at an h x w input."""
    unit = dict.fromkeys(
        [
            "average_drop",
            "average_increase",
            "average_gain",
            "insertion",
            "deletion",
            "completeness_holds",
            "sparseness",
            "energy_pointing_game",
            "pointing_game",
            "localization_error",
            "official_metric",
            "energy_pointing_game_mask",
            "pointing_game_mask",
            "iou_mask",
            "iic",
            "ad_gomez",
            "dauc",
            "iauc",
        ],
        UNIT,
    )
    return unit | {
        "monotonicity": (-1.0, 1.0),
        "completeness_gap": (0.0, INF),
        "max_sensitivity": (0.0, INF),
        "avg_sensitivity": (0.0, INF),
        "complexity": (0.0, math.log(h * w)),
        "effective_complexity": (0.0, float(h * w)),
        "add": (-INF, 1.0),
        "dc": (-1.0, 1.0),
        "ic": (-1.0, 1.0),
    }


def test_the_ranges_cover_every_registered_metric():
    assert sorted(_ranges(28, 28)) == sorted(METRICS.names())


def _inputs(images: torch.Tensor, targets: torch.Tensor, model: nn.Module, context) -> MetricInputs:
    """A smooth non-constant map peaking on each image's square, its box and mask, and the model."""
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    maps, boxes = [], []
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        y, x = 4 + 6 * i, 6 + 5 * i
        maps.append(torch.exp(-((ys - y - 5) ** 2 + (xs - x - 5) ** 2) / 40.0))
        boxes.append(np.array([[x, y, x + 9, y + 9]]))
        masks[i, y : y + 10, x : x + 10] = True
    return MetricInputs(
        maps=torch.stack(maps),
        images=images,
        targets=targets,
        model=model,
        mean=context.mean,
        std=context.std,
        boxes=boxes,
        masks=masks,
        correct=torch.tensor([True, False]),
        generator=lambda key: torch.Generator().manual_seed(len(key)),
    )


@pytest.mark.parametrize("group", GROUPS.names())
def test_every_metric_on_small_inputs(setup, group):
    """Every metric through the one verb :func:`compute` with the acml2024 parameters: one finite value
    per image, in the metric's range."""
    name, model, context, images, targets = setup
    g = GROUPS.get(group)
    params = g.params(resolve_config(None).metric_params(g.section))
    scores = compute(g, _inputs(images, targets, model, context), params)
    ranges = _ranges(*images.shape[-2:])
    for metric in g.metrics:
        values = np.asarray(scores[metric], dtype=np.float64)
        low, high = ranges[metric]
        assert values.shape == (2,) and np.isfinite(values).all(), (name, metric, values)
        assert (values >= low - 1e-9).all() and (values <= high + 1e-9).all(), (name, metric, values)


# ---------------------------------------------------------------- the scaling rule


def test_preset_pixel_lengths_unchanged_at_112_and_224():
    """The embedded default (112) and ImageNet (224) compute what they computed before the rule."""
    recognition, lime = RecognitionParams(), Lime(TinyCNN(3), MethodContext(), LimeParams())
    for side in (112, 224, 300):
        assert length_scale((side, side)) == 1.0
        assert blur_at_size(recognition.as_kwargs(), (side, side)) == recognition.as_kwargs()
        assert lime.segmentation_lengths((side, side)) == (4.0, 200.0)
    assert length_scale((224, 100)) == pytest.approx(100 / 112)  # the shorter side decides


def test_preset_pixel_lengths_scale_below_112():
    lime = Lime(TinyCNN(1), MethodContext(mean=(0.5,), std=(0.5,)), LimeParams())
    preset = RecognitionParams().as_kwargs()
    at28, at32 = blur_at_size(preset, (28, 28)), blur_at_size(preset, (32, 32))
    assert (at28["blur_kernel"], at28["blur_sigma"]) == (3, 1.25)  # 5 * 28 / 112, odd and >= 3
    assert (at32["blur_kernel"], at32["blur_sigma"]) == (3, pytest.approx(5 * 32 / 112))
    assert blur_at_size(preset, (64, 64))["blur_kernel"] == 3  # round(2.86) = 3
    assert scaled_kernel(9, (64, 64)) == 5  # round(5.14), odd
    assert lime.segmentation_lengths((28, 28)) == (1.0, 50.0)
    assert lime.segmentation_lengths((64, 64)) == pytest.approx((4 * 64 / 112, 200 * 64 / 112))
    assert lime.segmentation_lengths((8, 8)) == (1.0, pytest.approx(200 * 8 / 112))  # quickshift's minimum
    assert scaled_kernel(4, (28, 28)) == 4 and scaled_kernel(5, (200, 200)) == 5  # even: left to fail
    assert scaled_length(2.0, (56, 56), minimum=1.5) == 1.5


def test_recognition_group_blurs_at_the_scaled_size(setup):
    """The group (stages, library) runs the literal function with the scaled blur."""
    _, model, context, images, targets = setup
    inputs = _inputs(images, targets, model, context)
    grouped = compute("recognition", inputs, RecognitionParams())
    kernel = 3
    sigma = 5.0 * min(images.shape[-2:]) / 112
    direct = recognition_scores(
        model,
        images,
        inputs.maps,
        targets,
        mean=context.mean,
        std=context.std,
        blur_kernel=kernel,
        blur_sigma=sigma,
    )
    np.testing.assert_array_equal(grouped["insertion_curve"], direct["insertion_curve"])


def test_superpixels_at_28_as_many_as_at_112():
    """Quickshift with the preset's kernel_size 4 finds 1-2 superpixels on a 28 x 28 photograph; scaled,
    about as many as on the same photograph at 112 x 112 (the embedded default's size)."""
    photo = skdata.astronaut() / 255.0
    context = MethodContext(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    lime = Lime(TinyCNN(3), context, LimeParams())
    counts = {}
    for side in (112, 28):
        image = torch.from_numpy(resize(photo, (side, side), anti_aliasing=True)).permute(2, 0, 1)[None]
        counts[side] = int(lime.segment(image.float(), [0])[0].max()) + 1
    assert counts[112] >= 8 and counts[28] >= counts[112] // 2


def test_a_three_value_mean_is_not_broadcast_over_one_channel():
    edge = METHODS.get("edge")(TinyCNN(1), MethodContext(num_classes=K))  # ImageNet's 3-value default
    with pytest.raises(ConfigError, match=r"mean/std have 3/3 values for images of 1 channels"):
        edge(torch.rand(1, 1, 28, 28), torch.tensor([0]))


def test_similarity_of_maps_smaller_than_hog_and_ssim_windows():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(16, 16, generator=g).numpy() for _ in range(2))
    assert math.isfinite(hog_similarity(a, b)) and math.isfinite(ssim_similarity(a, b))
    assert math.isfinite(ssim_similarity(a[:5, :5], b[:5, :5])) and hog_similarity(a, a) == 1.0
