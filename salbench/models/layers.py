"""Target-layer resolution: the one place that knows which layer CAM-style methods read per architecture."""

from __future__ import annotations

import re

from torch import nn

from salbench.errors import ConfigError

# Rules tried in order: the first attribute path that exists on the model wins. ResNets (torchvision and
# the embedded ResNet) use the last block of layer4, VGGs (torchvision and the embedded VGG) the last
# module of ``features`` (the last max-pool for vgg16/vgg16_bn), as in the study.
DEFAULT_TARGET_LAYERS: tuple[str, ...] = ("layer4[-1]", "features[-1]")

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


def resolve_target_layer(model: nn.Module, override: str = "") -> tuple[str, nn.Module]:
    """Return ``(spec, layer)``: ``override`` if given, else the first matching default rule."""
    if override:
        return override, get_submodule(model, override)
    for spec in DEFAULT_TARGET_LAYERS:
        try:
            return spec, get_submodule(model, spec)
        except ConfigError:
            continue
    raise ConfigError(
        f"no default target layer for {type(model).__name__}; set model.target_layer (e.g. 'layer4[-1]')"
    )
