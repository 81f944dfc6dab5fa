"""Gradient-family methods and deprocessing: exact values on linear models, agreement with captum, and
registry-wide properties on two tiny CNNs (one with batch norm)."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from salbench.errors import ConfigError, DataError
from salbench.methods import METHODS, MethodContext
from salbench.methods.deprocess import get_deprocessor, jacobgil, smoothgrad
from salbench.methods.gradients import (
    Gradient,
    GradientParams,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    IntegratedGradientsParams,
    SmoothGrad,
    SmoothGradParams,
    riemann_rule,
)

C, H, W, K = 3, 8, 8, 4
GRADIENT_IDS = ["gradient", "input_x_gradient", "guided_backprop", "integrated_gradients", "smoothgrad"]
SMALL = {"integrated_gradients": {"n_steps": 6, "internal_batch_size": 5}, "smoothgrad": {"n_samples": 3}}


class TinyCNN(nn.Module):
    """conv-(bn)-relu(inplace) -> conv(stride 2)-(bn)-relu -> mean pool -> linear; dropout optional."""

    def __init__(self, bn: bool, dropout: float = 0.0) -> None:
        super().__init__()

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if bn else nn.Identity()

        self.features = nn.Sequential(
            nn.Conv2d(C, 5, 3, padding=1), norm(5), nn.ReLU(inplace=True),
            nn.Conv2d(5, 6, 3, padding=1, stride=2), norm(6), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(6, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


def make_model(
    bn: bool, dropout: float = 0.0, seed: int = 0, dtype: torch.dtype = torch.float32
) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyCNN(bn, dropout)
    with torch.no_grad():  # non-trivial running statistics, so eval and train mode differ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.to(dtype)


def batch(n: int = 3, seed: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, H, W, generator=g).to(dtype), torch.arange(n) % K


# Comparisons of two gradient computations run float64 models and images (F64): batch layouts, chunk
# sizes and captum's code paths then differ by ~1e-16 relative; raw attributions here are <= ~0.1,
# so atol 1e-12 keeps a margin of 1e3 or more (float32: ~1e-9..1e-8 apart, deprocessed maps ~1e-6).
F64 = torch.float64


CTX = MethodContext(num_classes=K)


def linear_model(weight: torch.Tensor) -> nn.Module:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=True, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.uniform_(-1, 1)
    return nn.Sequential(nn.Flatten(), lin)


# ---------------------------------------------------------------- deprocessing


def test_smoothgrad_deprocess_exact_on_2x2x2() -> None:
    g = torch.tensor([[[[-1.0, 2.0], [0.0, 3.0]], [[4.0, -5.0], [1.0, 0.0]]]])
    # max_c |g| = [[4, 5], [1, 3]]; min-max with min 1, max 5
    assert torch.equal(smoothgrad(g), torch.tensor([[[0.75, 1.0], [0.0, 0.5]]]))


def test_jacobgil_deprocess_exact_on_2x2x2() -> None:
    g = torch.tensor([[[[-1.0, 1.0], [1.0, -1.0]], [[2.0, 2.0], [2.0, 6.0]]]])
    # channel 0: mean 0, std 1 -> 0.5 +- 0.1; channel 1: mean 3, std sqrt(3), z = -1/sqrt3 or sqrt3
    c0 = torch.tensor([[0.4, 0.6], [0.6, 0.4]])
    lo, hi = 0.5 - 0.1 / math.sqrt(3), 0.5 + 0.1 * math.sqrt(3)
    c1 = torch.tensor([[lo, lo], [lo, hi]])
    # jacobgil works in float32: exact sums of 4 small integers, then sqrt, division, scale, shift, clamp
    # and a 2-channel mean, each correctly rounded (the same on every IEEE machine); worst case
    # ~4 roundings of 2**-24 relative on values <= 0.75: 1.8e-7 (observed 2e-8)
    torch.testing.assert_close(jacobgil(g), ((c0 + c1) / 2).unsqueeze(0), rtol=0, atol=2e-7)


def test_jacobgil_clips_outliers_and_guards_constant_channels() -> None:
    g = torch.zeros(1, 2, 6, 6)
    g[0, 0, 0, 0] = 1.0  # one outlier among 36 pixels: z = sqrt(35) > 5 -> clipped to 1
    g[0, 1] = 7.0  # constant channel: std 0 -> 0.5 everywhere
    out = jacobgil(g)
    z_rest = -1.0 / math.sqrt(35)  # the 35 other pixels
    expected = torch.full((1, 6, 6), (0.5 + 0.1 * z_rest + 0.5) / 2)
    expected[0, 0, 0] = (1.0 + 0.5) / 2
    # as above (the 36-term float32 sums add ~1e-9 in any order)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-7)


def test_smoothgrad_deprocess_constant_is_zero_and_unknown_name_rejected() -> None:
    assert torch.equal(smoothgrad(torch.zeros(2, 3, 4, 4)), torch.zeros(2, 4, 4))
    with pytest.raises(ConfigError, match="deprocess"):
        get_deprocessor("nope")


# ---------------------------------------------------------------- exact values on linear models


def test_gradient_of_linear_model_is_the_target_row() -> None:
    weight = torch.randn(K, C * H * W, generator=torch.Generator().manual_seed(3))
    model = linear_model(weight)
    x, t = batch(3)
    raw = Gradient(model, CTX).raw_attributions(x, t)
    assert torch.equal(raw, weight[t].view(3, C, H, W))
    raw_ixg = InputXGradient(model, CTX).raw_attributions(x, t)
    assert torch.equal(raw_ixg, x * weight[t].view(3, C, H, W))


def test_integrated_gradients_on_linear_model_is_x_times_w_exactly() -> None:
    # Small-integer weights and quarter steps keep every product and partial sum exact in float32.
    gen = torch.Generator().manual_seed(4)
    weight = torch.randint(-3, 4, (K, C * H * W), generator=gen).float()
    x = torch.randint(-4, 5, (2, C, H, W), generator=gen).float()
    t = torch.tensor([1, 3])
    params = IntegratedGradientsParams(n_steps=4, rule="riemann_middle", internal_batch_size=3)
    raw = IntegratedGradients(linear_model(weight), CTX, params).raw_attributions(x, t)
    assert torch.equal(raw, (x - 0) * weight[t].view(2, C, H, W))


@pytest.mark.numeric
@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_integrated_gradients_linear_float64_every_rule(rule: str) -> None:
    weight = torch.randn(K, C * H * W, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    t = torch.tensor([0, 2])
    params = IntegratedGradientsParams(n_steps=100, rule=rule)
    raw = IntegratedGradients(linear_model(weight), CTX, params).raw_attributions(x, t)
    # float64: 100 weighted gradients summed, ~100 * 2**-53 relative: 1e-12
    torch.testing.assert_close(raw, x * weight[t].view(2, C, H, W), rtol=1e-12, atol=1e-12)


def test_riemann_rules_nodes_and_weights() -> None:
    alphas, w = riemann_rule("riemann_right", 4)
    assert alphas.tolist() == [0.25, 0.5, 0.75, 1.0] and w.tolist() == [0.25] * 4
    alphas, w = riemann_rule("riemann_trapezoid", 3)
    assert alphas.tolist() == [0.0, 0.5, 1.0] and w.tolist() == [0.25, 0.5, 0.25]
    assert riemann_rule("riemann_middle", 2)[0].tolist() == [0.25, 0.75]
    assert riemann_rule("riemann_left", 2)[0].tolist() == [0.0, 0.5]


# ---------------------------------------------------------------- agreement with captum


def relu_cnn(inplace: bool, seed: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(C, 5, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.Conv2d(5, 6, 3, padding=1, stride=2), nn.ReLU(inplace=inplace),
        nn.Flatten(), nn.Linear(6 * (H // 2) * (W // 2), K),
    )  # fmt: skip


@pytest.mark.numeric
@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_integrated_gradients_agrees_with_captum(rule: str) -> None:
    """Same nodes and weights, float64 model and images. captum rounds its step sizes to float32
    (``torch.tensor(step_sizes).float()``): each weight is off by <= 2**-24 relative, so an attribution
    sum_k w_k g_k x by <= 2**-24 sum_k w_k |g_k x| <~ a few 2**-24 max|attribution| (ReLU network:
    gradients constant between kinks); atol 4 * 2**-24 * max|ref| (observed ~1.5e-8 relative)."""
    from captum.attr import IntegratedGradients as CaptumIG

    model = relu_cnn(False).double()
    x, t = batch(3, dtype=F64)
    n = 20
    ours = IntegratedGradients(
        model, CTX, IntegratedGradientsParams(n_steps=n, rule=rule, internal_batch_size=7)
    )
    ref = CaptumIG(model).attribute(x, baselines=0.0, target=t, n_steps=n, method=rule)
    # captum's trapezoid weights sum to (n-1)/n (documented deviation); the other rules agree as is
    scale = (n - 1) / n if rule == "riemann_trapezoid" else 1.0
    atol = 4 * 2**-24 * float(ref.abs().max())
    torch.testing.assert_close(ours.raw_attributions(x, t) * scale, ref, rtol=0, atol=atol)


@pytest.mark.numeric
def test_guided_backprop_agrees_with_captum_and_handles_inplace_relu() -> None:
    """Both apply relu to the ReLU's input gradient; the arithmetic is identical. float64: 1e-12."""
    from captum.attr import GuidedBackprop as CaptumGBP

    model, model_inplace = relu_cnn(False).double(), relu_cnn(True).double()
    x, t = batch(3, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it sets hooks
        ref = CaptumGBP(model).attribute(x.clone(), target=t)
    ours = GuidedBackprop(model, CTX).raw_attributions(x, t)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        GuidedBackprop(model_inplace, CTX).raw_attributions(x, t), ref, rtol=0, atol=1e-12
    )
    assert not torch.allclose(ours, Gradient(model, CTX).raw_attributions(x, t))  # the guide changed it


def test_guided_backprop_leaves_functional_relu_unguided() -> None:
    """Documented limitation: F.relu is not a module, so a model using it gets its plain gradient."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(C, 4, 3, padding=1), nn.Linear(4 * H * W, K)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    model = Functional()
    x, t = batch(2)
    gbp = GuidedBackprop(model, CTX).raw_attributions(x, t)
    assert torch.equal(gbp, Gradient(model, CTX).raw_attributions(x, t))


# ---------------------------------------------------------------- SmoothGrad, train mode, params


@pytest.mark.numeric
def test_smoothgrad_without_noise_is_the_gradient_and_needs_a_generator() -> None:
    model = make_model(bn=False, dtype=F64)  # chunks of 2 vs one batch: float64, 1e-12 (see F64)
    x, t = batch(2, dtype=F64)
    sg = SmoothGrad(model, CTX, SmoothGradParams(n_samples=3, noise_level=0.0, internal_batch_size=2))
    raw = sg.raw_attributions(x, t, torch.Generator().manual_seed(0))
    torch.testing.assert_close(raw, Gradient(model, CTX).raw_attributions(x, t), rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="Generator"):
        sg.raw_attributions(x, t, None)


@pytest.mark.numeric
def test_smoothgrad_is_the_mean_gradient_over_generator_noise() -> None:
    model = make_model(bn=False, dtype=F64)  # float64 noise draws and passes: 1e-12 (see F64)
    x, t = batch(2, dtype=F64)
    params = SmoothGradParams(n_samples=4, noise_level=0.2, internal_batch_size=3)
    raw = SmoothGrad(model, CTX, params).raw_attributions(x, t, torch.Generator().manual_seed(9))
    gen, grad = torch.Generator().manual_seed(9), Gradient(model, CTX)
    for i in range(2):
        sigma = 0.2 * (x[i].max() - x[i].min())
        noisy = x[i] + sigma * torch.randn((4, C, H, W), generator=gen, dtype=F64)
        expected = grad.raw_attributions(noisy, t[i].repeat(4)).mean(0)
        torch.testing.assert_close(raw[i], expected, rtol=0, atol=1e-12)


@pytest.mark.numeric
def test_train_mode_uses_batch_statistics_one_image_at_a_time() -> None:
    model = make_model(bn=True, dtype=F64)  # batched vs one image per pass: float64, 1e-12 (see F64)
    x, t = batch(3, dtype=F64)
    raw = Gradient(model, CTX, GradientParams(train_mode=True)).raw_attributions(x, t)
    reference = copy.deepcopy(model).train()
    expected = []
    for i in range(3):
        xi = x[i : i + 1].clone().requires_grad_(True)
        reference(xi)[0, t[i]].backward()
        expected.append(xi.grad)
    torch.testing.assert_close(raw, torch.cat(expected), rtol=0, atol=1e-12)
    assert not torch.allclose(raw, Gradient(model, CTX).raw_attributions(x, t), atol=1e-4)


@pytest.mark.numeric
def test_train_mode_integrated_gradients_equals_one_forward_per_path_point() -> None:
    """Batched passes with per-sample batch norm == the study's batch of one per interpolation step
    (float64, see F64: 1e-12)."""
    model = make_model(bn=True, dtype=F64)
    x, t = batch(2, dtype=F64)
    params = IntegratedGradientsParams(train_mode=True, n_steps=4, internal_batch_size=3)
    raw = IntegratedGradients(model, CTX, params).raw_attributions(x, t)
    reference = copy.deepcopy(model).train()
    expected = torch.zeros_like(x)
    for i in range(2):
        for k in range(1, 5):
            xi = (x[i : i + 1] * k / 4).clone().requires_grad_(True)
            reference(xi)[0, t[i]].backward()
            expected[i] += xi.grad[0] * x[i] / 4
    torch.testing.assert_close(raw, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", GRADIENT_IDS)
def test_train_mode_leaves_parameters_buffers_and_rng_untouched(name: str) -> None:
    model = make_model(bn=True, dropout=0.5)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    params = METHODS.get(name).params_cls(train_mode=True, **SMALL.get(name, {}))
    method = METHODS.get(name)(model, CTX, params)
    x, t = batch(2)
    first = method(x, t, torch.Generator().manual_seed(0))
    second = method(x, t, torch.Generator().manual_seed(0))
    assert torch.equal(first, second)  # dropout is seeded from the generator
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert model.training is False and all(not m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_params_validation_and_store_id() -> None:
    model = make_model(bn=False)
    assert Gradient(model, CTX).store_id == "gradient_smoothgrad"
    assert IntegratedGradients(model, CTX, IntegratedGradientsParams(deprocess="jacobgil")).store_id == (
        "integrated_gradients_jacobgil"
    )
    with pytest.raises(ConfigError, match="deprocess"):
        Gradient(model, CTX, GradientParams(deprocess="minmax"))
    with pytest.raises(ConfigError, match="rule"):
        IntegratedGradients(model, CTX, IntegratedGradientsParams(rule="gausslegendre"))
    with pytest.raises(ConfigError, match="n_steps"):
        IntegratedGradients(model, CTX, IntegratedGradientsParams(rule="riemann_trapezoid", n_steps=1))
    with pytest.raises(ConfigError, match="n_samples"):
        SmoothGrad(model, CTX, SmoothGradParams(n_samples=0))
    x, _ = batch(2)
    with pytest.raises(DataError, match="targets"):
        Gradient(model, CTX)(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="images"):
        Gradient(model, CTX)(x[0], torch.tensor([0]))


# ---------------------------------------------------------------- registry-wide properties


def module_state(model: nn.Module) -> list[tuple[bool, int, int, int]]:
    return [
        (m.training, len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks))
        for m in model.modules()
    ]


CASES = [
    (name, deprocess, train, bn)
    for name in GRADIENT_IDS
    for deprocess in ("smoothgrad", "jacobgil")
    for train in (False, True)
    for bn in (False, True)
]


@pytest.mark.numeric
@pytest.mark.parametrize(("name", "deprocess", "train", "bn"), CASES)
def test_gradient_method_properties(name: str, deprocess: str, train: bool, bn: bool) -> None:
    model = make_model(bn)
    model.train()
    model.features[0].eval()  # mixed flags: every module's own flag must come back
    state, weights = module_state(model), {k: v.clone() for k, v in model.state_dict().items()}
    cls = METHODS.get(name)
    method = cls(model, CTX, cls.params_cls(deprocess=deprocess, train_mode=train, **SMALL.get(name, {})))
    x, t = batch(3)
    x_copy, t_copy = x.clone(), t.clone()

    maps = method(x, t, torch.Generator().manual_seed(0))
    assert maps.shape == (3, H, W) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.amax(dim=(1, 2)).gt(0).all()  # informative maps, not a degenerate all-zero result
    assert torch.equal(x, x_copy) and torch.equal(t, t_copy)
    assert torch.equal(method(x, t, torch.Generator().manual_seed(0)), maps)  # same seed, same maps
    assert method(x[:0], t[:0], torch.Generator().manual_seed(0)).shape == (0, H, W)
    if cls.deterministic:
        # float64 copies: raw attributions ~1e-16 apart. smoothgrad deprocessing min-maxes in float64
        # and rounds to float32 once: <= 1 ulp (2**-24). jacobgil rounds the raw values to float32 first
        # (a flipped rounding: 2**-24 |g|) and standardises in float32 (64-term sums in another order):
        # z moves by ~10 ulps * max|g| / std (<= 8 + |mean| / std), the map (0.1 z) by < 1e-6
        md, xd = copy.deepcopy(model).double(), x.double()
        method_d = cls(md, CTX, method.params)
        single = torch.cat([method_d(xd[i : i + 1], t[i : i + 1], None) for i in range(3)])
        atol = 2**-24 if deprocess == "smoothgrad" else 1e-6
        torch.testing.assert_close(single, method_d(xd, t, None), rtol=0, atol=atol)
    assert module_state(model) == state
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())

    # excinfo keeps the failing frames (and any library object in them) alive: hooks must be gone anyway
    with pytest.raises(DataError, match="out of range") as excinfo:
        method(x, torch.tensor([0, K, 1]), torch.Generator().manual_seed(0))
    assert module_state(model) == state and excinfo.traceback
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
