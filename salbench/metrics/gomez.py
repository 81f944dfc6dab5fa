"""Gomez et al.'s faithfulness metrics: IIC, AD, ADD, DAUC, DC, IAUC, IC.

T. Gomez, H. Mouchère, "Computing and evaluating saliency maps for image classification: a tutorial",
J. Electron. Imaging 32(2) 020801, 2023 (faithfulness metrics). Definitions are pinned to the authors'
package ``saliency-maps-metrics`` 0.0.26 (its source), deviations below. x is the image, c the target,
f(.)_c the softmax probability, "fill" the filling image (``black``: pixels 0; ``blur``: :func:`box_blur`).

Single-step: M = the map min-max normalised to [0, 1], upsampled bicubically (``align_corners=False``,
not clipped, so it may overshoot [0, 1] slightly) to the input size. Y = f(x)_c,
O = f(x M + fill (1 - M))_c, R = f(x (1 - M) + fill M)_c:

* IIC, increase in confidence: 1[O > Y]; near ties, ``|O - Y| <= iic_tolerance max(O, Y)``, are
  flagged per image (``iic_tie``) and decided by ``iic_rule`` (``strict``: as the floats compare, the
  package's rule; ``tolerant``: no increase; :func:`~salbench.metrics.base.increase_indicator`).
* AD, average drop: max(0, Y - O) / Y.
* ADD, average drop in deletion: (Y - R) / Y (signed; higher: the salient part mattered more).

Curves: the map's h x w cells are ordered by decreasing saliency; a cell covers the input pixels that
nearest-neighbour upsampling gives it. Step k changes the first min(k p, h w) cells, p = 1, or with
``bound_max_step`` p = (h w) // min(196, h w) (several cells per step above 14 x 14); a curve has n + 1
points, n = ceil(h w / p). Deletion starts from x and fills the changed cells; insertion starts from
the fill and puts x back.

* DAUC / IAUC: trapezoidal area under f(.)_c over n + 1 equally spaced points on [0, 1]
  (:func:`~salbench.metrics.perturbation.auc`).
* DC / IC: Pearson correlation over the n steps between the step's change of f(.)_c (deletion:
  previous - current; insertion: current - previous) and the mean raw map value of its cells.

Deliberate deviations from the package:

* Min-max per image (the package normalises over the whole batch, so a score depended on the other
  maps of its batch); on single-image batches both agree.
* Maps with a NaN/inf value or constant (no min-max, no ranking) are skipped and counted (the package
  returns NaN, or uses a constant map's raw value as the mask).
* When h w is not a multiple of p the last step changes the remaining cells (the package crashes).
* Fillings are built in pixel space (``mean``/``std`` de-normalise), so ``black`` is black and the blur
  pads with black; the package fills the tensor it is given, so on normalised inputs its ``black`` is
  the mean colour. ``mean = 0, std = 1`` reproduces the package exactly.
* Equal saliency: raster order (:func:`~salbench.metrics.perturbation.pixel_order`); the package's
  ``torch.topk`` leaves the tie order unspecified. Its ``cumulative=False`` variant is not provided.

Longer than ~400 lines: one paper's seven metrics share their mask upsampling, fillings, cell order and
curve passes, and every definition and deviation is pinned here, next to the code that follows it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import nn

from salbench.errors import ConfigError, DataError
from salbench.metrics.base import (
    DEFAULT_TIE_TOLERANCE,
    MetricDef,
    MetricGroup,
    MetricInputs,
    MetricParams,
    Scores,
    TieRule,
    check_tie_rule,
    increase_indicator,
    near_ties,
    register,
)
from salbench.metrics.engine import ForwardCounter, chunked_target_probs
from salbench.metrics.perturbation import (
    auc,
    black_images,
    blend_rows,
    n_steps,
    pixel_order,
    pixel_ranks,
    step_counts,
)
from salbench.metrics.shared import StartCache, check_ids
from salbench.saliency import minmax_per_image

logger = logging.getLogger(__name__)

Filling = Literal["black", "blur"]
FILLINGS: tuple[str, ...] = get_args(Filling)
Part = Literal["kept", "removed"]
"""Single-step images: ``kept`` = x M + fill (1 - M) (IIC, AD), ``removed`` = x (1 - M) + fill M (ADD)."""
Game = Literal["deletion", "insertion"]
MAX_STEP_NB = 14 * 14
"""Most steps per curve with ``bound_max_step`` (the package's ``max_step_nb``)."""


def blur_kernel_size(height: int) -> int:
    """The package's blur kernel side: ``max(height // 5, 9)``, made odd by adding 1."""
    size = max(height // 5, 9)
    return size + 1 if size % 2 == 0 else size


def box_blur(images: torch.Tensor, kernel: int | None = None) -> torch.Tensor:
    """Per-channel uniform (box) blur with zero padding, output the input size.

    The package's ``blur`` filling. :func:`~salbench.metrics.perturbation.gaussian_blur` is not used:
    the kernel here is uniform and much wider.

    Args:
        images: (N,C,H,W) images.
        kernel: odd kernel side; None uses :func:`blur_kernel_size` of H.

    Returns:
        (N,C,H,W) blurred images, same dtype and device.
    """
    size = blur_kernel_size(images.shape[2]) if kernel is None else int(kernel)
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"blur kernel: must be a positive odd integer, got {size}")
    channels = images.shape[1]
    weight = torch.full((channels, 1, size, size), 1.0 / size**2, dtype=images.dtype, device=images.device)
    return torch.nn.functional.conv2d(images, weight, padding=size // 2, groups=channels)


def _stats(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1,C,1,1) mean and std tensors on the images' device and dtype."""
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ConfigError(f"mean/std: need {images.shape[1]} values each, got {len(mean)} and {len(std)}")
    view = (1, -1, 1, 1)
    kw = {"dtype": images.dtype, "device": images.device}
    return torch.tensor(tuple(mean), **kw).view(view), torch.tensor(tuple(std), **kw).view(view)


def filling_images(
    images: torch.Tensor, filling: Filling, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """(N,C,H,W) normalised filling images, built in pixel space (black pixels or box-blurred pixels)."""
    if filling == "black":
        return black_images(images, mean, std)
    if filling == "blur":
        mean_t, std_t = _stats(images, mean, std)
        return (box_blur(images * std_t + mean_t) - mean_t) / std_t
    raise ConfigError(f"filling: {filling!r} is not one of {', '.join(FILLINGS)}")


def valid_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the map is finite everywhere and not constant (min-max and ranking are defined)."""
    flat = maps.reshape(maps.shape[0], -1)
    finite = torch.isfinite(flat).all(dim=1)
    safe = torch.where(finite.view(-1, 1), flat, torch.zeros_like(flat))
    return finite & (safe.amax(dim=1) > safe.amin(dim=1))


def single_step_masks(maps: torch.Tensor, size: tuple[int, int], clamp: bool = False) -> torch.Tensor:
    """Per-image min-max to [0, 1], then bicubic upsampling (``align_corners=False``) to ``size``.

    Args:
        maps: (N,h,w) finite maps (constant maps become all zeros).
        size: (H, W) input size; at h, w = H, W the interpolation is the identity.
        clamp: clip the upsampled mask to [0, 1] (the package does not).

    Returns:
        (N,H,W) masks in the maps' floating dtype.
    """
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    normed = minmax_per_image(maps).to(dtype).unsqueeze(1)
    up = torch.nn.functional.interpolate(normed, size=size, mode="bicubic", align_corners=False).squeeze(1)
    return up.clamp(0.0, 1.0) if clamp else up


def pixels_per_step(cells: int, bound_max_step: bool = True, max_step_nb: int = MAX_STEP_NB) -> int:
    """Map cells changed per curve step: 1, or ``cells // min(max_step_nb, cells)`` when bounded."""
    if max_step_nb < 1:
        raise ConfigError(f"max_step_nb: must be a positive number of steps, got {max_step_nb}")
    return cells // min(max_step_nb, cells) if bound_max_step else 1


def cell_index(map_size: tuple[int, int], size: tuple[int, int], device: torch.device | str) -> torch.Tensor:
    """(H*W,) long: the map cell of every input pixel under nearest-neighbour upsampling (as the package)."""
    h, w = map_size
    idx = torch.arange(h * w, dtype=torch.float32, device=device).view(1, 1, h, w)
    return torch.nn.functional.interpolate(idx, size=size, mode="nearest").reshape(-1).long()


def step_saliency(maps: torch.Tensor, order: torch.Tensor, per_step: int) -> torch.Tensor:
    """(N, n_steps) float64 mean map value of the cells changed at each step.

    Args:
        maps: (N,h,w) maps.
        order: (N,h*w) cell order (:func:`~salbench.metrics.perturbation.pixel_order`).
        per_step: cells per step; the last step may hold fewer.
    """
    n, h, w = maps.shape
    values = maps.reshape(n, -1).double().gather(1, order)
    csum = torch.nn.functional.pad(values.cumsum(dim=1), (1, 0))
    counts = step_counts(h, w, per_step, device=maps.device)
    return (csum[:, counts[1:]] - csum[:, counts[:-1]]) / (counts[1:] - counts[:-1]).double()


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of (N,S) arrays (``np.corrcoef``); NaN where a row is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / denom
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def _validate(images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor) -> None:
    if images.ndim != 4:
        raise DataError(f"images: expected (N,C,H,W), got shape {tuple(images.shape)}")
    n, _, height, width = images.shape
    if maps.ndim != 3 or maps.shape[0] != n:
        raise DataError(f"maps: expected ({n},h,w), got shape {tuple(maps.shape)}")
    if maps.shape[1] > height or maps.shape[2] > width:
        raise DataError(f"maps: {tuple(maps.shape[1:])} is larger than the input size {(height, width)}")
    if tuple(targets.shape) != (n,):
        raise DataError(f"targets: expected shape ({n},), got {tuple(targets.shape)}")


def _skip_log(valid: torch.Tensor, what: str) -> np.ndarray:
    skipped = (~valid).cpu().numpy()
    if skipped.any():
        logger.warning(
            "%s: skipped %d of %d images with NaN/inf or constant maps", what, skipped.sum(), len(skipped)
        )
    return skipped


def single_step_scores(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    filling: Filling = "black",
    parts: Sequence[Part] = ("kept", "removed"),
    clamp_mask: bool = False,
    base_probs: torch.Tensor | None = None,
    max_batch: int = 1024,
    iic_tolerance: float = DEFAULT_TIE_TOLERANCE,
    iic_rule: TieRule = "strict",
    counter: ForwardCounter | None = None,
) -> dict[str, np.ndarray]:
    """Per-image IIC, AD (``kept``) and ADD (``removed``) for one batch, in one chunked model pass.

    Rows (per valid image: the original unless ``base_probs``, then one per part) are blended lazily,
    at most ``max_batch`` at a time.

    Args:
        model: classifier returning logits; evaluated in eval mode.
        images: (N,C,H,W) normalised images.
        maps: (N,h,w) maps at any resolution up to (H,W); NaN/inf or constant maps are skipped.
        targets: (N,) long target classes.
        mean: per-channel normalisation mean (C values), for the filling.
        std: per-channel normalisation std.
        filling: ``black`` or ``blur``.
        parts: which masked images to evaluate, see :data:`Part`.
        clamp_mask: clip the upsampled mask to [0, 1].
        base_probs: (N,) f(x)_c if already known; None evaluates the originals here.
        max_batch: most rows per forward pass.
        iic_tolerance: relative difference of O and Y below which they are a near tie.
        iic_rule: ``strict`` (near ties as the floats compare) or ``tolerant`` (a near tie: no increase).
        counter: optional :class:`~salbench.metrics.engine.ForwardCounter`.

    Returns:
        float64 (N,) arrays, NaN for skipped images: ``base_prob``; with ``kept``: ``kept_prob``,
        ``iic``, ``iic_tie`` (1: O and Y a near tie), ``ad_gomez``; with ``removed``: ``removed_prob``,
        ``add``; and ``skipped`` (N,) bool.
    """
    _validate(images, maps, targets)
    check_tie_rule(iic_tolerance, iic_rule, ("iic_tolerance", "iic_rule"))
    if not parts or not set(parts) <= set(get_args(Part)):
        raise ConfigError(f"parts: expected a non-empty subset of kept, removed, got {tuple(parts)}")
    if base_probs is not None and tuple(base_probs.shape) != (images.shape[0],):
        raise DataError(f"base_probs: expected shape ({images.shape[0]},), got {tuple(base_probs.shape)}")
    valid = valid_maps(maps).to(images.device)
    safe = torch.where(valid.view(-1, 1, 1), maps.to(images.device), torch.zeros((), device=images.device))
    masks = single_step_masks(safe.to(images.dtype), (images.shape[2], images.shape[3]), clamp_mask)
    kinds = (() if base_probs is not None else ("original",)) + tuple(dict.fromkeys(parts))
    fills = filling_images(images, filling, mean, std)
    probs = _blended_probs(model, images, fills, masks, targets, valid, kinds, max_batch, counter)
    vnp = valid.cpu().numpy()
    base = probs["original"] if base_probs is None else base_probs.detach().double().cpu().numpy()
    base = np.where(vnp, base, np.nan)
    out = {"base_prob": base}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "kept" in probs:
            kept = probs["kept"]
            out |= {"kept_prob": kept, "ad_gomez": np.maximum(base - kept, 0.0) / base}
            out["iic"] = np.where(vnp, increase_indicator(base, kept, iic_tolerance, iic_rule), np.nan)
            out["iic_tie"] = np.where(vnp, near_ties(base, kept, iic_tolerance), np.nan)
        if "removed" in probs:
            out |= {"removed_prob": probs["removed"], "add": (base - probs["removed"]) / base}
    out["skipped"] = _skip_log(valid, "gomez single-step")
    return out


def _blended_probs(
    model: nn.Module,
    images: torch.Tensor,
    fills: torch.Tensor,
    masks: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    kinds: tuple[str, ...],
    max_batch: int,
    counter: ForwardCounter | None,
) -> dict[str, np.ndarray]:
    """f(.)_c of ``original``/``kept``/``removed`` rows of the valid images, built lazily -> kind: (N,)."""
    idx = valid.nonzero().squeeze(1)
    img = idx.repeat(len(kinds))
    kind = torch.arange(len(kinds), device=images.device).repeat_interleave(idx.shape[0])
    codes = torch.tensor([("original", "kept", "removed").index(k) for k in kinds], device=images.device)

    def build(start: int, stop: int) -> torch.Tensor:
        i, code = img[start:stop], codes[kind[start:stop]].view(-1, 1, 1)
        weight = torch.where(code == 0, 1.0, torch.where(code == 1, masks[i], 1.0 - masks[i])).unsqueeze(1)
        return images[i] * weight + fills[i] * (1.0 - weight)

    t = targets.to(device=images.device, dtype=torch.long)[img]
    flat = chunked_target_probs(model, build, t, max_batch, counter=counter).double().cpu().numpy()
    out = {k: np.full(images.shape[0], np.nan) for k in kinds}
    for j, k in enumerate(kinds):
        out[k][valid.cpu().numpy()] = flat[j * idx.shape[0] : (j + 1) * idx.shape[0]]
    return out


def curve_scores(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    game: Game,
    mean: Sequence[float],
    std: Sequence[float],
    filling: Filling | None = None,
    bound_max_step: bool = True,
    max_step_nb: int = MAX_STEP_NB,
    max_batch: int = 1024,
    counter: ForwardCounter | None = None,
    cache: StartCache | None = None,
    ids: Sequence[Hashable] | None = None,
) -> dict[str, np.ndarray]:
    """Per-image DAUC and DC (``game="deletion"``) or IAUC and IC (``"insertion"``) for one batch.

    All images x (n + 1) curve points go through the model in chunks of at most ``max_batch`` rows,
    built lazily with :func:`~salbench.metrics.perturbation.blend_rows`. A curve's two ends, the image
    itself and the whole filling, do not depend on the map: with a ``cache`` they are computed once per
    image, target and filling and taken by both games, both fillings' curves of the image and every
    further method (the first computation's values, as for the recognition curves' ends).

    Args:
        model: classifier returning logits; evaluated in eval mode.
        images: (N,C,H,W) normalised images.
        maps: (N,h,w) maps (e.g. a 7x7 CAM, or (H,W) for pixel maps); NaN/inf or constant maps skipped.
        targets: (N,) long target classes.
        game: ``deletion`` or ``insertion``.
        mean: per-channel normalisation mean (C values), for the filling.
        std: per-channel normalisation std.
        filling: ``black`` or ``blur``; None takes the package default (deletion black, insertion blur).
        bound_max_step: change several cells per step above ``max_step_nb`` cells (:func:`pixels_per_step`).
        max_step_nb: the package's 196 (14 x 14).
        max_batch: most rows per forward pass.
        counter: optional :class:`~salbench.metrics.engine.ForwardCounter`.
        cache: :class:`~salbench.metrics.shared.StartCache` shared across methods of the same images;
            needs ``ids``.
        ids: (N,) hashable image ids for the cache.

    Returns:
        float64 arrays, NaN for skipped images: ``dauc``/``dc`` or ``iauc``/``ic`` (N,), ``curve``
        (N, n+1), ``step_saliency`` (N, n); ``skipped`` (N,) bool.
    """
    _validate(images, maps, targets)
    if game not in get_args(Game):
        raise ConfigError(f"game: {game!r} is not one of deletion, insertion")
    filling = filling or ("black" if game == "deletion" else "blur")
    n, _, height, width = images.shape
    h, w = maps.shape[1:]
    per_step = pixels_per_step(h * w, bound_max_step, max_step_nb)
    points = n_steps(h, w, per_step) + 1
    valid = valid_maps(maps).to(images.device)
    safe = torch.where(valid.view(-1, 1, 1), maps.to(images.device), torch.zeros((), device=images.device))
    order = pixel_order(safe)
    cells = cell_index((h, w), (height, width), images.device)
    ranks = pixel_ranks(order).gather(1, cells.expand(n, -1)).to(torch.int32)
    sources = torch.cat([images, filling_images(images, filling, mean, std)])
    img = valid.nonzero().squeeze(1).repeat_interleave(points)
    counts = step_counts(h, w, per_step, device=images.device).repeat(img.shape[0] // points)
    changed, kept = (img + n, img) if game == "deletion" else (img, img + n)
    targets = targets.to(device=images.device, dtype=torch.long)
    ends = _curve_ends(cache, ids, images, targets, valid, points, game, filling, (tuple(mean), tuple(std)))
    known = np.full(img.shape[0], np.nan)
    for row, key in ends:
        hit = cache.end(key)  # type: ignore[union-attr]  # ends only with a cache
        known[row] = np.nan if hit is None else hit
    todo_rows = np.flatnonzero(np.isnan(known))  # the ends not in the cache and every interior point
    todo = torch.from_numpy(todo_rows).to(images.device)

    def build(start: int, stop: int) -> torch.Tensor:
        sl = todo[start:stop]
        return blend_rows(sources, changed[sl], kept[sl], ranks[img[sl]], counts[sl])

    probs = chunked_target_probs(model, build, targets[img[todo]], max_batch, counter=counter)
    known[todo_rows] = probs.double().cpu().numpy()
    for row, key in ends:
        cache.put_end(key, float(known[row]))  # type: ignore[union-attr]  # ends only with a cache
    vnp = valid.cpu().numpy()
    curve = np.full((n, points), np.nan)
    curve[vnp] = known.reshape(-1, points)
    sal = step_saliency(safe, order, per_step).cpu().numpy()
    sal[~vnp] = np.nan
    change = np.diff(curve, axis=1) * (-1.0 if game == "deletion" else 1.0)
    area, corr = ("dauc", "dc") if game == "deletion" else ("iauc", "ic")
    return {
        area: auc(curve),
        corr: np.where(vnp, pearson(change, sal), np.nan),
        "curve": curve,
        "step_saliency": sal,
        "skipped": _skip_log(valid, f"gomez {game}"),
    }


def _curve_ends(
    cache: StartCache | None,
    ids: Sequence[Hashable] | None,
    images: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    points: int,
    game: Game,
    filling: Filling,
    norm: tuple[tuple[float, ...], tuple[float, ...]],
) -> list[tuple[int, Hashable]]:
    """``(row, cache key)`` of each curve's first and last point (none without a cache): the image
    itself (``"original"``) and the whole filling (``"fill:<filling>"``), whatever the map."""
    check_ids(cache, ids, images.shape[0])
    if cache is None:
        return []
    ends = ("original", f"fill:{filling}")[:: 1 if game == "deletion" else -1]
    out = []
    for j, i in enumerate(valid.nonzero().squeeze(1).tolist()):
        image = (ids[i], int(targets[i]), "gomez", *images.shape[-2:], *norm)
        out += [(j * points, (ends[0], *image)), (j * points + points - 1, (ends[1], *image))]
    return out


@dataclasses.dataclass(frozen=True)
class SingleStepParams(MetricParams):
    """IIC / AD / ADD settings (package defaults): ``filling``, mask clipping, rows per forward pass,
    IIC's near-tie tolerance and rule (the reference protocol: ``tolerant``)."""

    filling: Filling = "black"
    clamp_mask: bool = False
    max_batch: int = 1024
    iic_tolerance: float = DEFAULT_TIE_TOLERANCE
    iic_rule: TieRule = "strict"
    tie_tolerances: ClassVar[tuple[str, ...]] = ("iic_tolerance",)


@dataclasses.dataclass(frozen=True)
class DeletionParams(MetricParams):
    """DAUC / DC settings (package defaults); ``bound_max_step`` caps a curve near ``max_step_nb`` steps."""

    filling: Filling = "black"
    bound_max_step: bool = True
    max_step_nb: int = MAX_STEP_NB
    max_batch: int = 1024


@dataclasses.dataclass(frozen=True)
class InsertionParams(DeletionParams):
    """IAUC / IC settings (package defaults: blurred start image)."""

    filling: Filling = "blur"


_KEPT = frozenset({"iic", "ad_gomez"})
_SINGLE_OUT = {"base_prob": "base_prob", "kept_prob": "kept_prob", "removed_prob": "removed_prob"}
_CURVE_OUT = {"curve": "curve", "step_saliency": "step_saliency"}


def _single(inputs: MetricInputs, params: SingleStepParams, wanted: frozenset[str]) -> Scores:
    """IIC, AD (the ``kept`` image) and ADD (the ``removed`` image) in one chunked pass."""
    parts = tuple(p for p, need in (("kept", wanted & _KEPT), ("removed", "add" in wanted)) if need)
    return single_step_scores(
        inputs.model,
        inputs.images,
        inputs.maps,
        inputs.targets,
        mean=inputs.mean,
        std=inputs.std,
        parts=parts,
        base_probs=inputs.base_probs,
        counter=inputs.counter,
        **dataclasses.asdict(params),
    )


def _curve(game: Game) -> Any:
    def function(inputs: MetricInputs, params: DeletionParams, wanted: frozenset[str]) -> Scores:
        """One deletion or insertion game: its AUC and correlation share every curve pass."""
        return curve_scores(
            inputs.model,
            inputs.images,
            inputs.maps,
            inputs.targets,
            game=game,
            mean=inputs.mean,
            std=inputs.std,
            counter=inputs.counter,
            cache=inputs.cache,
            ids=inputs.ids if inputs.cache is not None else None,
            **dataclasses.asdict(params),
        )

    return function


GOMEZ_SINGLE = register(
    MetricGroup(
        "gomez_single",
        "gomez",
        SingleStepParams,
        _single,
        accepts=("base_probs", "counter"),
        aux=("iic_tie",),
        ties={"iic": "iic_tie"},
    ),
    MetricDef(
        "iic",
        "gomez_single",
        True,
        "fidelity",
        "IIC",
        "Increase in confidence: share of images with f(x M + fill (1 - M))_c > f(x)_c "
        "(Gomez et al. 2023, sec. 4).",
        outputs=_SINGLE_OUT,
    ),
    MetricDef(
        "ad_gomez",
        "gomez_single",
        False,
        "fidelity",
        "AD",
        "Average drop, mean max(0, Y - O) / Y with Gomez' mask upsampling and filling (no 1e-7, unlike "
        "torchcam).",
        outputs=_SINGLE_OUT,
    ),
    MetricDef(
        "add",
        "gomez_single",
        True,
        "fidelity",
        "ADD",
        "Average drop in deletion: mean (Y - R) / Y, R with the salient part filled (Gomez et al. 2023).",
        outputs=_SINGLE_OUT,
    ),
)
GOMEZ_DELETION = register(
    MetricGroup(
        "gomez_deletion",
        "gomez",
        DeletionParams,
        _curve("deletion"),
        accepts=("counter", "cache", "ids"),
    ),
    MetricDef(
        "dauc",
        "gomez_deletion",
        False,
        "fidelity",
        "DAUC",
        "Area under the deletion curve (Petsiuk et al. 2018, as in Gomez et al. 2023).",
        outputs=_CURVE_OUT,
    ),
    MetricDef(
        "dc",
        "gomez_deletion",
        True,
        "fidelity",
        "DC",
        "Deletion correlation: Pearson correlation of each step's probability drop and removed saliency "
        "(Gomez et al. 2023).",
        outputs=_CURVE_OUT,
    ),
)
GOMEZ_INSERTION = register(
    MetricGroup(
        "gomez_insertion",
        "gomez",
        InsertionParams,
        _curve("insertion"),
        accepts=("counter", "cache", "ids"),
    ),
    MetricDef(
        "iauc",
        "gomez_insertion",
        True,
        "fidelity",
        "IAUC",
        "Area under the insertion curve, blurred start by default (Petsiuk et al. 2018).",
        outputs=_CURVE_OUT,
    ),
    MetricDef(
        "ic",
        "gomez_insertion",
        True,
        "fidelity",
        "IC",
        "Insertion correlation: Pearson correlation of each step's probability gain and revealed saliency "
        "(Gomez et al. 2023).",
        outputs=_CURVE_OUT,
    ),
)
GOMEZ_GROUPS = (GOMEZ_SINGLE, GOMEZ_DELETION, GOMEZ_INSERTION)
