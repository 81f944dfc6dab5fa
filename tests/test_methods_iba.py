"""IBA: capacity and smoothing by hand, fitted statistics, batching, a known relevant position, properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from salbench.errors import ConfigError, SalbenchError
from salbench.methods.base import METHODS, MethodContext
from salbench.methods.iba import Iba, IbaParams, capacity, gaussian_kernel, smooth


class Net(nn.Module):
    """stem (BN) -> layer (stride-2 conv + ReLU, the bottleneck, 12x12 input -> 6x6) -> pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.layer = nn.Sequential(nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(5, 3)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer(self.stem(x))
        if self.fail:
            raise RuntimeError("boom")
        return self.fc(h.mean((2, 3)))


class Spot(nn.Module):
    """Logits read the bottleneck features at one position (i, j) only; layer output 6 x 8 x 8."""

    def __init__(self, i: int, j: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.layer = nn.Identity()
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            self.fc.weight.mul_(30)
        self.i, self.j = i, j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer(self.stem(x))[:, :, self.i, self.j])


def _images(n: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _fitted(model: nn.Module, params: IbaParams | None = None, n: int = 10, size: int = 12) -> Iba:
    iba = Iba(model, MethodContext(target_layer=model.layer, num_classes=3), params)
    images = _images(n, size)
    iba.fit([images[:4], images[4:]])
    return iba


def test_registered_with_metadata():
    assert METHODS.get("iba") is Iba
    assert Iba.family == "Learning" and Iba.deterministic is False
    p = IbaParams()
    assert (p.beta, p.steps, p.lr, p.n_noise, p.init_alpha, p.min_std) == (10.0, 10, 1.0, 10, 5.0, 0.01)
    with pytest.raises(ConfigError, match="target_layer"):
        Iba(Net(), MethodContext())


@pytest.mark.numeric
def test_capacity_by_hand_and_equals_gaussian_kl():
    # float64 throughout (a few correctly rounded operations on values < 2): 1e-12
    f64 = {"dtype": torch.float64}
    mean, std, half = torch.tensor(1.0, **f64), torch.tensor(2.0, **f64), torch.tensor(0.5, **f64)
    # r = mean, lambda = 1/2: -0.5 * (1 + ln 0.25 - 0 - 0.25) = 0.3181472 nats
    by_hand = -0.5 * (1 + math.log(0.25) - 0.25)
    assert float(capacity(torch.tensor(1.0, **f64), half, mean, std)) == pytest.approx(by_hand, abs=1e-12)
    # r' = (5 - 1) / 2 = 2 adds 0.5 * (lambda * r')^2 = 0.5
    assert float(capacity(torch.tensor(5.0, **f64), half, mean, std)) == pytest.approx(
        by_hand + 0.5, abs=1e-12
    )
    r = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = torch.rand(50, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.98 + 0.01
    rn = (r - 0.3) / 1.7
    kl = kl_divergence(Normal(lam * rn, 1 - lam), Normal(torch.zeros(50, **f64), torch.ones(50, **f64)))
    # float64 mean/std (float32 0.3 and 1.7 would be off by ~1e-8): the same algebra, ~1e-15 apart
    got = capacity(r, lam, torch.tensor(0.3, **f64), torch.tensor(1.7, **f64))
    torch.testing.assert_close(got, kl, rtol=0, atol=1e-12)


def test_gaussian_smoothing_as_reference_implementation():
    k = gaussian_kernel(1.0)
    assert k.shape == (5, 5)  # 2 * round(2 * sigma) + 1 taps
    # float64 weights normalised, then rounded to float32 (<= 2**-24 relative each): summed in float64
    # they are within 2**-24 of 1; their ratio within two roundings and a float32 division (3 * 2**-24)
    assert float(k.double().sum()) == pytest.approx(1.0, abs=2**-24)
    assert float(k[0, 0] / k[2, 2]) == pytest.approx(math.exp(-4.0), rel=3 * 2**-24)  # offset (2, 2): d^2 = 8
    assert torch.equal(k, k.T)
    const = torch.full((2, 3, 6, 6), 0.7)
    # reflection padding keeps constants: 0.7 * (float32 kernel sum, 1 +- 2**-24) with <= 25 float32
    # roundings: <= 26 * 2**-24 relative = 1.5e-6, within the float32 defaults (rtol 1.3e-6, atol 1e-5)
    torch.testing.assert_close(smooth(const, 1.0), const)
    x = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(smooth(x, 0.0), x)
    ref = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k.expand(2, 1, 5, 5), groups=2)
    torch.testing.assert_close(smooth(x, 1.0), ref)  # the same float32 convolution: float32 defaults
    assert smooth(torch.rand(1, 1, 2, 2), 1.0).shape == (1, 1, 2, 2)  # map smaller than the kernel


@pytest.mark.numeric
def test_fit_statistics_equal_torch_over_all_activations():
    # float64 model and images: the streamed float64 moments (batches of 3, 2, 6) and torch's over all
    # 11 agree to ~1e-15 relative; IBA stores them as float32 (one rounding, 2**-24 relative): rtol 2**-23
    model = Net().double()
    model.train()
    images = _images(11).double()
    iba = Iba(model, MethodContext(target_layer=model.layer), IbaParams(active_threshold=0.3))
    iba.fit([images[:3], (images[3:5], torch.zeros(2)), images[5:]])  # uneven batches, (images, labels)
    assert model.training and model.stem[1].training
    assert not any(m._forward_hooks for m in model.modules())
    with torch.no_grad():
        model.eval()
        acts = model.layer(model.stem(images))
    assert iba.n_fitted == 11
    torch.testing.assert_close(iba.feature_mean.double(), acts.mean(0), atol=1e-12, rtol=2**-23)
    torch.testing.assert_close(iba.feature_std.double(), acts.std(0), atol=1e-12, rtol=2**-23)
    assert torch.equal(iba.active, (acts != 0).double().mean(0) > 0.3)
    assert 0 < int(iba.active.sum()) < iba.active.numel()  # the threshold does something here


def test_explain_before_fit_and_tiny_fit_raise():
    model = Net()
    iba = Iba(model, MethodContext(target_layer=model.layer))
    with pytest.raises(SalbenchError, match="fit"):
        iba.explain(_images(1), torch.tensor([0]))
    with pytest.raises(SalbenchError, match="at least 2"):
        iba.fit([_images(1)])


@pytest.mark.numeric
def test_one_step_map_is_the_initial_capacity():
    """With one step the map is the capacity of the first forward: lambda = sigmoid(5) everywhere.

    IBA is float32 throughout (alpha, noise, logits), so the reference repeats its float32 operations
    on the same rows: the features of the 20-row expanded batch (r[::10]; a 2-row batch moves them by
    float32 ulps that the std >= 0.01 division and the min-max amplify to ~1e-6) and the smoothed lambda.
    What may differ is the order of the 5-channel sum, the 4-tap interpolation and the min-max:
    ~8 roundings of 2**-24 times max / span (<= 1.7): 1e-6."""
    model = Net().eval()
    iba = _fitted(model, IbaParams(steps=1))
    images = _images(2, seed=3)
    maps = iba.explain(images, torch.tensor([0, 2]), torch.Generator().manual_seed(0))
    with torch.no_grad():
        r = model.layer(model.stem(images.repeat_interleave(IbaParams().n_noise, 0)))[:: IbaParams().n_noise]
    std = iba.feature_std.clamp_min(0.01)
    lam = smooth(torch.sigmoid(torch.full_like(r, 5.0)), 1.0)
    # a constant smoothed by a float32 kernel: 1 +- 2**-24 times, <= 25 roundings
    torch.testing.assert_close(lam, torch.full_like(r, 1 / (1 + math.exp(-5.0))), rtol=26 * 2**-24, atol=0)
    cap = (capacity(r, lam, iba.feature_mean, std) * iba.active).sum(1, keepdim=True)
    up = F.interpolate(cap, size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    torch.testing.assert_close(maps, ((up - lo) / (hi - lo)).float(), atol=1e-6, rtol=0)


@pytest.mark.numeric
def test_batch_equals_single_images_and_seed_determinism():
    """Per-image alphas and element-wise Adam: the summed loss optimises each image independently.

    Float32 only (IBA creates alpha, noise and logits in float32 whatever the model's dtype), batches of
    6 vs 3 rows: equal here, but NOT bounded by analysis: Adam's step m / (sqrt(v) + 1e-8) turns
    gradient noise of ~1e-7 relative into O(lr) steps where a gradient is ~1e-8. 1e-5 is a guess kept
    until IBA can run in float64 (see the tolerance audit)."""
    model = Net().eval()
    iba = _fitted(model, IbaParams(steps=4, n_noise=3, max_batch=6))  # chunks of 2 images
    images, targets = _images(3, seed=5), torch.tensor([2, 0, 1])
    batch = iba.explain(images, targets, torch.Generator().manual_seed(7))
    shared = torch.Generator().manual_seed(7)
    singles = torch.cat([iba.explain(images[i : i + 1], targets[i : i + 1], shared) for i in range(3)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)
    assert torch.equal(batch, iba.explain(images, targets, torch.Generator().manual_seed(7)))


def test_noise_comes_from_the_generator():
    spot = _fitted(Spot(2, 5).eval(), n=16, size=8)
    images, targets = _images(2, size=8, seed=9), torch.tensor([0, 1])
    first = spot.explain(images, targets, torch.Generator().manual_seed(7))
    assert torch.equal(first, spot.explain(images, targets, torch.Generator().manual_seed(7)))
    other = spot.explain(images, targets, torch.Generator().manual_seed(8))
    assert float((other - first).abs().max()) > 1e-2


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_capacity_is_maximal_where_the_logit_reads(sigma):
    """Without smoothing the peak is exactly at (2, 5); the 5x5 Gaussian may move it by one cell."""
    model = Spot(2, 5).eval()
    iba = _fitted(model, IbaParams(sigma=sigma), n=16, size=8)
    maps = iba.explain(
        _images(4, size=8, seed=9), torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0)
    )
    peaks = [divmod(int(a), 8) for a in maps.flatten(1).argmax(1)]
    if sigma == 0.0:
        assert peaks == [(2, 5)] * 4
        far = torch.ones(8, 8, dtype=torch.bool)
        far[2, 5] = False
        assert float(maps[:, far].max()) < 0.05
    else:
        assert all(max(abs(i - 2), abs(j - 5)) <= 1 for i, j in peaks)


def test_properties_and_state_restored_even_on_error():
    model = Net()
    model.train()
    iba = _fitted(model, IbaParams(steps=2, n_noise=2))
    images = _images(3, seed=4)
    before = images.clone()
    maps = iba.explain(images, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    assert maps.shape == (3, 12, 12) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert torch.equal(images, before)
    assert model.training and model.stem[1].training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())
    model.fail = True  # raises after the bottleneck hook ran
    with pytest.raises(RuntimeError, match="boom"):
        iba.explain(images, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    assert model.training and model.stem[1].training
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"n_noise": 0}, {"lr": 0.0}, {"min_std": 0.0}, {"sigma": -1.0}]
)
def test_invalid_params_rejected(kwargs):
    with pytest.raises(ConfigError):
        IbaParams(**kwargs)


def test_saturated_lambda_gives_finite_capacity():
    cap = capacity(
        torch.tensor([0.0]), torch.sigmoid(torch.tensor([30.0])), torch.tensor(0.0), torch.tensor(1.0)
    )
    # float32: 1 - sigmoid(30) = 0 -> clamped at float32(1e-7) (1e-8 relative off), squared, log,
    # three sums on values <= 33: a few 2**-24 relative on 15.6; rel 1e-6
    assert torch.isfinite(cap).all() and float(cap) == pytest.approx(
        -0.5 * (1 + 2 * math.log(1e-7)), rel=1e-6
    )


# ---------------------------------------------------------------- transformer layouts


class TokenSpot(nn.Module):
    """:class:`Spot` with a ViT's layout: the stem's 8x8 map as 64 patch tokens (row-major, one pixel
    per patch) after a class token, ``layer`` on the tokens (N, 65, 6); the logits read patch (i, j)."""

    num_prefix_tokens = 1

    def __init__(self, i: int, j: int) -> None:
        super().__init__()
        self.spot = Spot(i, j)
        self.layer = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.spot.stem(x)
        tokens = torch.cat([torch.ones_like(g[:, :, 0, :1]).transpose(1, 2), g.flatten(2).transpose(1, 2)], 1)
        tokens = self.layer(tokens)
        return self.spot.fc(tokens[:, 1 + self.spot.i * g.shape[3] + self.spot.j])


def _swin_spot(i: int, j: int) -> nn.Module:
    """:class:`Spot` with Swin's layout: a torchvision Swin whose forward is the stem in channels-last
    (N, 8, 8, 6), its final ``norm`` (over 3 * 2 = 6 features; the family's target layer) and the head
    reading position (i, j)."""
    import torchvision

    class SwinSpot(torchvision.models.SwinTransformer):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.norm(self.spot.stem(x).permute(0, 2, 3, 1))
            return self.spot.fc(h[:, self.spot.i, self.spot.j, :])

    torch.manual_seed(0)
    model = SwinSpot(patch_size=[1, 1], embed_dim=3, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2])
    model.spot = Spot(i, j)
    return model


@pytest.mark.parametrize("layout", ["tokens", "nhwc"])
def test_capacity_is_maximal_where_the_logit_reads_tokens_and_channels_last(layout):
    """The bottleneck works on the patch grid of ViT tokens and of Swin's channels-last maps: without
    smoothing the peak is exactly at (2, 5), as for the (N, C, h, w) :class:`Spot`."""
    from salbench.models.layers import resolve_target_layer

    model = (TokenSpot(2, 5) if layout == "tokens" else _swin_spot(2, 5)).eval()
    _, layer = resolve_target_layer(model, "layer" if layout == "tokens" else "")
    assert layer is (model.layer if layout == "tokens" else model.norm)
    iba = Iba(model, MethodContext(target_layer=layer, num_classes=3), IbaParams(sigma=0.0))
    images = _images(16, size=8)
    iba.fit([images[:8], images[8:]])
    assert tuple(iba.feature_mean.shape) == (6, 8, 8)  # (C, h, w): the class token is not a feature
    maps = iba.explain(
        _images(4, size=8, seed=9), torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0)
    )
    assert [divmod(int(a), 8) for a in maps.flatten(1).argmax(1)] == [(2, 5)] * 4
    assert not any(m._forward_hooks for m in model.modules())


def test_not_applicable_without_a_layer_or_a_grid():
    """No target layer, or one whose output is a pooled vector: NotApplicableError (a ConfigError)."""
    from salbench.errors import NotApplicableError

    with pytest.raises(NotApplicableError, match="iba does not apply to Net as configured"):
        Iba(Net(), MethodContext())
    model = Net()
    iba = Iba(model, MethodContext(target_layer=model.fc, num_classes=3))
    with pytest.raises(NotApplicableError, match=r"iba does not apply to Net at target layer 'fc'"):
        iba.check_applies(_images(1))
    with pytest.raises(NotApplicableError, match="neither a feature map"):
        iba.fit([_images(4)])
    model.layer(model.stem(_images(1)))  # the model is left as it was: no hook
    assert not any(m._forward_hooks for m in model.modules())
