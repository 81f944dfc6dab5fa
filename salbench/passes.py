"""Count model passes (rows pushed forward / backward through a model) inside a ``with`` block."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import nn


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
