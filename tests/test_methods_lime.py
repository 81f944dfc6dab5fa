"""LIME: agreement with the ``lime`` package and captum's ``Lime``, exact linear recovery, properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum._utils.models.linear_model import SkLearnLasso
from captum.attr import Lime as CaptumLime
from captum.attr._core.lime import get_exp_kernel_similarity_function
from lime.lime_image import LimeImageExplainer
from skimage.segmentation import quickshift
from sklearn.linear_model import Lasso, Ridge
from torch import nn

from salbench.errors import ConfigError
from salbench.methods.base import METHODS, MethodContext
from salbench.methods.lime import (
    Lime,
    LimeParams,
    kernel_weights,
    lime_maps,
    quickshift_segments,
    sample_states,
)

CTX = MethodContext(num_classes=3)
SEG = (np.arange(12)[:, None] // 4) * 3 + np.arange(12)[None, :] // 4  # 3x3 blocks of 4x4 pixels, K=9


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(16, 3)
        with torch.no_grad():
            self.fc.weight.mul_(20)  # logits that vary enough for Lasso(0.08) to keep coefficients
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("boom")
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))


class LinearPixels(nn.Module):
    """Logit c = sum(v_c * x): exactly linear in the superpixel switches when hidden pixels are 0."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.v = v  # (classes, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", x, self.v)


def _image(seed: int = 1, size: int = 12) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# Comparisons run float64 models and images (F64), so that batch layouts cannot move the logits
# (~1e-16). What remains: salbench's Lime rounds logits to float32 (``Lime._scores``), 2**-24 relative
# on scores |y| <~ 5 here; the weighted fit maps 30..40 scores to 9 coefficients with a gain <~ 10,
# so coefficients move by <~ 3e-6 (observed <= 1e-7): atol 1e-5 on coefficients <= 0.75 and on the
# min-max maps built from them.
F64 = torch.float64


def _by_label(attr: torch.Tensor, seg: np.ndarray) -> np.ndarray:
    """Coefficient per superpixel read back from a per-pixel (H,W) attribution."""
    seg_t = torch.from_numpy(seg)
    return np.array([float(attr[seg_t == k][0]) for k in range(int(seg.max()) + 1)])


def test_registered_with_metadata():
    assert METHODS.get("lime") is Lime
    assert Lime.family == "Occlusion" and Lime.deterministic is False
    p = LimeParams()
    assert (p.n_samples, p.alpha, p.kernel_width, p.regressor) == (40, 0.08, 1000.0, "lasso")
    assert (p.kernel_size, p.max_dist, p.ratio) == (4.0, 200.0, 0.2)


def test_samples_equal_lime_package_samples():
    ex = LimeImageExplainer(random_state=11)
    img = np.zeros((12, 12, 3))
    data, _ = ex.data_labels(img, img, SEG, lambda b: np.zeros((len(b), 2)), 25, batch_size=25)
    np.testing.assert_array_equal(sample_states(25, 9, 11, include_original=True), data)
    assert sample_states(25, 9, 11, include_original=False)[1:].tolist() == data[1:].tolist()


def test_kernel_equals_lime_package_kernel():
    d = np.array([0.0, 0.1, 0.5, 2.0])
    np.testing.assert_allclose(kernel_weights(d, 0.25), np.sqrt(np.exp(-(d**2) / 0.25**2)), rtol=1e-12)
    assert kernel_weights(np.array([3.0]), 3.0)[0] == pytest.approx(np.exp(-0.5))


@pytest.mark.numeric
@pytest.mark.parametrize("regressor", ["lasso", "ridge"])
def test_equals_lime_package_on_same_segmentation_and_samples(regressor):
    """lime package defaults (cosine distance, mean hide colour, first sample all ones), same samples.

    ``feature_selection='none'`` keeps the package's column order; with its default ('auto' and
    num_features >= K) it selects all superpixels too, only reordered. float64 model and image (the
    package then averages superpixel colours in float64 too); tolerance 1e-5 as derived at F64.
    """
    model, img, t, seed = TinyNet().eval().to(F64), _image().to(F64), 2, 7
    alpha = 0.01 if regressor == "lasso" else 1.0
    p = LimeParams(
        n_samples=30,
        alpha=alpha,
        regressor=regressor,
        kernel_width=0.25,
        distance="binary_cosine",
        hide="superpixel_mean",
        include_original=True,
    )
    ours = Lime(model, CTX, p).surrogate_weights(img, torch.tensor([t]), [SEG], [seed])[0]

    def classifier(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch).permute(0, 3, 1, 2).to(F64)).numpy()

    ex = LimeImageExplainer(kernel_width=0.25, feature_selection="none", random_state=seed)
    exp = ex.explain_instance(
        img[0].permute(1, 2, 0).numpy(),
        classifier,
        labels=(t,),
        hide_color=None,
        top_labels=None,
        num_features=100000,
        num_samples=30,
        segmentation_fn=lambda _: SEG,
        distance_metric="cosine",
        model_regressor=Lasso(alpha=alpha) if regressor == "lasso" else Ridge(alpha=alpha),
        random_seed=0,
    )
    ref = np.zeros(9)
    for k, w in exp.local_exp[t]:
        ref[k] = w
    assert np.count_nonzero(np.abs(ref) > 1e-3) >= 3  # a non-trivial surrogate
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.numeric
@pytest.mark.parametrize("width", [1000.0, 10.0])
def test_equals_captum_lime_as_the_study_called_it(width):
    """captum Lime(SkLearnLasso(0.08), exp kernel on euclidean input distance), zero baseline, logits.

    Same samples fed through captum's perturb_func. Width 10 makes the weights vary (at 1000 they are
    ~1 on tiny images). float64 model and image; captum still stores scores and similarity weights in
    float32 (2**-24 relative, like our float32 scores) and returns float32: tolerance 1e-5 (see F64).
    """
    model, img, t, seed = TinyNet().eval().to(F64), _image().to(F64), 2, 5
    method = Lime(model, CTX, LimeParams(n_samples=40, kernel_width=width))
    ours = method.surrogate_weights(img, torch.tensor([t]), [SEG], [seed])[0]
    states = sample_states(40, 9, seed, include_original=False)

    def perturb(original_inp, **kwargs):
        for row in states:
            yield torch.from_numpy(row)[None]

    captum = CaptumLime(
        model,
        interpretable_model=SkLearnLasso(alpha=0.08),
        similarity_func=get_exp_kernel_similarity_function("euclidean", kernel_width=width),
        perturb_func=perturb,
    )
    attr = captum.attribute(
        img, target=t, feature_mask=torch.from_numpy(SEG)[None], n_samples=40, perturbations_per_eval=16
    )
    ref = _by_label(attr[0, 0], SEG)
    assert np.count_nonzero(np.abs(ref) > 1e-3) >= 3
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    # the study's map: L2 over channels of the 3-channel attribution, then min-max
    study = attr[0].pow(2).sum(0).sqrt()
    study = (study - study.min()) / (study.max() - study.min())
    torch.testing.assert_close(lime_maps([ours], [SEG], 3)[0], study.float(), atol=1e-5, rtol=0)


@pytest.mark.numeric
def test_linear_model_coefficients_recovered_exactly():
    """score(z) = sum_k z_k a_k, a_k = sum of v * x over superpixel k: an unregularised fit returns a.

    float64 model and image: only Lime's float32 scores (2**-24 * |score| <= 2**-24 * 50 = 3e-6, times
    the fit's gain <~ 10) separate the fit from a (|a| ~ 1..12): rtol 1e-5 with atol 1e-5 near 0; the
    min-max maps divide by the spread of |a| (> 1 here), atol 1e-5."""
    v = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3), dtype=F64)
    img = _image(4).to(F64)
    seg_t = torch.from_numpy(SEG)
    a = np.array([float((v[1] * img[0])[:, seg_t == k].sum()) for k in range(9)])
    p = LimeParams(n_samples=40, regressor="ridge", alpha=1e-10, kernel_width=10.0)
    ours = Lime(LinearPixels(v), CTX, p).surrogate_weights(img, torch.tensor([1]), [SEG], [0])[0]
    np.testing.assert_allclose(ours, a, rtol=1e-5, atol=1e-5)
    maps = lime_maps([ours], [SEG], 3)[0].numpy()
    expected = np.abs(a)[SEG]
    np.testing.assert_allclose(maps, (expected - expected.min()) / np.ptp(expected), atol=1e-5)


def test_quickshift_segments_on_denormalised_pixels():
    g = torch.Generator().manual_seed(0)
    pixels = nn.functional.interpolate(torch.rand(2, 3, 4, 4, generator=g), size=(24, 24), mode="nearest")
    images = CTX.normalize(pixels)
    p = LimeParams(kernel_size=2, max_dist=10)
    lime = Lime(TinyNet(), CTX, p)
    segs = lime.segment(images, [3, 4])
    # below 112 pixels the lengths scale with the input (salbench.scaling): 2 -> 1 (the minimum),
    # 10 -> 10 * 24 / 112
    kernel_size, max_dist = lime.segmentation_lengths((24, 24))
    assert (kernel_size, max_dist) == (1.0, pytest.approx(10 * 24 / 112))
    for seg, pix, seed in zip(segs, pixels, [3, 4]):
        ref = quickshift(
            pix.permute(1, 2, 0).double().numpy(),
            ratio=0.2,
            kernel_size=kernel_size,
            max_dist=max_dist,
            rng=seed,
        )
        assert seg.dtype == np.int64 and set(np.unique(seg)) == set(range(int(seg.max()) + 1))
        # same partition as skimage up to relabelling
        pairs = set(zip(seg.ravel().tolist(), ref.ravel().tolist()))
        assert len(pairs) == len(np.unique(seg)) == len(np.unique(ref)) >= 4
    assert np.array_equal(quickshift_segments(np.zeros((6, 6, 1)), 2, 10, 0.2, 0), np.zeros((6, 6)))


@pytest.mark.numeric
def test_explain_properties_batch_equals_singles_and_state_restored():
    g = torch.Generator().manual_seed(1)
    pixels = nn.functional.interpolate(torch.rand(3, 3, 4, 4, generator=g), size=(24, 24), mode="nearest")
    images = CTX.normalize(pixels + 0.05 * torch.rand(3, 3, 24, 24, generator=g)).clamp(-3, 3).to(F64)
    before = images.clone()
    model = TinyNet().to(F64)
    model.train()
    method = Lime(model, CTX, LimeParams(kernel_size=2, max_dist=10, max_batch=17))
    targets = torch.tensor([0, 1, 2])
    maps = method.explain(images, targets, torch.Generator().manual_seed(0))
    assert maps.shape == (3, 24, 24) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.amax((1, 2)), torch.ones(3))  # min-max: (max - min) / span = 1 exactly
    assert torch.equal(images, before)
    assert model.training and model.bn.training
    assert not any(m._forward_hooks for m in model.modules())
    again = method.explain(images, targets, torch.Generator().manual_seed(0))
    assert torch.equal(maps, again)
    shared = torch.Generator().manual_seed(0)
    singles = torch.cat([method.explain(images[i : i + 1], targets[i : i + 1], shared) for i in range(3)])
    # float64: batched (chunks of 17 rows) and single-image logits ~1e-16 apart round to the same float32
    # scores (a flip would need a logit within 1e-16 of a rounding boundary), so the fits agree to ~1e-16
    # before the maps' float32 rounding: <= 1 ulp, 2**-24; 1e-6 also covers one flipped score (see F64)
    torch.testing.assert_close(singles, maps, atol=1e-6, rtol=0)
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        method.explain(images, targets, torch.Generator().manual_seed(0))
    assert model.training and model.bn.training


@pytest.mark.parametrize(
    "kwargs",
    [{"n_samples": 1}, {"distance": "l1"}, {"hide": "grey"}, {"regressor": "ols"}, {"segment_on": "x"}],
)
def test_invalid_params_rejected(kwargs):
    with pytest.raises(ConfigError):
        LimeParams(**kwargs)


def test_superpixels_are_computed_once_per_image_seed_and_parameters(monkeypatch):
    """The segmentation does not depend on the model: a second method (another model, e.g. a sanity
    check's randomised copy) on the same images and seeds takes the cached maps, bit for bit."""
    import salbench.methods.lime as lime_module

    calls = []
    real = lime_module.quickshift_segments
    monkeypatch.setattr(lime_module, "_SEGMENTS", type(lime_module._SEGMENTS)())
    monkeypatch.setattr(lime_module, "quickshift_segments", lambda *a, **k: calls.append(1) or real(*a, **k))
    images = torch.rand((2, 3, 24, 24), generator=torch.Generator().manual_seed(0))
    ctx = MethodContext(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=3)
    first = Lime(nn.Flatten(), ctx).segment(images, [5, 6])
    assert len(calls) == 2
    again = Lime(nn.Sequential(nn.Flatten()), ctx).segment(images, [5, 6])
    assert len(calls) == 2 and all(np.array_equal(a, b) for a, b in zip(first, again))
    Lime(nn.Flatten(), ctx).segment(images, [5, 7])  # another seed: computed
    Lime(nn.Flatten(), ctx).segment(images + 0.01, [5, 6])  # other pixels: computed
    assert len(calls) == 5
    assert np.array_equal(first[0], real(images[0].permute(1, 2, 0).double().numpy(), *_lengths(ctx), 5))


def test_superpixels_are_shared_by_every_target_of_an_image(monkeypatch):
    """Quickshift is seeded with ``segment_seed`` alone: explaining the same images for other targets with
    other per-image generators (another label set) segments nothing again."""
    import salbench.methods.lime as lime_module

    calls = []
    real = lime_module.quickshift_segments
    monkeypatch.setattr(lime_module, "_SEGMENTS", type(lime_module._SEGMENTS)())
    counted = lambda *a, **k: calls.append(a[-1]) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(lime_module, "quickshift_segments", counted)
    images = torch.rand((2, 3, 24, 24), generator=torch.Generator().manual_seed(0))
    ctx = MethodContext(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=3)
    method = Lime(nn.Flatten(), ctx, LimeParams(n_samples=8))
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    method.explain(images, torch.tensor([0, 1]), gens)
    assert calls == [42, 42]
    other = [torch.Generator().manual_seed(s) for s in (3, 4)]
    method.explain(images, torch.tensor([2, 0]), other)
    assert calls == [42, 42]  # the second label set's targets reuse both segmentations
    seeded = Lime(nn.Flatten(), ctx, LimeParams(n_samples=8, segment_seed=7))
    seeded.explain(images, torch.tensor([0, 1]), gens)
    assert calls == [42, 42, 7, 7]


def _lengths(ctx: MethodContext) -> tuple[float, float, float]:
    lime = Lime(nn.Flatten(), ctx)
    return (*lime.segmentation_lengths((24, 24)), lime.params.ratio)
