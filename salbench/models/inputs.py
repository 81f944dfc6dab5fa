"""What a classifier says about its input (:class:`~salbench.data.transforms.InputSpec`), read without
downloading anything: timm's ``pretrained_cfg`` of a ``timm:<name>`` model (input size, crop fraction,
mean/std), the transforms of a torchvision model's ``model.weights`` enum member (resize, crop,
mean/std), the input side a ViT accepts, and the input channels of the first convolution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torchvision
from torch import nn

from salbench.config import ModelConfig
from salbench.data.transforms import InputSpec
from salbench.models.registry import TIMM_PREFIX, entry_point, torchvision_weights_file

TIMM_CROP_PCT = 0.875
"""timm's ``DEFAULT_CROP_PCT``: the crop fraction of a pretrained config that gives none."""


def model_input_spec(cfg: ModelConfig, model: nn.Module, num_classes: int) -> InputSpec:
    """The input specification of the built ``model`` of ``cfg`` (every unknown field empty).

    - ``timm:<name>``: the built model's ``pretrained_cfg``: crop = its square ``input_size`` (or the side
      the model was built for, e.g. ``img_size=32``), resize = ``floor(crop / crop_pct)`` as timm's
      evaluation transform (``crop_mode='squash'``: resize = crop), its mean/std when they have one value
      per input channel;
    - a torchvision model with ``model.weights``: the weights' ``transforms()`` (``resize_size``,
      ``crop_size``, ``mean``, ``std``);
    - any model: the side a ViT accepts (timm's strict patch embedding, torchvision's ``image_size``)
      and the ``in_channels`` of its first convolution.

    Args:
        cfg: the model section (entry point, weights).
        model: the built model.
        num_classes: its number of outputs.
    """
    channels, first_conv = first_conv_channels(model)
    fixed, fixed_from = fixed_input_size(model)
    values: dict[str, Any] = {}
    kind = entry_point(cfg.name)
    if kind == "timm":
        values = _timm_values(cfg, model, fixed, channels)
    elif kind == "torchvision" and cfg.weights:
        values = _torchvision_values(cfg)
    return InputSpec(
        channels=channels,
        first_conv=first_conv,
        fixed_size=fixed,
        fixed_size_from=fixed_from,
        num_classes=num_classes,
        **values,
    )


def _timm_values(cfg: ModelConfig, model: nn.Module, fixed: int, channels: int) -> dict[str, Any]:
    arch = cfg.name.removeprefix(TIMM_PREFIX)
    pretrained = getattr(model, "pretrained_cfg", None)
    if not isinstance(pretrained, Mapping) or not pretrained:
        import timm

        found = timm.models.get_pretrained_cfg(arch)
        pretrained = found.to_dict() if found is not None else {}
    out: dict[str, Any] = {"source": f"timm pretrained_cfg of {arch!r}"}
    size = tuple(pretrained.get("input_size") or ())
    side = fixed or (int(size[-1]) if len(size) == 3 and size[-1] == size[-2] else 0)
    if side:
        crop_pct = float(pretrained.get("crop_pct") or TIMM_CROP_PCT)
        squash = pretrained.get("crop_mode") == "squash"
        out |= {"crop": side, "resize": side if squash else math.floor(side / crop_pct)}
    for key in ("mean", "std"):
        value = tuple(float(v) for v in pretrained.get(key) or ())
        if value and (not channels or len(value) == channels):
            out[key] = value
    return out


def _torchvision_values(cfg: ModelConfig) -> dict[str, Any]:
    member, _ = torchvision_weights_file(cfg.name, cfg.weights)
    transform = member.transforms()
    out: dict[str, Any] = {"source": f"torchvision weights {cfg.name}.{member.name}"}
    resize, crop = getattr(transform, "resize_size", None), getattr(transform, "crop_size", None)
    if resize and crop:
        out |= {"resize": int(resize[0]), "crop": int(crop[0])}
    for key in ("mean", "std"):
        value = getattr(transform, key, None)
        if value:
            out[key] = tuple(float(v) for v in value)
    return out


def first_conv_channels(model: nn.Module) -> tuple[int, str]:
    """``(in_channels, module name)`` of the model's first convolution: timm's ``first_conv`` when the
    model names it, else the first ``nn.Conv2d`` registered; ``(0, "")`` for a model without one."""
    named = dict(model.named_modules())
    pretrained = getattr(model, "pretrained_cfg", None)
    declared = pretrained.get("first_conv") if isinstance(pretrained, Mapping) else None
    for name in [declared] if isinstance(declared, str) else list(declared or ()):
        module = named.get(name)
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels), name
    for name, module in named.items():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels), name
    return 0, ""


def fixed_input_size(model: nn.Module) -> tuple[int, str]:
    """``(side, where it was read)`` of the only square input a model accepts, ``(0, "")`` when any size
    works: timm's patch embedding with ``strict_img_size`` (and no ``dynamic_img_size``), torchvision's
    ``VisionTransformer.image_size``."""
    if isinstance(model, torchvision.models.VisionTransformer):
        return int(model.image_size), "torchvision VisionTransformer.image_size"
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    strict = bool(getattr(embed, "strict_img_size", False)) and not getattr(model, "dynamic_img_size", False)
    if strict and isinstance(size, tuple | list) and len(size) == 2 and size[0] == size[1]:
        return int(size[0]), "timm patch_embed.img_size"
    return 0, ""
