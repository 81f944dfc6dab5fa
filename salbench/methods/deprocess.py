"""Deprocessing: raw input attributions (N,C,H,W) -> one map per image (N,H,W) in [0, 1].

Gradient-type attributions have no single standard visualisation; the study offers two, selected with
``--deprocess`` and recorded in the method's ``store_id``:

- ``smoothgrad``: magnitude view. Max over channels of ``|g|``, then per-image min-max to [0, 1] (what the
  study's tables used).
- ``jacobgil``: signed view centred on 0.5, after ``deprocess_image`` of pytorch-grad-cam, here per image
  *and channel*: standardise over the pixels, scale by 0.1, shift by 0.5, clip to [0, 1], then average
  the channels.

Both are pure functions with no parameters beyond their input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from salbench.errors import ConfigError
from salbench.saliency import minmax_per_image

JACOBGIL_SCALE = 0.1
JACOBGIL_SHIFT = 0.5


def _check(grads: torch.Tensor) -> None:
    if grads.ndim != 4:
        raise ValueError(f"attributions must be (N,C,H,W), got shape {tuple(grads.shape)}")


def _empty(grads: torch.Tensor) -> torch.Tensor:
    return grads.new_zeros((0, *grads.shape[2:]), dtype=torch.float32)


def smoothgrad(grads: torch.Tensor) -> torch.Tensor:
    """Max over channels of the absolute attribution, then per-image min-max.

    Args:
        grads: (N,C,H,W) raw attributions.

    Returns:
        (N,H,W) float32 in [0, 1]; a constant map (e.g. an all-zero gradient) becomes all zeros.
    """
    _check(grads)
    if grads.shape[0] == 0:  # minmax_per_image cannot reshape an empty batch
        return _empty(grads)
    return minmax_per_image(grads.abs().amax(dim=1))


def jacobgil(grads: torch.Tensor) -> torch.Tensor:
    """Per image and channel: ``clip(0.5 + 0.1 * (g - mean) / std, 0, 1)``, then the channel mean.

    ``mean`` and ``std`` are taken over the H*W pixels of each (image, channel), with the population
    standard deviation (ddof 0, as numpy's default in pytorch-grad-cam's ``deprocess_image``). Deviation
    from that function: it standardises over all channels jointly and adds 1e-5 to ``std``; here each
    channel is standardised on its own and a channel with ``std == 0`` is divided by 1 instead (it maps to
    0.5 everywhere), so non-constant channels are standardised exactly.

    Args:
        grads: (N,C,H,W) raw attributions.

    Returns:
        (N,H,W) float32 in [0, 1].
    """
    _check(grads)
    if grads.shape[0] == 0:
        return _empty(grads)
    g = grads.float()
    mean = g.mean(dim=(2, 3), keepdim=True)
    std = g.std(dim=(2, 3), correction=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    z = (g - mean) / std
    return (z * JACOBGIL_SCALE + JACOBGIL_SHIFT).clamp(0.0, 1.0).mean(dim=1)


DEPROCESSORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "smoothgrad": smoothgrad,
    "jacobgil": jacobgil,
}
"""Deprocessing id -> function; the ids are stable (they are part of stored method ids)."""


def get_deprocessor(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the deprocessing function ``name`` or raise a one-line :class:`ConfigError`."""
    try:
        return DEPROCESSORS[name]
    except KeyError:
        raise ConfigError(f"unknown deprocess {name!r}; choose from: {', '.join(DEPROCESSORS)}") from None
