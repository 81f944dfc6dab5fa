"""Pure perturbation functions of the recognition metrics (no model in here).

Images are normalised model inputs ``(pixels - mean) / std`` of shape (N,C,H,W); maps are (N,H,W).
Everything runs on the images' device and dtype, with no Python loop over images.

Conventions (SPEC section 6):

* ``x * m`` (Average Drop / Increase / Gain) multiplies the de-normalised pixels in [0, 1] by the map and
  re-normalises, so a zero map gives a black image (:func:`mask_pixels`).
* Pixel order for insertion/deletion (Petsiuk et al., RISE, BMVC 2018, section 4.1) is decreasing
  saliency with ties broken by raster index, smallest first (:func:`pixel_order`).
* Step ``k`` of a curve has the first ``min(k * step, H * W)`` pixels of that order changed; a curve has
  ``n_steps + 1`` points, the first being the unchanged start image.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from salbench.errors import ConfigError

ACML2024_STEPS = 28
"""Steps per curve in the study: 224 * 8 = 1792 pixels per step at 224 x 224 (28 steps + the start)."""

KernelConstruction = Literal["rise", "sampled"]


def _channel_view(values: Sequence[float], images: torch.Tensor, name: str) -> torch.Tensor:
    """(C,) statistics as a (1,C,1,1) tensor on the images' device; ``name`` is the argument's name."""
    if len(values) != images.shape[1]:
        raise ConfigError(f"{name}: {len(values)} values for {images.shape[1]} image channels")
    return torch.tensor(tuple(values), device=images.device, dtype=images.dtype).view(1, -1, 1, 1)


def mask_pixels(
    images: torch.Tensor, maps: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``x * m`` of Average Drop / Increase / Gain (Chattopadhyay et al., Grad-CAM++, WACV 2018, sec. 5.1).

    The de-normalised pixels are multiplied by the map and normalised again, so a map value 0 gives a
    black pixel. Maps are used as given (expected in [0, 1]; nothing is clipped). With ``mean = 0`` and
    ``std = 1`` this is torchcam's ``cam * input_tensor``.

    Args:
        images: (N,C,H,W) normalised images.
        maps: (N,H,W) maps, broadcast over channels.
        mean: per-channel normalisation mean (C values).
        std: per-channel normalisation std (C values).

    Returns:
        (N,C,H,W) normalised masked images.
    """
    mean_t = _channel_view(mean, images, "mean")
    std_t = _channel_view(std, images, "std")
    pixels = images * std_t + mean_t
    masked = pixels * maps.to(images.dtype).unsqueeze(1)
    return (masked - mean_t) / std_t


def black_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N,C,H,W) normalised images whose pixels are all 0 (black), i.e. ``-mean / std`` per channel."""
    mean_t = _channel_view(mean, images, "mean")
    std_t = _channel_view(std, images, "std")
    return (-mean_t / std_t).expand_as(images).clone()


def pixel_order(maps: torch.Tensor) -> torch.Tensor:
    """Pixel indices by decreasing saliency, ties broken stably by raster index.

    Equal values keep raster order (row-major, smallest index first); a constant map therefore
    perturbs pixels in raster order from the top-left corner. This deviates from RISE's reference code
    (``np.flip(np.argsort(...))``), whose tie order is unspecified (and reversed); the deviation only
    matters for maps with ties.

    Args:
        maps: (N,H,W) finite maps.

    Returns:
        (N,H*W) long tensor; ``order[i, 0]`` is the most salient pixel of image ``i``.
    """
    flat = maps.reshape(maps.shape[0], -1)
    return torch.argsort(flat, dim=1, descending=True, stable=True)


def pixel_ranks(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutation of :func:`pixel_order`: (N,HW) -> (N,HW) position of each pixel in the order."""
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def gaussian_kernel(
    size: int = 5, sigma: float = 5.0, construction: KernelConstruction = "rise"
) -> np.ndarray:
    """(size,size) float64 blur kernel summing to 1.

    Args:
        size: odd side length (acml2024: 5).
        sigma: standard deviation in pixels (acml2024: 5).
        construction: ``"rise"``, the study's (RISE's ``gkern``): ``scipy.ndimage.gaussian_filter`` of a
            centred Dirac in a size x size array (reflecting borders, truncation at 4 sigma); with
            size 5 and sigma 5 this is nearly a box filter (all weights 0.04 +- 3e-6).
            ``"sampled"``: the textbook outer product of ``exp(-d^2 / (2 sigma^2))``, normalised.
    """
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"blur_kernel: must be a positive odd integer, got {size}")
    if sigma <= 0:
        raise ConfigError(f"blur_sigma: must be positive, got {sigma}")
    if construction == "rise":
        dirac = np.zeros((size, size))
        dirac[size // 2, size // 2] = 1.0
        kernel = gaussian_filter(dirac, sigma)
    elif construction == "sampled":
        d = np.arange(size, dtype=np.float64) - size // 2
        g = np.exp(-(d**2) / (2.0 * sigma**2))
        kernel = np.outer(g, g)
    else:
        raise ConfigError(f"blur_construction: {construction!r} is not one of rise, sampled")
    return kernel / kernel.sum()


def gaussian_blur(
    images: torch.Tensor, kernel: int = 5, sigma: float = 5.0, construction: KernelConstruction = "rise"
) -> torch.Tensor:
    """Insertion's start image: per-channel Gaussian blur with zero padding, on *normalised* images.

    As in RISE's evaluation code and the study: the convolution runs on the normalised tensor, so the
    zero padding pads with the dataset mean colour, and the output keeps the input size.

    Args:
        images: (N,C,H,W) normalised images.
        kernel: odd kernel side (acml2024: 5).
        sigma: kernel standard deviation (acml2024: 5).
        construction: see :func:`gaussian_kernel`.

    Returns:
        (N,C,H,W) blurred images, same dtype and device.
    """
    k = torch.as_tensor(
        gaussian_kernel(kernel, sigma, construction), dtype=images.dtype, device=images.device
    )
    channels = images.shape[1]
    weight = k.expand(channels, 1, kernel, kernel).contiguous()
    return torch.nn.functional.conv2d(images, weight, padding=kernel // 2, groups=channels)


def n_steps(h: int, w: int, step: int) -> int:
    """Number of perturbation steps, ``ceil(h * w / step)``; a curve has ``n_steps + 1`` points."""
    if step < 1:
        raise ConfigError(f"step: must be a positive number of pixels, got {step}")
    return math.ceil(h * w / step)


def default_step(h: int, w: int, steps: int = ACML2024_STEPS) -> int:
    """Pixels per step so that an h x w image takes ``steps`` steps: ``ceil(h * w / steps)``.

    224 x 224 gives the study's 1792 (= 224 * 8, 28 steps); other sizes keep (at most) 28 steps.
    """
    return max(1, math.ceil(h * w / steps))


def step_counts(h: int, w: int, step: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n_steps+1,) long: pixels changed at each curve point, ``min(k * step, h * w)`` for k = 0..n_steps."""
    k = torch.arange(n_steps(h, w, step) + 1, device=device)
    return (k * step).clamp_max(h * w)


def blend_rows(
    sources: torch.Tensor,
    changed_src: torch.Tensor,
    kept_src: torch.Tensor,
    ranks: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """Build B perturbed inputs lazily, for :func:`~salbench.metrics.engine.chunked_target_probs`.

    Row ``r`` takes image ``sources[changed_src[r]]`` at the first ``counts[r]`` pixels of its order and
    ``sources[kept_src[r]]`` elsewhere; memory is O(B), whatever the number of images x steps.

    Args:
        sources: (S,C,H,W) candidate images (originals, blurred, substrates, ...).
        changed_src: (B,) long indices into ``sources`` for the perturbed pixels.
        kept_src: (B,) long indices into ``sources`` for the other pixels.
        ranks: (B,H*W) integer pixel ranks of each row's map (:func:`pixel_ranks`).
        counts: (B,) long number of pixels perturbed in each row.

    Returns:
        (B,C,H,W) inputs.

    Consecutive rows with the same source pair (the steps of one curve) form a run that is built by one
    broadcast ``lerp`` with a 0/1 weight (exactly one source or the other) straight into the output,
    without gathering a copy of each source per row.
    """
    b, (c, h, w) = changed_src.shape[0], sources.shape[1:]
    weight = (ranks < counts.view(-1, 1)).to(sources.dtype).view(b, 1, h, w)
    out = torch.empty((b, c, h, w), dtype=sources.dtype, device=sources.device)
    pair = changed_src * sources.shape[0] + kept_src
    cuts = [0, *(torch.nonzero(pair[1:] != pair[:-1]).flatten() + 1).tolist(), b]
    changed_ids, kept_ids = changed_src.tolist(), kept_src.tolist()
    for start, stop in itertools.pairwise(cuts):
        kept, changed = sources[kept_ids[start]], sources[changed_ids[start]]
        torch.lerp(kept, changed, weight[start:stop], out=out[start:stop])
    return out


def _progressive(start: torch.Tensor, finish: torch.Tensor, order: torch.Tensor, step: int) -> torch.Tensor:
    """All curve points at once: (N,C,H,W) x2 -> (N*(n_steps+1),C,H,W), image-major."""
    n, c, h, w = start.shape
    counts = step_counts(h, w, step, device=start.device)
    changed = pixel_ranks(order).unsqueeze(1) < counts.view(1, -1, 1)  # (N, n_steps+1, HW)
    changed = changed.view(n, -1, 1, h, w)
    out = torch.where(changed, finish.unsqueeze(1), start.unsqueeze(1))
    return out.reshape(-1, c, h, w)


def deletion_inputs(
    images: torch.Tensor, order: torch.Tensor, step: int, substrate: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Every deletion-curve input of a batch as one tensor (RISE deletion game).

    Row ``i * (n_steps + 1) + k`` is image ``i`` with its first ``min(k * step, H * W)`` pixels (in
    ``order``) replaced by the substrate. Materialises all rows: for large batches use
    :func:`blend_rows` with :func:`~salbench.metrics.engine.chunked_target_probs` instead.

    Args:
        images: (N,C,H,W) normalised images.
        order: (N,H*W) pixel order (:func:`pixel_order`).
        step: pixels per step.
        substrate: what deleted pixels become, broadcastable to (N,C,H,W); 0 (the study) is 0 in
            normalised space.

    Returns:
        (N*(n_steps+1),C,H,W) inputs.
    """
    finish = torch.as_tensor(substrate, dtype=images.dtype, device=images.device).expand_as(images)
    return _progressive(images, finish, order, step)


def insertion_inputs(
    images: torch.Tensor, blurred: torch.Tensor, order: torch.Tensor, step: int
) -> torch.Tensor:
    """Every insertion-curve input of a batch as one tensor (RISE insertion game).

    Row ``i * (n_steps + 1) + k`` is ``blurred[i]`` with its first ``min(k * step, H * W)`` pixels (in
    ``order``) taken from ``images[i]``.

    Args:
        images: (N,C,H,W) normalised images.
        blurred: (N,C,H,W) start images (:func:`gaussian_blur`).
        order: (N,H*W) pixel order.
        step: pixels per step.

    Returns:
        (N*(n_steps+1),C,H,W) inputs.
    """
    return _progressive(blurred, images, order, step)


def auc(curve: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Normalised area under curves along the last axis (RISE): ``(sum - first/2 - last/2) / (n - 1)``.

    This is the trapezoidal rule on n equally spaced points over [0, 1]; the last step, when shorter
    than ``step`` pixels, still counts as a full interval (as in RISE).

    Args:
        curve: (..., n) probabilities, n >= 2.

    Returns:
        (...) areas, same array type.
    """
    n = curve.shape[-1]
    if n < 2:
        raise ConfigError(f"auc: a curve needs at least 2 points, got {n}")
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / (n - 1)
