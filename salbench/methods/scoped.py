"""Scoped resources: model mode and hooks are changed only inside ``with`` blocks and always restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def model_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in train/eval mode, restoring each module's flag on exit."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Disable ``requires_grad`` on the parameters (input gradients only), restoring the flags on exit."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


@contextlib.contextmanager
def removable_hooks() -> Iterator[list[torch.utils.hooks.RemovableHandle]]:
    """Collect hook handles in the yielded list; all are removed on exit, even on error."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


def minmax_per_image(maps: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Min-max normalise each map of (N,H,W) to [0, 1]; a constant map becomes all zeros.

    Args:
        maps: (N,H,W) float tensor.
        eps: added to the denominator (0 keeps exact min-max; constant maps are handled explicitly).
    """
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / (span + eps).clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    return out.reshape(maps.shape).float()
