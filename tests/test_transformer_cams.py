"""CAM methods on transformers: target-layer rules per architecture family, the token-to-grid reshape
(checked by hand and against pytorch-grad-cam's own ``reshape_transform`` examples), every CAM method on
ViT/DeiT/Swin from timm and torchvision (random init, tiny configurations), and one-line errors for layers
a CAM cannot read."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform, vit_reshape_transform
from torch import nn

from salbench.config import ModelConfig
from salbench.errors import ConfigError
from salbench.methods import METHODS, MethodContext
from salbench.methods.base import Preparation
from salbench.methods.cams import GradCAMMethod
from salbench.methods.iba import Iba, IbaParams
from salbench.models.layers import (
    FeatureLayout,
    architecture_rule,
    feature_layout,
    get_submodule,
    patch_grid,
    resolve_target_layer,
)
from salbench.models.registry import build_model

timm = pytest.importorskip("timm")

CAM_IDS = ["gradcam", "gradcampp", "scorecam", "xgradcam", "layercam", "ablationcam", "eigengradcam"]
K = 5


# ---------------------------------------------------------------- the reshape, by hand


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_token_of_patch_ij_lands_in_grid_cell_ij(prefix):
    """Patch tokens are row-major after ``prefix`` class/distillation tokens: token ``prefix + i*w + j`` is
    cell ``(i, j)``, on a 4x6 grid (a 32x48 input in 8-pixel patches), told or inferred."""
    n, h, w, c = 2, 4, 6, 3
    patches = torch.arange(n * h * w * c, dtype=torch.float32).reshape(n, h, w, c)
    tokens = torch.cat([torch.full((n, prefix, c), -1.0), patches.reshape(n, h * w, c)], dim=1)
    # told, inferred, or told wrongly (as a layer before the class token is prepended would be)
    layouts = [FeatureLayout(prefix_tokens=p) for p in (prefix, None, prefix + 3)]
    for layout in layouts:
        grid = layout.to_grid(tokens, (32, 48))
        assert grid.shape == (n, c, h, w)
        for i in range(h):
            for j in range(w):
                assert torch.equal(grid[:, :, i, j], patches[:, i, j, :])
    nhwc = FeatureLayout(channels_last=True).to_grid(patches, (32, 48))
    assert torch.equal(nhwc, patches.permute(0, 3, 1, 2))


def test_patch_grid_follows_the_input_aspect_ratio():
    assert patch_grid(196, (224, 224)) == (14, 14)
    assert patch_grid(24, (32, 48)) == (4, 6)
    assert patch_grid(24, (48, 32)) == (6, 4)
    assert patch_grid(197, (224, 224)) is None  # the class token left in
    assert patch_grid(0, (32, 32)) is None


class TokenViT(nn.Module):
    """A ViT whose tokens we control: patch ``(i, j)``'s token is the mean of that 8x8 patch (one
    channel), after one class token; the class-``k`` logit is ``weight_k * sum of patch tokens``.

    Its Grad-CAM at ``norm`` is therefore ``ReLU(weight_k * patch means)`` on the patch grid.
    """

    num_prefix_tokens = 1

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Identity()
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.avg_pool2d(x.mean(1, keepdim=True), 8)  # (N, 1, h, w)
        tokens = patches.flatten(2).transpose(1, 2)  # (N, h*w, 1), row-major as timm/torchvision
        tokens = self.norm(torch.cat([torch.zeros_like(tokens[:, :1]), tokens], dim=1))
        return self.head(tokens[:, 1:].sum(1))


class GridTwin(nn.Module):
    """The same function as :class:`TokenViT` with its target layer in (N, C, h, w) layout."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.AvgPool2d(8)
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.mean(1, keepdim=True)).sum((2, 3)))


def test_gradcam_on_controlled_tokens_marks_the_bright_patch():
    """One bright patch at grid cell (1, 4) of a 4x6 grid: the map peaks inside that patch, and equals
    the map of the same function with its feature map in (N, C, h, w) layout (no reshape needed)."""
    x = torch.zeros(1, 3, 32, 48)
    x[:, :, 8:16, 32:40] = 1.0
    x[:, :, 24:32, 0:8] = 0.25  # a dimmer patch at (3, 0)
    target = torch.tensor([0])
    vit = TokenViT()
    maps = GradCAMMethod(vit, MethodContext(target_layer=vit.norm, num_classes=2))(x, target)
    assert maps.shape == (1, 32, 48)
    row, col = divmod(int(maps[0].argmax()), 48)
    assert (row // 8, col // 8) == (1, 4)
    twin = GridTwin()
    expected = GradCAMMethod(twin, MethodContext(target_layer=twin.features, num_classes=2))(x, target)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)
    assert float(maps[0, 28, 4]) > 0.0  # the dim patch is seen, where the token layout put it


# ---------------------------------------------------------------- models


def timm_vit() -> nn.Module:
    """timm ViT-Tiny, 8-pixel patches on 32x48 inputs: a 4x6 grid after one class token."""
    kwargs = {"img_size": (32, 48), "patch_size": 8, "depth": 2}
    return build_model(ModelConfig(name="timm:vit_tiny_patch16_224", kwargs=kwargs, num_classes=K))[0]


def timm_deit() -> nn.Module:
    """timm DeiT distilled (class + distillation token), 4x4 grid on 32x32."""
    kwargs = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 2}
    return build_model(
        ModelConfig(name="timm:deit_tiny_distilled_patch16_224", kwargs=kwargs, num_classes=K)
    )[0]


def timm_swin() -> nn.Module:
    """timm Swin with two one-block stages: channels-last 4x4 maps on 32x32."""
    kwargs = {"img_size": 32, "embed_dim": 16, "depths": (1, 1), "num_heads": (1, 2), "window_size": 4}
    return build_model(ModelConfig(name="timm:swin_tiny_patch4_window7_224", kwargs=kwargs, num_classes=K))[0]


def torchvision_swin() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4], num_classes=K
    )
    return model.eval()


def torchvision_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=K
    )
    return _random_head(model).eval()


def _random_head(model: nn.Module) -> nn.Module:
    """torchvision's ViT starts with a zero head (all logits 0, all gradients 0): draw one."""
    with torch.no_grad():
        model.heads.head.weight.normal_(generator=torch.Generator().manual_seed(0))
    return model


# (builder, input size, expected target layer, expected grid, pytorch-grad-cam's reshape for the same layer)
TRANSFORMERS = {
    "timm_vit": (timm_vit, (32, 48), "blocks[-1].norm1", (4, 6), vit_reshape_transform),
    "timm_deit": (timm_deit, (32, 32), "blocks[-1].norm1", (4, 4), None),
    "timm_swin": (timm_swin, (32, 32), "norm", (4, 4), swinT_reshape_transform),
    "torchvision_swin": (torchvision_swin, (32, 32), "norm", (4, 4), swinT_reshape_transform),
    "torchvision_vit": (torchvision_vit, (32, 32), "encoder.layers[-1].ln_1", (4, 4), vit_reshape_transform),
}


def images(
    size: tuple[int, int], n: int = 2, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, *size, generator=g).to(dtype), torch.arange(n) % K


# Comparisons of two CAM computations (salbench vs the library, batch vs single images) run float64
# models and images, as in test_methods_cams.py: the float64 CAMs then agree to ~1e-15 and
# pytorch-grad-cam's float32 finish (cast, cv2 resize, min-max twice) moves map values in [0, 1] by a
# few float32 ulps: atol 1e-6. (In float32, attention's reductions alone move Grad-CAM++ maps, which
# cube the gradients, by up to ~2e-5 between batch sizes.)
F64 = torch.float64
CAM_ATOL = 1e-6


@pytest.fixture(scope="module", params=sorted(TRANSFORMERS))
def transformer(request):
    build, size, spec, grid, library_reshape = TRANSFORMERS[request.param]
    return request.param, build().to(F64), size, spec, grid, library_reshape


def _library_reshape(reshape, grid: tuple[int, int]):
    """pytorch-grad-cam's example transforms take (N, T, C) tokens; Swin's maps are flattened first."""
    if reshape is swinT_reshape_transform:
        return lambda t: reshape(t.flatten(1, 2), height=grid[0], width=grid[1])
    return functools.partial(reshape, height=grid[0], width=grid[1])


def test_gradcam_matches_pytorch_grad_cam_reshape_example(transformer, monkeypatch):
    """Default target layer, grid resolution and maps: salbench's Grad-CAM equals pytorch-grad-cam's
    with its own ``vit_reshape_transform`` / ``swinT_reshape_transform`` on the same model and layer
    (float64 model and images, atol ``CAM_ATOL``)."""
    _, model, size, spec, grid, library_reshape = transformer
    found, layer = resolve_target_layer(model)
    assert found == spec
    shapes = []
    original = FeatureLayout.to_grid

    def spy(self, x, size):
        out = original(self, x, size)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(FeatureLayout, "to_grid", spy)
    x, t = images(size, dtype=F64)
    maps = GradCAMMethod(model, MethodContext(target_layer=layer, num_classes=K))(x, t)
    assert maps.shape == (2, *size) and float(maps.amax()) > 0.5
    assert shapes and all(s[0] == 2 and s[2:] == grid for s in shapes)
    if library_reshape is None:  # the library's example drops one token; DeiT has two
        assert feature_layout(model, layer).prefix_tokens == 2
        return
    reference = GradCAM(model, [layer], reshape_transform=_library_reshape(library_reshape, grid))
    try:
        expected = reference(input_tensor=x.clone().requires_grad_(True), targets=_targets(t))
    finally:
        reference.activations_and_grads.release()
    np.testing.assert_allclose(maps.numpy(), expected, atol=CAM_ATOL, rtol=0)


def _targets(t: torch.Tensor) -> list[ClassifierOutputTarget]:
    return [ClassifierOutputTarget(int(k)) for k in t]


def _state(model: nn.Module) -> list:
    return [
        (m.training, len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks))
        for m in model.modules()
    ]


@pytest.mark.parametrize("method_id", CAM_IDS)
def test_every_cam_method_on_transformers(transformer, method_id):
    """Maps of the input's size, float32, finite, in [0, 1], batch = single images, model untouched."""
    name, model, size, spec, _, _ = transformer
    _, layer = resolve_target_layer(model)
    params = {"batch_size": 64} if method_id in ("scorecam", "ablationcam") else {}
    cls = METHODS.get(method_id)
    method = cls(model, MethodContext(target_layer=layer, num_classes=K), cls.params_cls(**params))
    before = _state(model)
    weights = [p.detach().clone() for p in model.parameters()]
    x, t = images(size, dtype=F64)
    maps = method(x, t)
    assert maps.shape == (2, *size) and maps.dtype == torch.float32
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert float(maps.amax()) > 0.0, f"{method_id} on {name}: all maps zero"
    single = torch.cat([method(x[i : i + 1], t[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(single, maps, atol=CAM_ATOL, rtol=0)
    assert _state(model) == before and get_submodule(model, spec) is layer
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))


def test_iba_on_transformers(transformer):
    """IBA at the CAM layer, on the same grid: statistics per (C, h, w) patch-grid feature (the class and
    distillation tokens are no feature), maps of the input's size in [0, 1], model untouched. (Its
    known-position test for token and channels-last layouts is in test_methods_iba.py.)"""
    name, model, size, _, grid, _ = transformer
    _, layer = resolve_target_layer(model)
    iba = Iba(model, MethodContext(target_layer=layer, num_classes=K), IbaParams(steps=2, n_noise=2))
    before = _state(model)
    x, t = images(size, n=3, dtype=F64)
    iba.check_applies(x[:1])
    iba.prepare(Preparation(lambda: [x], size))
    assert tuple(iba.feature_mean.shape[1:]) == grid, name
    maps = iba(x, t, torch.Generator().manual_seed(0))
    assert maps.shape == (3, *size) and maps.dtype == torch.float32
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert float(maps.amax()) > 0.0, f"iba on {name}: all maps zero"
    assert _state(model) == before


def test_torchvision_vit_b_16_gradcam_no_longer_fails():
    """Today's ``ValueError: Invalid grads shape`` on torchvision ``vit_b_16`` (random init, 32x32: 2x2)."""
    model, info = build_model(ModelConfig(name="vit_b_16", kwargs={"image_size": 32}, num_classes=K))
    model = _random_head(model)
    spec, layer = resolve_target_layer(model)
    assert spec == "encoder.layers[-1].ln_1" and info["entry_point"] == "torchvision"
    x, t = images((32, 32))
    maps = GradCAMMethod(model, MethodContext(target_layer=layer, num_classes=K))(x, t)
    reference = GradCAM(model, [layer], reshape_transform=_library_reshape(vit_reshape_transform, (2, 2)))
    try:
        expected = reference(input_tensor=x.clone().requires_grad_(True), targets=_targets(t))
    finally:
        reference.activations_and_grads.release()
    assert maps.shape == (2, 32, 32) and float(maps.amax()) > 0.5
    # float32 (86M parameters in float64 would be slow): the two runs differ by attention rounding only
    np.testing.assert_allclose(maps.numpy(), expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- rules per family


def _meta(build):
    """Build on the meta device: shapes only, no weights drawn (a family sweep in seconds)."""

    def make():
        with torch.device("meta"):
            return build().eval()

    return make


def _tv(name: str):
    return lambda: torchvision.models.get_model(name, weights=None, num_classes=K)


def _timm(name: str):
    return lambda: timm.create_model(name, pretrained=False, num_classes=K)


FAMILIES = [
    ("tv_resnet18", _meta(_tv("resnet18")), "ResNet/ResNeXt (torchvision)", "layer4[-1]", 7),
    ("tv_resnext50_32x4d", _meta(_tv("resnext50_32x4d")), "ResNet/ResNeXt (torchvision)", "layer4[-1]", 7),
    (
        "tv_regnet_y_400mf",
        _tv("regnet_y_400mf"),
        "RegNet (torchvision)",
        "trunk_output[-1]",
        7,
    ),  # its init needs real tensors
    ("tv_vgg11_bn", _meta(_tv("vgg11_bn")), "VGG (torchvision)", "features[-1]", 7),
    ("tv_densenet121", _meta(_tv("densenet121")), "DenseNet (torchvision)", "features[-1]", 7),
    ("tv_efficientnet_b0", _meta(_tv("efficientnet_b0")), "EfficientNet (torchvision)", "features[-1]", 7),
    ("tv_mobilenet_v2", _meta(_tv("mobilenet_v2")), "MobileNet (torchvision)", "features[-1]", 7),
    ("tv_mobilenet_v3_small", _meta(_tv("mobilenet_v3_small")), "MobileNet (torchvision)", "features[-1]", 7),
    ("tv_convnext_tiny", _meta(_tv("convnext_tiny")), "ConvNeXt (torchvision)", "features[-1]", 7),
    ("tv_vit_b_16", _meta(_tv("vit_b_16")), "ViT (torchvision)", "encoder.layers[-1].ln_1", 14),
    ("tv_swin_t", _meta(_tv("swin_t")), "Swin (torchvision)", "norm", 7),
    ("tv_swin_v2_t", _meta(_tv("swin_v2_t")), "Swin (torchvision)", "norm", 7),
    ("timm_resnet18", _meta(_timm("resnet18")), "ResNet/ResNeXt (timm)", "layer4[-1]", 7),
    ("timm_regnetx_002", _meta(_timm("regnetx_002")), "RegNet (timm)", "s4", 7),
    ("timm_resnext26ts", _meta(_timm("resnext26ts")), "ByobNet (timm)", "final_conv", 7),
    ("timm_vgg11", _meta(_timm("vgg11")), "VGG (timm)", "features[-1]", 7),
    ("timm_densenet121", _meta(_timm("densenet121")), "DenseNet (timm)", "features[-1]", 7),
    ("timm_efficientnet_b0", _meta(_timm("efficientnet_b0")), "EfficientNet/MobileNetV2 (timm)", "bn2", 7),
    ("timm_mobilenetv2_050", _meta(_timm("mobilenetv2_050")), "EfficientNet/MobileNetV2 (timm)", "bn2", 7),
    (
        "timm_mobilenetv3_small_050",
        _meta(_timm("mobilenetv3_small_050")),
        "MobileNetV3 (timm)",
        "blocks[-1]",
        7,
    ),
    ("timm_convnext_atto", _meta(_timm("convnext_atto")), "ConvNeXt (timm)", "stages[-1]", 7),
    (
        "timm_vit_tiny_patch16_224",
        _meta(_timm("vit_tiny_patch16_224")),
        "ViT/DeiT (timm)",
        "blocks[-1].norm1",
        14,
    ),
    (
        "timm_deit_tiny_distilled_patch16_224",
        _meta(_timm("deit_tiny_distilled_patch16_224")),
        "ViT/DeiT (timm)",
        "blocks[-1].norm1",
        14,
    ),
    (
        "timm_swin_tiny_patch4_window7_224",
        _meta(_timm("swin_tiny_patch4_window7_224")),
        "Swin (timm)",
        "norm",
        7,
    ),
]


@pytest.mark.parametrize(("name", "build", "family", "spec", "side"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_rule_gives_a_spatial_grid(name, build, family, spec, side):
    """At 224x224 every family's default layer becomes a (1, C, side, side) grid: 7x7 for CNNs and Swin,
    14x14 for 16-pixel ViT patches."""
    model = build()
    assert architecture_rule(model).family == family
    found, layer = resolve_target_layer(model)
    assert found == spec
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.empty(1, 3, 224, 224, device=device))
    handle.remove()
    grid = feature_layout(model, layer).to_grid(seen["out"], (224, 224))
    assert grid.ndim == 4 and grid.shape[0] == 1 and grid.shape[2:] == (side, side)


def test_target_layer_override_and_layouts():
    swin = timm_swin()
    assert resolve_target_layer(swin, "layers[0]")[1] is swin.layers[0]
    assert feature_layout(swin, swin.layers[0]).channels_last
    assert not feature_layout(swin, swin.patch_embed.proj).channels_last  # a convolution: (N, C, h, w)
    # timm's patch embedding: tokens before the class token is prepended, row-major over its convolution
    timm_model = timm_vit()
    seen = {}
    hooks = [
        timm_model.patch_embed.register_forward_hook(lambda m, i, o: seen.setdefault("tokens", o)),
        timm_model.patch_embed.proj.register_forward_hook(lambda m, i, o: seen.setdefault("conv", o)),
    ]
    with torch.no_grad():
        timm_model(torch.randn(1, 3, 32, 48))
    for h in hooks:
        h.remove()
    layout = feature_layout(timm_model, timm_model.patch_embed)
    assert layout.prefix_tokens == 1 and seen["conv"].shape == (1, 192, 4, 6)
    assert torch.equal(layout.to_grid(seen["tokens"], (32, 48)), seen["conv"])
    vit = torchvision_vit()
    assert feature_layout(vit, vit.encoder.layers[0]).prefix_tokens == 1  # torchvision's class_token
    x, t = images((32, 32))
    _, layer = resolve_target_layer(vit, "conv_proj")  # the patch embedding: a (N, C, 4, 4) map
    maps = METHODS.get("ablationcam")(vit, MethodContext(target_layer=layer, num_classes=K))(x, t)
    assert maps.shape == (2, 32, 32) and vit.conv_proj is layer


# ---------------------------------------------------------------- not applicable: one line, state restored


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 8 * 8, 8)
        self.fc2 = nn.Linear(8, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class ThreeTokens(TokenViT):
    """Its target layer sees three tokens: no patch grid of a 32x48 input after 0 to 2 prefix tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.avg_pool2d(x.mean(1, keepdim=True), 8).flatten(2).transpose(1, 2)
        return self.head(self.norm(patches[:, :3]).sum(1))


@pytest.mark.parametrize("method_id", CAM_IDS)
def test_a_layer_without_a_grid_is_one_config_error(method_id):
    x = torch.randn(2, 3, 8, 8)
    mlp = MLP()
    fc1 = mlp.fc1
    resolve = functools.partial(resolve_target_layer, mlp)
    with pytest.raises(ConfigError, match="no default target layer for MLP"):
        resolve()
    cls = METHODS.get(method_id)
    for model, layer, pattern in [
        (mlp, mlp.fc1, r"does not apply to MLP at target layer 'fc1': .*\(2, 8\) is neither"),
        (mlp, None, r"does not apply to MLP as configured: it needs a target layer"),
    ]:
        before = _state(model)
        with pytest.raises(ConfigError, match=f"^{method_id} {pattern}") as info:
            cls(model, MethodContext(target_layer=layer, num_classes=K))(x, torch.tensor([0, 1]))
        assert "\n" not in str(info.value) and _state(model) == before
        assert model.fc1 is fc1  # an ablation layer swapped in is swapped back
    three = ThreeTokens()
    norm = three.norm
    x = torch.randn(1, 3, 32, 48)
    pattern = (
        f"^{method_id} does not apply to ThreeTokens at target layer 'norm': the target layer's 3 tokens "
        r"form no patch grid of a 32x48 input after 1 or 0 to 8 prefix tokens$"
    )
    with pytest.raises(ConfigError, match=pattern):
        cls(three, MethodContext(target_layer=three.norm, num_classes=2))(x, torch.tensor([0]))
    assert three.norm is norm
