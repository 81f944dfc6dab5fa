"""What a saliency map is, shared by methods, metrics and the map store.

A map is ``(H, W)`` float32 at the model input resolution, finite; a batch of maps is ``(N, H, W)``.
"""

from __future__ import annotations

import torch


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
