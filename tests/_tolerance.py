"""Tolerances shared by the numerically sensitive tests (marker ``numeric``), and how they are derived.

Rounding model: an operation rounds with relative error u (float32 u = 2**-24 ~ 6e-8, eps = 2u ~ 1.2e-7;
float64 u = 2**-53 ~ 1.1e-16). A sum of n terms evaluated in another order (another batch layout,
thread count, SIMD width or convolution algorithm, another library's kernel) differs by at most
~n u sum|terms|, in practice ~sqrt(n) u. Differences then grow through divisions: (Y - R) / Y by
1 / Y, a Pearson correlation by 1 / (spread of its inputs), a min-max normalisation by 1 / (max - min).

* ``F64_REL``: two float64 evaluations of the same quantity along different paths (batch layout,
  reference library vs salbench). Network depth and sums of <= 1e4 terms give ~1e-13 relative; ratios
  and correlations of probabilities that are >= 1e-3 apart amplify that by <= 1e3: 1e-10 < 1e-9.
* ``F32_PROB_REL``: only where float64 is not possible (stage tests run float32 checkpoints). A float32
  softmax probability of a small test network evaluated in another batch layout or thread count: the
  logits move by one to a few ulps through a handful of layers, the probability by dp / p = dz_c -
  sum_k p_k dz_k, ~1e-7..1e-6 relative (observed <= 4e-7 on the 1000-class embedded ResNet); 1e-5
  keeps a factor 10. Means of probabilities (AUCs) inherit it; a ratio (Y - O) / Y moves by <= (O / Y)
  (dY / Y + dO / O) <= 2 ``F32_PROB_REL`` absolute where O <= Y.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

F64_REL = 1e-9
F32_PROB_REL = 1e-5


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run a reference library whose internal ``torch.ones``/``torch.zeros`` follow the default dtype
    (e.g. saliency-maps-metrics' blur kernel) in ``dtype``; restores the previous default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def double(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (the original stays float32)."""
    return copy.deepcopy(model).double()


def dyadic_map(shape: tuple[int, ...], gen: torch.Generator, bits: int = 20) -> torch.Tensor:
    """(1, *shape) float64 map of distinct multiples of 2**-bits with minimum 0 and maximum 1.

    Its min-max normalisation is exact and float32-representable, so salbench's float32 min-max
    (``salbench.saliency.minmax_per_image`` returns float32) and a float64 reference agree exactly;
    distinct values: no ranking ties.
    """
    cells = int(torch.tensor(shape).prod())
    values = (torch.randperm(2**bits - 1, generator=gen)[: cells - 2] + 1).double() / 2**bits
    flat = torch.cat([torch.tensor([0.0, 1.0], dtype=torch.float64), values])
    return flat[torch.randperm(cells, generator=gen)].view(1, *shape)


class Float64Model(nn.Module):
    """A float64 copy of ``model`` that takes inputs of any dtype: Quantus converts its float32 numpy
    inputs with ``torch.Tensor`` (float32); their values are cast exactly and the logits are float64,
    so a float32 input path costs nothing but the input's own rounding. Gradients with respect to a
    float32 input are rounded to float32 once."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = double(model)
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.double())
