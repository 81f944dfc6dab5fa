"""The protocol presets' pixel lengths at other input sizes.

Two presets' parameters are lengths in pixels: the insertion blur of the recognition metrics
(``metrics.recognition.blur_kernel``, ``blur_sigma``) and LIME's quickshift superpixels
(``methods.lime.kernel_size``, ``max_dist``). Their values are the study's, set for 224 x 224 ImageNet
inputs and used unchanged by the embedded default at 112 x 112. The rule:

* inputs whose shorter side is at least :data:`REFERENCE_SIDE` (112) use the values as given, so every
  number computed at 112 and 224 is what it was;
* smaller inputs (CIFAR's 32 x 32, MNIST's 28 x 28) use them multiplied by ``side / 112``: the image is
  treated as the embedded default scaled down, so a superpixel or the blur covers the same share of it
  (a 5 x 5 blur would cover 18 % of a 28-pixel side; quickshift with ``kernel_size=4`` finds 1-2
  superpixels on a 28 x 28 image, about 11 when scaled, as at 112 x 112).

Only the parameter dataclasses apply the rule (:class:`~salbench.metrics.recognition.RecognitionParams`
through the ``recognition`` group, :func:`blur_at_size`; :class:`~salbench.methods.lime.LimeParams` through
:meth:`~salbench.methods.lime.Lime.segment`); the pure functions
(:func:`~salbench.metrics.recognition.recognition_scores`, :func:`~salbench.methods.lime.quickshift_segments`)
take literal pixels. Every other spatial parameter already follows the input: curve steps (28 steps at
any size), RISE cells (``ceil(H / grid_size)``), Monotonicity groups (a share of H*W), IBA's smoothing
(in feature cells); Gomez et al.'s box blur follows its package's own rule (``max(H // 5, 9)``) and the
pointing game's ``tolerance`` is literal pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REFERENCE_SIDE = 112
"""Shorter input side at and above which the presets' pixel lengths are used as given."""


def length_scale(size: tuple[int, int], reference: int = REFERENCE_SIDE) -> float:
    """``min(1, min(H, W) / reference)``: the factor applied to a preset pixel length at input ``size``."""
    return min(1.0, min(int(size[0]), int(size[1])) / reference)


def scaled_length(value: float, size: tuple[int, int], minimum: float = 0.0) -> float:
    """A preset length in pixels at input ``size`` (:func:`length_scale`), at least ``minimum``."""
    scale = length_scale(size)
    return float(value) if scale >= 1.0 else max(float(minimum), float(value) * scale)


def scaled_kernel(side: int, size: tuple[int, int]) -> int:
    """A preset odd kernel side at input ``size``: scaled, rounded to the nearest odd integer, and at
    least 3 when ``side`` is (a blur stays a blur); ``side`` itself at the reference size and above, or
    when it is no positive odd integer (its user then sees the error that value gives)."""
    scale = length_scale(size)
    if scale >= 1.0 or side < 1 or side % 2 == 0:
        return int(side)
    k = round(side * scale)
    k = k if k % 2 == 1 else k + 1
    return max(k, min(int(side), 3))


def blur_at_size(kwargs: Mapping[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """The recognition metrics' keyword arguments with the insertion blur (``blur_kernel``,
    ``blur_sigma``) at input ``size``: :func:`scaled_kernel`, :func:`scaled_length` (28 x 28: 3 and 1.25
    for the presets' 5 and 5.0); the same values at 112 pixels and more."""
    out = dict(kwargs)
    out["blur_kernel"] = scaled_kernel(out["blur_kernel"], size)
    out["blur_sigma"] = scaled_length(out["blur_sigma"], size)
    return out
