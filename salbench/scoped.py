"""Scoped model state: mode, frozen parameters, hooks, pass counting and global RNG seeding.

Everything here changes state only inside a ``with`` block and restores it on exit, even on error.
Methods, metrics, the CASME masker and the stages all use these instead of toggling state themselves.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
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


@dataclasses.dataclass
class PassCount:
    """Rows (images) and calls through the model's forward, and rows through its backward."""

    forward_rows: int = 0
    forward_calls: int = 0
    backward_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def count_passes(model: nn.Module) -> Iterator[PassCount]:
    """Count every forward call of ``model`` (rows = batch size) and the backward passes through it.

    The hook is removed on exit, even on error. A backward pass is counted when a gradient reaches
    the model's output tensor.
    """
    count = PassCount()

    def on_backward(grad: torch.Tensor) -> None:
        count.backward_rows += int(grad.shape[0]) if grad.dim() else 1

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            count.forward_calls += 1
            count.forward_rows += int(output.shape[0]) if output.dim() else 1
            if output.requires_grad:
                output.register_hook(on_backward)

    handle = model.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


@contextlib.contextmanager
def seeded_global_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the global CPU RNG (and ``device``'s, if CUDA) with ``seed``; restore their states on exit."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``run.precision`` -> the autocast dtype of re-inference and sampling passes (None: plain float32)."""
_PRECISION: contextvars.ContextVar[str] = contextvars.ContextVar("salbench_precision", default="fp32")


@contextlib.contextmanager
def pass_precision(precision: str) -> Iterator[None]:
    """Run the forward-only passes of re-inference metrics and sampling methods started inside the block
    in ``precision`` (``fp32``, ``bf16`` or ``fp16``): :func:`autocast_passes` reads it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    token = _PRECISION.set(precision)
    try:
        yield
    finally:
        _PRECISION.reset(token)


def current_precision() -> str:
    """The precision :func:`pass_precision` set (``fp32`` outside any block)."""
    return _PRECISION.get()


def autocast_passes(device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in the current pass precision on ``device`` (a no-op for ``fp32``).

    Wrapped around forward passes whose outputs are only read (probabilities, logits of perturbed or
    masked copies), never around gradients: the callers cast logits to float32 before any softmax."""
    dtype = PRECISIONS[_PRECISION.get()]
    if dtype is None:
        return contextlib.nullcontext()
    kind = device.type if isinstance(device, torch.device) else torch.device(device).type
    return torch.autocast(device_type=kind, dtype=dtype)
