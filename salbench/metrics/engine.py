"""Batched model evaluation shared by every re-inference metric.

Perturbed inputs are built as tensors on the model's device and pushed through the model in chunks
of at most ``max_batch`` rows; no Python loop over images surrounds a model call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from salbench.methods.scoped import model_mode


@torch.no_grad()
def target_probs(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, max_batch: int = 1024
) -> torch.Tensor:
    """Softmax probability of ``targets`` (M,) for normalised ``inputs`` (M,C,H,W), in eval mode.

    Returns:
        (M,) float32 tensor on the inputs' device.
    """
    out = torch.empty(inputs.shape[0], dtype=torch.float32, device=inputs.device)
    with model_mode(model, False):
        for start in range(0, inputs.shape[0], max_batch):
            sl = slice(start, start + max_batch)
            logits = model(inputs[sl])
            out[sl] = torch.softmax(logits.float(), dim=1).gather(1, targets[sl].view(-1, 1)).squeeze(1)
    return out


@torch.no_grad()
def chunked_target_probs(
    model: nn.Module,
    build: Callable[[int, int], torch.Tensor],
    targets: torch.Tensor,
    max_batch: int = 1024,
) -> torch.Tensor:
    """Like :func:`target_probs` but builds rows lazily: ``build(start, stop)`` -> inputs (stop-start,C,H,W).

    Use it when all perturbed inputs together would not fit in memory.
    """
    total = targets.shape[0]
    out = torch.empty(total, dtype=torch.float32, device=targets.device)
    with model_mode(model, False):
        for start in range(0, total, max_batch):
            stop = min(start + max_batch, total)
            logits = model(build(start, stop))
            out[start:stop] = (
                torch.softmax(logits.float(), dim=1).gather(1, targets[start:stop].view(-1, 1)).squeeze(1)
            )
    return out
