"""Target layers and their feature layout: the one place that knows which layer CAM-style methods read
per architecture, and how that layer's output becomes a ``(N, C, h, w)`` grid.

Architectures are recognised by class (the model's class or a base class, by qualified name, so that
neither timm nor torchvision is imported here); unknown models (the embedded ones, a user's own module)
fall back to :data:`DEFAULT_TARGET_LAYERS`. ``model.target_layer`` overrides every rule.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Literal

import torch
from torch import nn

from salbench.errors import ConfigError

# Rules tried in order for models of no known family: the first attribute path that exists on the
# model wins. ResNets (torchvision and the embedded ResNet) use the last block of layer4, VGGs
# (torchvision and the embedded VGG) the last module of ``features`` (the last max-pool for
# vgg16/vgg16_bn), as in the study.
DEFAULT_TARGET_LAYERS: tuple[str, ...] = ("layer4[-1]", "features[-1]")

Layout = Literal["nchw", "tokens", "nhwc"]
MAX_INFERRED_PREFIX = 8
"""Most non-patch tokens inferred before the patches (class + distillation + register tokens)."""


@dataclasses.dataclass(frozen=True)
class ArchitectureRule:
    """The default target layer of one architecture family.

    Attributes:
        family: readable name (``"ViT/DeiT (timm)"``), used in messages.
        classes: qualified class names (``module.Class``) matched against the model's class and bases.
        target: attribute path of the default target layer (see :func:`get_submodule`).
        layout: what the family's non-convolutional layers output: ``nchw`` (CNNs), ``tokens``
            (``(N, T, C)``, prefix tokens first: ViT/DeiT) or ``nhwc`` (channels-last: Swin).
    """

    family: str
    classes: tuple[str, ...]
    target: str
    layout: Layout = "nchw"


_TV, _TIMM = "torchvision.models", "timm.models"
# Target layers follow pytorch-grad-cam's table (README, "Chosing the Target Layer"): the last
# convolutional feature map of CNNs. ViTs pool the class token, so the last block's output reaches the
# logits only through that token (zero gradient at every patch token); its ``norm1`` input still
# mixes the patches into the class token. Swin averages every position, so its final norm (a
# per-position LayerNorm before the average pool) plays the role of a CNN's last feature map.
ARCHITECTURE_RULES: tuple[ArchitectureRule, ...] = (
    ArchitectureRule("ResNet/ResNeXt (torchvision)", (f"{_TV}.resnet.ResNet",), "layer4[-1]"),
    ArchitectureRule("RegNet (torchvision)", (f"{_TV}.regnet.RegNet",), "trunk_output[-1]"),
    ArchitectureRule("VGG (torchvision)", (f"{_TV}.vgg.VGG",), "features[-1]"),
    ArchitectureRule("DenseNet (torchvision)", (f"{_TV}.densenet.DenseNet",), "features[-1]"),
    ArchitectureRule("EfficientNet (torchvision)", (f"{_TV}.efficientnet.EfficientNet",), "features[-1]"),
    ArchitectureRule(
        "MobileNet (torchvision)",
        (f"{_TV}.mobilenetv2.MobileNetV2", f"{_TV}.mobilenetv3.MobileNetV3"),
        "features[-1]",
    ),
    ArchitectureRule("ConvNeXt (torchvision)", (f"{_TV}.convnext.ConvNeXt",), "features[-1]"),
    ArchitectureRule(
        "ViT (torchvision)",
        (f"{_TV}.vision_transformer.VisionTransformer",),
        "encoder.layers[-1].ln_1",
        "tokens",
    ),
    ArchitectureRule("Swin (torchvision)", (f"{_TV}.swin_transformer.SwinTransformer",), "norm", "nhwc"),
    ArchitectureRule("ResNet/ResNeXt (timm)", (f"{_TIMM}.resnet.ResNet",), "layer4[-1]"),
    ArchitectureRule("RegNet (timm)", (f"{_TIMM}.regnet.RegNet",), "s4"),
    # timm's "bring your own blocks" nets: resnext26ts, regnetz_*, gernet_*, ... (final_conv may be Identity)
    ArchitectureRule("ByobNet (timm)", (f"{_TIMM}.byobnet.ByobNet",), "final_conv"),
    ArchitectureRule("VGG (timm)", (f"{_TIMM}.vgg.VGG",), "features[-1]"),
    ArchitectureRule("DenseNet (timm)", (f"{_TIMM}.densenet.DenseNet",), "features[-1]"),
    # timm builds MobileNetV2 as an EfficientNet; its MobileNetV3 pools before ``conv_head``
    ArchitectureRule("EfficientNet/MobileNetV2 (timm)", (f"{_TIMM}.efficientnet.EfficientNet",), "bn2"),
    ArchitectureRule("MobileNetV3 (timm)", (f"{_TIMM}.mobilenetv3.MobileNetV3",), "blocks[-1]"),
    ArchitectureRule("ConvNeXt (timm)", (f"{_TIMM}.convnext.ConvNeXt",), "stages[-1]"),
    # DeiT's VisionTransformerDistilled subclasses VisionTransformer
    ArchitectureRule(
        "ViT/DeiT (timm)", (f"{_TIMM}.vision_transformer.VisionTransformer",), "blocks[-1].norm1", "tokens"
    ),
    ArchitectureRule(
        "Swin (timm)",
        (f"{_TIMM}.swin_transformer.SwinTransformer", f"{_TIMM}.swin_transformer_v2.SwinTransformerV2"),
        "norm",
        "nhwc",
    ),
)

_TOKEN = re.compile(r"\.?([A-Za-z_]\w*)|\[(-?\d+)\]|\.(-?\d+)")


def get_submodule(model: nn.Module, spec: str) -> nn.Module:
    """Resolve a path like ``layer4[-1]``, ``features[-1]`` or ``features.29`` on ``model``.

    Raises:
        ConfigError: naming ``spec`` when it does not parse or a part of it does not exist.
    """
    spec = spec.strip()
    tokens = list(_TOKEN.finditer(spec))
    if not spec or "".join(t.group(0) for t in tokens) != spec or spec.startswith("."):
        raise ConfigError(f"target layer {spec!r} is not a path like 'layer4[-1]' or 'features.29'")
    module: nn.Module = model
    for tok in tokens:
        name, index, dotted = tok.groups()
        try:
            module = getattr(module, name) if name is not None else module[int(index or dotted)]
        except (AttributeError, IndexError, TypeError, KeyError):
            raise ConfigError(f"target layer {spec!r}: model has no {tok.group(0)!r} there") from None
        if not isinstance(module, nn.Module):
            raise ConfigError(f"target layer {spec!r}: {tok.group(0)!r} is not a module")
    return module


def architecture_rule(model: nn.Module) -> ArchitectureRule | None:
    """The rule of ``model``'s family (its class or a base class), or None for an unknown model."""
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(model).__mro__}
    return next((rule for rule in ARCHITECTURE_RULES if names.intersection(rule.classes)), None)


def architecture_name(model: nn.Module) -> str:
    """How messages name ``model``'s architecture: its class, and its family when one is known."""
    rule = architecture_rule(model)
    return type(model).__name__ + (f" ({rule.family})" if rule else "")


def resolve_target_layer(model: nn.Module, override: str = "") -> tuple[str, nn.Module]:
    """Return ``(spec, layer)``: ``override`` if given, else the family's rule, else the first matching
    default rule.

    Raises:
        ConfigError: the override does not exist, or no rule applies (naming the architecture).
    """
    if override:
        return override, get_submodule(model, override)
    rule = architecture_rule(model)
    for spec in (rule.target,) if rule else DEFAULT_TARGET_LAYERS:
        try:
            return spec, get_submodule(model, spec)
        except ConfigError:
            continue
    raise ConfigError(
        f"no default target layer for {architecture_name(model)}; set model.target_layer (e.g. 'layer4[-1]')"
    )


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    """How a target layer's output becomes the ``(N, C, h, w)`` grid CAM methods weight and upsample.

    Attributes:
        channels_last: 4-d outputs are ``(N, h, w, C)`` (Swin) rather than ``(N, C, h, w)``.
        prefix_tokens: 3-d token outputs ``(N, T, C)`` start with this many non-patch tokens (class,
            distillation, register tokens). When that leaves no patch grid of the input's aspect ratio
            (a layer before the class token is prepended, e.g. timm's ``patch_embed``), or when None,
            the smallest count up to :data:`MAX_INFERRED_PREFIX` that does is used.
    """

    channels_last: bool = False
    prefix_tokens: int | None = None

    def to_grid(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``x`` as ``(N, C, h, w)`` for an input of spatial ``size`` ``(H, W)``.

        Tokens ``(N, T, C)``: the prefix tokens are dropped and patch token ``i * w + j`` (timm and
        torchvision flatten the patch grid row-major) becomes grid cell ``(i, j)``; ``h, w`` are the
        patch grid of ``T - prefix`` patches with the input's aspect ratio. Channels-last ``(N, h, w, C)``
        is permuted. Used as pytorch-grad-cam's ``reshape_transform``, on activations and gradients.

        Raises:
            ConfigError: ``x`` is neither a grid nor tokens, or its tokens form no grid.
        """
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"the target layer outputs a {type(x).__name__}, not a tensor")
        if x.ndim == 4:
            return x.permute(0, 3, 1, 2) if self.channels_last else x
        if x.ndim != 3:
            raise ConfigError(
                f"the target layer's output {tuple(x.shape)} is neither a feature map (N,C,h,w) nor "
                "tokens (N,T,C)"
            )
        told = () if self.prefix_tokens is None else (self.prefix_tokens,)
        for prefix in (*told, *range(min(MAX_INFERRED_PREFIX, x.shape[1] - 1) + 1)):
            grid = patch_grid(x.shape[1] - prefix, size)
            if grid is not None:
                patches = x[:, prefix:, :]
                return patches.reshape(x.shape[0], *grid, x.shape[2]).permute(0, 3, 1, 2)
        raise ConfigError(
            f"the target layer's {x.shape[1]} tokens form no patch grid of a {size[0]}x{size[1]} input "
            f"after {' or '.join(map(str, told))}{' or ' if told else ''}0 to {MAX_INFERRED_PREFIX} "
            "prefix tokens"
        )


def patch_grid(n_patches: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """The grid ``(h, w)`` of ``n_patches`` patches over an input of ``size`` ``(H, W)``, or None.

    ``h * w`` must equal ``n_patches`` with one patch size across both axes (``H / h`` and ``W / w``
    equal up to rounding): a square input gives ``h = w = sqrt(n_patches)``.
    """
    height, width = size
    if n_patches < 1:
        return None
    h = max(1, round(math.sqrt(n_patches * height / width)))
    w = n_patches // h
    if h * w != n_patches or round(height / h) != round(width / w):
        return None
    return h, w


def feature_layout(model: nn.Module, layer: nn.Module) -> FeatureLayout:
    """The layout of ``layer``'s output in ``model`` (see :class:`FeatureLayout`).

    Swin layers are channels-last except convolutions (its patch embedding); ViT prefix tokens are read
    from timm's ``num_prefix_tokens`` or counted from ``class_token``/``cls_token``/``dist_token``
    attributes (torchvision's ViT has one class token); otherwise they are inferred from the grid.
    """
    rule = architecture_rule(model)
    channels_last = rule is not None and rule.layout == "nhwc" and not isinstance(layer, nn.Conv2d)
    prefix = getattr(model, "num_prefix_tokens", None)
    if not isinstance(prefix, int):
        tokens = ("class_token", "cls_token", "dist_token")
        found = sum(isinstance(getattr(model, name, None), torch.Tensor) for name in tokens)
        prefix = found or None
    return FeatureLayout(channels_last=channels_last, prefix_tokens=prefix)
