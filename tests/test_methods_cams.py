"""CAM wrappers: wiring against pytorch-grad-cam and a hand-written Grad-CAM, constant and non-finite
CAMs, state restored on error, and registry-wide properties on two tiny CNNs (one with batch norm)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salbench.errors import ConfigError, DataError
from salbench.methods import METHODS, MethodContext
from salbench.methods.cams import (
    AblationCAMMethod,
    AblationCAMParams,
    GradCAMMethod,
    ScoreCAMMethod,
    ScoreCAMParams,
)

C, H, W, K = 3, 12, 12, 4
CAM_IDS = ["gradcam", "gradcampp", "scorecam", "xgradcam", "layercam", "ablationcam", "eigengradcam"]


class TinyCNN(nn.Module):
    """``features`` (the target block, output (N,6,6,6)) -> mean pool -> linear."""

    def __init__(self, bn: bool) -> None:
        super().__init__()

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if bn else nn.Identity()

        self.features = nn.Sequential(
            nn.Conv2d(C, 5, 3, padding=1), norm(5), nn.ReLU(inplace=True),
            nn.Conv2d(5, 6, 3, padding=1, stride=2), norm(6), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, K))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_model(bn: bool, seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN(bn)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.to(dtype)


def batch(n: int = 3, seed: int = 1, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, H, W, generator=g).to(dtype), torch.arange(n) % K


# Comparisons of two CAM computations run a float64 model and images (F64): the float64 CAMs then
# differ by ~1e-16 between batch layouts, deep copies or library calls. pytorch-grad-cam finishes in
# float32 (cast, cv2 resize, min-max with a 1e-7 epsilon, twice), so a rounding flipped by that noise
# moves a map value in [0, 1] by a few float32 ulps (2**-24 each, the min-max dividing by a span ~1
# after the first one): atol 1e-6. (float32 models: layouts alone move maps by up to ~1e-6.)
F64 = torch.float64
CAM_ATOL = 1e-6


def context(model: TinyCNN) -> MethodContext:
    return MethodContext(target_layer=model.features, num_classes=K)


def hooks_and_flags(model: nn.Module) -> list[tuple[bool, int, int, int]]:
    return [
        (m.training, len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks))
        for m in model.modules()
    ]


# ---------------------------------------------------------------- wiring


@pytest.mark.numeric
def test_gradcam_equals_pytorch_grad_cam() -> None:
    """Same library path, float64 model: identical up to the library's float32 rounding (CAM_ATOL)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = make_model(bn=True, dtype=F64)
    reference = copy.deepcopy(model)
    x, t = batch(3, dtype=F64)
    with GradCAM(model=reference, target_layers=[reference.features]) as cam:
        expected = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(c)) for c in t])
    ours = GradCAMMethod(model, context(model))(x, t)
    torch.testing.assert_close(ours, torch.from_numpy(expected), rtol=0, atol=CAM_ATOL)


@pytest.mark.numeric
@pytest.mark.parametrize("name", CAM_IDS)
def test_every_cam_equals_its_library_class(name: str) -> None:
    """Each id is wired to the right library class with the library's defaults (float64, CAM_ATOL)."""
    import pytorch_grad_cam as lib
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = {
        "gradcam": lib.GradCAM, "gradcampp": lib.GradCAMPlusPlus, "scorecam": lib.ScoreCAM,
        "xgradcam": lib.XGradCAM, "layercam": lib.LayerCAM, "ablationcam": lib.AblationCAM,
        "eigengradcam": lib.EigenGradCAM,
    }  # fmt: skip
    model = make_model(bn=True, seed=2, dtype=F64)
    reference = copy.deepcopy(model)
    x, t = batch(2, seed=3, dtype=F64)
    cam = classes[name](model=reference, target_layers=[reference.features])
    expected = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(c)) for c in t])
    cam.activations_and_grads.release()
    ours = METHODS.get(name)(model, context(model))(x, t)
    torch.testing.assert_close(ours, torch.from_numpy(expected), rtol=0, atol=CAM_ATOL)


@pytest.mark.numeric
def test_gradcam_equals_hand_written_gradcam() -> None:
    """Independent check of layer, targets, ReLU, bilinear upsampling and min-max: Selvaraju et al. eq. 1-2
    with torch's bilinear (half-pixel centres, as cv2.INTER_LINEAR), float64 here. Tolerance: the
    library's first min-max divides by (1e-7 + span of the raw CAM), a uniform rescaling that its second
    min-max undoes; the second divides by (1e-7 + span of the upsampled map, >= 0.5 here), moving values
    <= 1 by <= 2e-7; its float32 cast, cv2 resize and divisions cost <= 8 roundings of 2**-24: 7e-7."""
    model = make_model(bn=True, dtype=F64).eval()
    x, t = batch(3, dtype=F64)
    feats = model.features(x)
    feats.retain_grad()
    model.head(feats).gather(1, t.view(-1, 1)).sum().backward()
    alpha = feats.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * feats).sum(1, keepdim=True)).detach()
    cam = (cam - cam.amin((2, 3), keepdim=True)) / cam.amax((2, 3), keepdim=True).sub(
        cam.amin((2, 3), keepdim=True)
    )
    up = F.interpolate(cam, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    expected = (up - lo) / (hi - lo)
    assert float(cam.amax()) > 0 and float((hi - lo).min()) >= 0.5
    ours = GradCAMMethod(model, context(model))(x, t)
    torch.testing.assert_close(ours.double(), expected, rtol=0, atol=2e-7 + 8 * 2**-24)


@pytest.mark.parametrize("name", CAM_IDS)
def test_cam_targets_matter(name: str) -> None:
    """The target index reaches the library: another class gives another map."""
    model = make_model(bn=False)
    method = METHODS.get(name)(model, context(model))
    x, _ = batch(1)
    maps = [method(x, torch.tensor([c])) for c in range(K)]
    assert any(not torch.allclose(maps[0], m, atol=1e-4) for m in maps[1:])


@pytest.mark.numeric
def test_batch_size_params_do_not_change_the_maps() -> None:
    model = make_model(bn=True, dtype=F64)  # other library batch sizes: float64, CAM_ATOL
    x, t = batch(2, dtype=F64)
    ctx = context(model)
    sc1 = ScoreCAMMethod(model, ctx, ScoreCAMParams(batch_size=1))(x, t)
    sc16 = ScoreCAMMethod(model, ctx, ScoreCAMParams(batch_size=16))(x, t)
    torch.testing.assert_close(sc1, sc16, rtol=0, atol=CAM_ATOL)
    ab1 = AblationCAMMethod(model, ctx, AblationCAMParams(batch_size=1))(x, t)
    ab32 = AblationCAMMethod(model, ctx, AblationCAMParams(batch_size=32))(x, t)
    torch.testing.assert_close(ab1, ab32, rtol=0, atol=CAM_ATOL)
    with pytest.raises(ConfigError, match="batch_size"):
        ScoreCAMMethod(model, ctx, ScoreCAMParams(batch_size=0))
    with pytest.raises(ConfigError, match="ratio_channels_to_ablate"):
        AblationCAMMethod(model, ctx, AblationCAMParams(ratio_channels_to_ablate=0.0))


def test_missing_target_layer_is_a_config_error() -> None:
    model = make_model(bn=False)
    with pytest.raises(ConfigError, match="target layer"):
        GradCAMMethod(model, MethodContext(num_classes=K))(*batch(1))


# ---------------------------------------------------------------- constant and non-finite CAMs


@pytest.mark.parametrize("name", CAM_IDS)
def test_constant_cam_is_finite_zeros(name: str) -> None:
    model = make_model(bn=False)
    with torch.no_grad():  # target block output = ReLU(bias) = 1 everywhere: every CAM is constant
        model.features[3].weight.zero_()
        model.features[3].bias.fill_(1.0)
    maps = METHODS.get(name)(model, context(model))(*batch(2))
    assert torch.equal(maps, torch.zeros(2, H, W))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_ablationcam_nan_map_becomes_zeros(caplog: pytest.LogCaptureFixture) -> None:
    model = make_model(bn=False)
    with torch.no_grad():  # logit of class 0 is exactly 0 -> library weight (0 - 0) / 0 = NaN
        model.head[2].weight[0].zero_()
        model.head[2].bias[0] = 0.0
    x, _ = batch(2)
    maps = AblationCAMMethod(model, context(model))(x, torch.tensor([0, 1]))
    assert torch.equal(maps[0], torch.zeros(H, W))
    assert torch.isfinite(maps).all() and float(maps[1].max()) > 0.99
    assert "1 of 2 maps were not finite" in caplog.text  # the library's map was NaN; the guard zeroed it


# ---------------------------------------------------------------- state after errors


class Tripwire(nn.Module):
    """Raises when a batch larger than ``limit`` passes: fails inside AblationCAM's ablation loop."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise RuntimeError("tripwire")
        return x


def test_ablationcam_restores_the_target_layer_after_an_error() -> None:
    model = make_model(bn=True)
    model.head.insert(0, Tripwire(limit=2))
    features = model.features
    state = hooks_and_flags(model)
    method = AblationCAMMethod(model, context(model), AblationCAMParams(batch_size=4))
    with pytest.raises(RuntimeError, match="tripwire"):
        method(*batch(2))
    assert model.features is features
    assert hooks_and_flags(model) == state


def test_parameter_grads_are_preserved() -> None:
    model = make_model(bn=True)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    GradCAMMethod(model, context(model))(*batch(2))
    assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) and p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- registry-wide properties


@pytest.mark.numeric
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("name", CAM_IDS)
def test_cam_properties(name: str, bn: bool) -> None:
    model = make_model(bn, dtype=F64)  # float64: single images vs the batch within CAM_ATOL
    model.train()
    model.features[0].eval()  # mixed flags: every module's own flag must come back
    state, weights = hooks_and_flags(model), {k: v.clone() for k, v in model.state_dict().items()}
    cls = METHODS.get(name)
    method = cls(model, context(model))
    assert cls.family == "CAM" and method.store_id == name
    x, t = batch(3, dtype=F64)
    x_copy, t_copy = x.clone(), t.clone()

    maps = method(x, t, torch.Generator().manual_seed(0))
    assert maps.shape == (3, H, W) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    # the library's last min-max divides by (1e-7 + span), spans ~0.5..1 after its first one: the
    # maximum is 1 - 1e-7 / span (observed >= 1 - 1.8e-7), then rounded to float32; 1e-6 allows spans
    # down to 0.1. The minimum is (min - min) / ... = 0 exactly
    np.testing.assert_allclose(maps.amax(dim=(1, 2)).numpy(), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(maps.amin(dim=(1, 2)).numpy(), 0.0)
    assert torch.equal(x, x_copy) and torch.equal(t, t_copy) and not x.requires_grad
    assert torch.equal(method(x, t, torch.Generator().manual_seed(0)), maps)
    assert method(x[:0], t[:0]).shape == (0, H, W)
    single = torch.cat([method(x[i : i + 1], t[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(single, maps, rtol=0, atol=CAM_ATOL)
    assert hooks_and_flags(model) == state
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())

    # excinfo keeps the failing frames (and any library object in them) alive: hooks must be gone anyway
    with pytest.raises(DataError, match="out of range") as excinfo:
        method(x, torch.tensor([0, K, 1]))
    assert hooks_and_flags(model) == state and excinfo.traceback
    assert model.features is not None and not any("Ablation" in type(m).__name__ for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
