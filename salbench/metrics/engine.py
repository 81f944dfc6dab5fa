"""Batched model evaluation shared by every re-inference metric.

Perturbed inputs are built as tensors on the model's device and pushed through the model in chunks
of at most ``max_batch`` rows; no Python loop over images surrounds a model call. The passes run in
the current pass precision (:func:`salbench.scoped.pass_precision`; float32 unless a stage set it),
and probabilities are always computed from float32 logits. An optional
:class:`ForwardCounter` records how many forward calls and input rows a computation cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from salbench.errors import ConfigError, DataError
from salbench.scoped import autocast_passes, model_mode


@dataclasses.dataclass
class ForwardCounter:
    """Running totals of model work: ``calls`` forward passes carrying ``rows`` inputs in all.

    Pass one to :func:`target_probs` / :func:`chunked_target_probs` (``counter=``) to measure what a
    metric costs, e.g. that cached start images are not evaluated twice.
    """

    calls: int = 0
    rows: int = 0

    def add(self, rows: int) -> None:
        """Record one forward pass over ``rows`` inputs."""
        self.calls += 1
        self.rows += int(rows)


def _check_max_batch(max_batch: int) -> None:
    if max_batch < 1:
        raise ConfigError(f"max_batch: must be a positive number of rows, got {max_batch}")


def _gather_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax (float32, or float64 for float64 logits) of (B,K) logits at (B,) targets -> (B,).

    Raises:
        DataError: a target is not one of the K outputs.
    """
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        bad = int(targets.max()) if int(targets.max()) >= logits.shape[1] else int(targets.min())
        raise DataError(f"targets: class {bad} is out of range for a model with {logits.shape[1]} outputs")
    scores = logits if logits.dtype == torch.float64 else logits.float()
    return torch.softmax(scores, dim=1).gather(1, targets.view(-1, 1)).squeeze(1)


@torch.no_grad()
def target_probs(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    max_batch: int = 1024,
    *,
    counter: ForwardCounter | None = None,
) -> torch.Tensor:
    """Softmax probability of ``targets`` (M,) for normalised ``inputs`` (M,C,H,W), in eval mode.

    Args:
        model: classifier returning (M,K) logits.
        inputs: (M,C,H,W) normalised inputs.
        targets: (M,) long class indices.
        max_batch: most rows per forward pass.
        counter: optional :class:`ForwardCounter` updated with every pass.

    Returns:
        (M,) float32 tensor (float64 for float64 inputs) on the inputs' device.
    """
    _check_max_batch(max_batch)
    dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    out = torch.empty(inputs.shape[0], dtype=dtype, device=inputs.device)
    with model_mode(model, False):
        for start in range(0, inputs.shape[0], max_batch):
            sl = slice(start, start + max_batch)
            batch = inputs[sl]
            with autocast_passes(batch.device):
                logits = model(batch)
            out[sl] = _gather_probs(logits, targets[sl])
            if counter is not None:
                counter.add(batch.shape[0])
    return out


@torch.no_grad()
def chunked_target_probs(
    model: nn.Module,
    build: Callable[[int, int], torch.Tensor],
    targets: torch.Tensor,
    max_batch: int = 1024,
    *,
    counter: ForwardCounter | None = None,
) -> torch.Tensor:
    """Like :func:`target_probs` but builds rows lazily: ``build(start, stop)`` -> inputs (stop-start,C,H,W).

    Use it when all perturbed inputs together would not fit in memory: at most ``max_batch`` rows
    exist at any time.

    Args:
        model: classifier returning (B,K) logits.
        build: row builder; called with consecutive ranges covering ``0 .. len(targets)``.
        targets: (M,) long class index of every row.
        max_batch: most rows per forward pass.
        counter: optional :class:`ForwardCounter` updated with every pass.

    Returns:
        (M,) float32 tensor on the targets' device.
    """
    _check_max_batch(max_batch)
    total = targets.shape[0]
    out = torch.empty(total, dtype=torch.float32, device=targets.device)
    with model_mode(model, False):
        for start in range(0, total, max_batch):
            stop = min(start + max_batch, total)
            rows = build(start, stop)
            with autocast_passes(rows.device):
                logits = model(rows)
            probs = _gather_probs(logits, targets[start:stop])
            if probs.dtype != out.dtype:  # float64 models keep float64 probabilities
                out = out.to(probs.dtype)
            out[start:stop] = probs
            if counter is not None:
                counter.add(stop - start)
    return out
