"""Batch-norm statistics of the study's train-mode gradients (the network in training mode, batch 1).

In training mode a batch-norm layer normalises with the statistics of its batch; the study computed
the gradient maps one image at a time, so each image was normalised with its own statistics.
:func:`per_sample_batchnorm` gives every image of a batch its own statistics (instance norm with
the layer's affine parameters, exactly what BN does on a batch of one), so the maps are computed in
batched passes with the study's numbers; :func:`restored_buffers` puts the running statistics back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def restored_buffers(model: nn.Module) -> Iterator[None]:
    """Snapshot every buffer (batch-norm running stats, counters) and write it back on exit."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _per_sample_forward(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """What ``module`` in training mode computes on each row of ``x`` fed alone (batch size 1).

    Per sample and channel: mean and biased variance over the spatial positions, then the layer's affine
    map. A row with one value per channel (a 1x1 map, or a BatchNorm1d input) has no batch statistics;
    PyTorch raises there with batch size 1 (and so did the study's code), so such rows use the layer's
    running statistics instead.
    """
    spatial = x.shape[2:].numel() if x.ndim > 2 else 1
    if spatial == 1 or not module.training:
        return nn.functional.batch_norm(
            x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps
        )
    return nn.functional.instance_norm(x, weight=module.weight, bias=module.bias, eps=module.eps)


@contextlib.contextmanager
def per_sample_batchnorm(model: nn.Module) -> Iterator[None]:
    """Within the block, every batch-norm layer of ``model`` normalises each input row on its own.

    Equivalent to running the rows one at a time in training mode (see :func:`_per_sample_forward`);
    running statistics are not updated. The layers' own ``forward`` is restored on exit, even on error.
    """
    patched = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        for m in patched:
            m.forward = _per_sample_forward.__get__(m)  # instance attribute shadows the class method
        yield
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)
