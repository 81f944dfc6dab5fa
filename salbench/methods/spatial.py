"""The target layer of the layer-based methods (the CAMs, IBA): is there one, and which grid it outputs.

These methods read ``context.target_layer`` as a ``(N, C, h, w)`` grid, through the layer's
:class:`~salbench.models.layers.FeatureLayout` (the rules per architecture live in
:mod:`salbench.models.layers`): ViT/DeiT tokens without their class/distillation tokens, Swin's
channels-last maps permuted, CNN maps as they are. A model without such a layer (none configured or
found, or one whose output is no grid: a pooled vector, tokens that form no patch grid) is outside these
methods' domain: :class:`~salbench.errors.NotApplicableError`, which the stages record and skip.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from salbench.errors import ConfigError, NotApplicableError
from salbench.models.layers import FeatureLayout, architecture_name, feature_layout
from salbench.scoped import model_mode, removable_hooks


class _StopForwardError(Exception):
    """Raised by :func:`layer_output`'s hook: nothing after the target layer is computed."""


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The dotted name of ``layer`` in ``model`` (for messages)."""
    return next((repr(name) for name, m in model.named_modules() if m is layer), "(not in the model)")


def require_layer(method: str, model: nn.Module, layer: nn.Module | None) -> nn.Module:
    """``layer``, or :class:`NotApplicableError` naming ``method`` and the architecture when it is None."""
    if layer is None:
        raise NotApplicableError(
            f"{method} does not apply to {architecture_name(model)} as configured: it needs a target "
            "layer (model.target_layer, e.g. 'layer4[-1]')"
        )
    return layer


@torch.no_grad()
def layer_output(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``layer``'s output for ``images`` (eval mode, no gradient); the forward stops at the layer."""
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        captured.append(out)
        raise _StopForwardError

    with model_mode(model, False), removable_hooks() as handles:
        handles.append(layer.register_forward_hook(hook))
        with contextlib.suppress(_StopForwardError):
            model(images)
    if not captured:
        raise NotApplicableError(
            f"target layer {layer_name(model, layer)} is not run by {architecture_name(model)}'s forward"
        )
    return captured[0]


def to_grid(
    method: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """``x`` (the layer's output) as ``(N, C, h, w)`` for inputs of ``size``, or
    :class:`NotApplicableError` naming the method, the architecture and the layer."""
    try:
        return feature_layout(model, layer).to_grid(x, size)
    except ConfigError as exc:
        raise NotApplicableError(
            f"{method} does not apply to {architecture_name(model)} at target layer "
            f"{layer_name(model, layer)}: {exc}"
        ) from None


def check_grid(method: str, model: nn.Module, layer: nn.Module | None, example: torch.Tensor) -> None:
    """:class:`NotApplicableError` unless ``layer`` exists and its output for ``example`` (1,C,H,W) is a
    grid (one eval-mode forward pass up to the layer)."""
    layer = require_layer(method, model, layer)
    to_grid(method, model, layer, layer_output(model, layer, example), tuple(example.shape[-2:]))


def from_grid(grid: torch.Tensor, like: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """The inverse of :meth:`FeatureLayout.to_grid`: ``grid`` (N,C,h,w) back in ``like``'s layout.

    Tokens ``(N, T, C)``: the patch tokens are replaced by the grid (row-major), the prefix tokens
    (``T - h*w`` of them) are taken from ``like``; channels-last ``(N, h, w, C)``: permuted back.
    """
    if like.ndim == 3:
        prefix = like.shape[1] - grid.shape[2] * grid.shape[3]
        return torch.cat([like[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)
    return grid.permute(0, 2, 3, 1) if layout.channels_last else grid
