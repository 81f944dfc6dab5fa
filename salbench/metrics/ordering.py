"""Orders of map entries by attribution, how much of a map is tied, and the size of monotonicity's groups.

Metrics that perturb entries in attribution order (monotonicity's groups) are decided by the order of
equal values when a map has flat regions: Grad-CAM on a 28x28 input moved from -0.09 to +0.075 under a
1e-9 jitter, in Quantus too. :func:`entry_order` makes the tie rule a parameter:

- ``"stable"`` (default): equal values keep their flat (channel-first) index order, on every machine;
- ``"quantus"``: numpy's default ``argsort`` of the same array, as Quantus 0.6 calls it; its order of
  equal values is numpy's (introsort, vectorised on some CPUs), so it may differ between machines.

:func:`tied_share` measures the share of a map's pixels that share their value with another pixel;
above a metric's ``tie_share`` the image is flagged (``<metric>_tied``, counted as ``n_ties`` in
``results.csv``) and a warning is logged, since its score depends on the tie rule.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch

from salbench.errors import ConfigError

log = logging.getLogger(__name__)

TieOrder = Literal["stable", "quantus"]


def entry_order(flat: torch.Tensor, tie_order: TieOrder = "stable") -> torch.Tensor:
    """Indices sorting each row of ``flat`` (N, K) by increasing value, equal values by ``tie_order``."""
    if tie_order == "stable":
        return torch.argsort(flat, dim=1, stable=True)
    if tie_order == "quantus":
        order = np.argsort(flat.detach().cpu().numpy(), axis=1)
        return torch.from_numpy(order).to(device=flat.device, dtype=torch.long)
    raise ConfigError(f"tie_order: {tie_order!r} is not one of stable, quantus")


def tied_share(maps: torch.Tensor) -> torch.Tensor:
    """(N,) float64: the share of each (N,H,W) map's pixels whose value another pixel of it has."""
    flat = maps.detach().reshape(maps.shape[0], -1).to(torch.float64)
    if flat.shape[1] < 2:
        return torch.zeros(flat.shape[0], dtype=torch.float64)
    values = torch.sort(flat, dim=1).values
    equal = values[:, 1:] == values[:, :-1]
    tied = torch.zeros_like(values, dtype=torch.bool)
    tied[:, 1:] |= equal
    tied[:, :-1] |= equal
    return tied.to(torch.float64).mean(dim=1).cpu()


def flag_tied(maps: torch.Tensor, share: float, metric: str) -> np.ndarray:
    """Per image: more than ``share`` of its map is tied (float 0/1); one warning when any is."""
    shares = tied_share(maps).numpy()
    flags = (shares > share).astype(np.float64)
    if flags.any():
        log.warning(
            "%s: %d of %d maps have more than %.0f%% of their pixels tied (up to %.0f%%); their scores "
            "depend on the order of equal values (tie_order)",
            metric,
            int(flags.sum()),
            len(flags),
            100 * share,
            100 * float(shares.max()),
        )
    return flags


def default_features_in_step(height: int, width: int, channels: int = 3, grouping: str = "entries") -> int:
    """The study's group size 224*32 = 7168 at 224 x 224, scaled as the fraction 32/224 of H*W, then
    moved to the nearest divisor of the grouped count (Quantus rejects a step that does not divide it).

    Quantus 0.6 counts *channel entries* (a one-channel map is broadcast to the C input channels), so
    this gives ``C*H*W / step = 7 C`` groups (21 for RGB) at 112 and 224, where the scaled size divides
    exactly (nothing moves); at 32 x 32 RGB it gives 128 (24 groups, 146 does not divide 3,072); with
    ``grouping="pixels"`` (Quantus 0.5) the count is H*W (7 groups at 224).
    """
    target = max(1, round(height * width * 32 / 224))
    total = (channels if grouping == "entries" else 1) * height * width
    small = [d for d in range(1, math.isqrt(total) + 1) if total % d == 0]
    return min({*small, *(total // d for d in small)}, key=lambda d: (abs(d - target), d))
