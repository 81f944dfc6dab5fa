"""Interpretable-recognition metrics (SPEC section 6): Average Drop / Increase / Gain, Insertion, Deletion.

Two layers:

* :func:`recognition_scores` computes every per-image term for one batch of images and one method's
  maps in a single chunked pass through the model (no Python loop over images around a model call).
* the ``recognition`` group (:data:`RECOGNITION`) declares the five metrics it computes
  (``average_drop``, ``average_increase``, ``average_gain``, ``insertion``, ``deletion``).

Definitions, with Y = f(x)_c (stage-1 probability of target c) and O = f(x * m)_c:

* Average Drop (Chattopadhyay et al., Grad-CAM++, WACV 2018, eq. 19): max(0, Y - O) / Y.
* Average Increase / increase in confidence (ibid., sec. 5.1): 1[Y < O]; near ties (a map changing one
  pixel) are rounding noise: ``ai_rule`` ``strict`` (acml2024) or ``tolerant`` (reference), see
  :func:`~salbench.metrics.base.increase_indicator`; near ties are flagged (``increase_tie``).
* Average Gain (Zhang et al., Opti-CAM, 2023): max(0, O - Y) / (1 - Y).
* Insertion / Deletion (Petsiuk et al., RISE, BMVC 2018, sec. 4.1): normalised AUC of f(.)_c along the
  curves of :mod:`salbench.metrics.perturbation`.

Deviations: a term whose denominator is 0 (Y = 0 for AD, Y = 1 for AG, where the numerator is 0 too)
is 0 instead of 0/0; torchcam adds 1e-7 to Y instead. Images whose map has a NaN/inf value are
skipped: NaN in every per-image output and ``skipped = True``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable, Mapping, Sequence
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
    KernelConstruction,
    auc,
    black_images,
    blend_rows,
    default_step,
    gaussian_blur,
    mask_pixels,
    n_steps,
    pixel_order,
    pixel_ranks,
)
from salbench.metrics.shared import StartCache, check_ids
from salbench.scaling import blur_at_size

logger = logging.getLogger(__name__)

Substrate = Literal["zero", "black", "blur"]
SUBSTRATES: tuple[str, ...] = get_args(Substrate)
"""Deletion substrates: ``zero`` = 0 in normalised space (the dataset mean colour; RISE and the study),
``black`` = pixel value 0, ``blur`` = the insertion start image."""


def drop_terms(base: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """Per-image Average Drop terms ``max(0, Y - O) / Y`` (0 where Y = 0); NaN in, NaN out."""
    base, masked = np.asarray(base, dtype=np.float64), np.asarray(masked, dtype=np.float64)
    return np.maximum(0.0, base - masked) / np.where(base > 0, base, 1.0)


increase_terms = increase_indicator
"""Per-image Average Increase terms ``1[Y < O]`` as float (NaN where Y or O is), near ties by ``rule``."""


def gain_terms(base: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """Per-image Average Gain terms ``max(0, O - Y) / (1 - Y)`` (0 where Y = 1); NaN in, NaN out."""
    base, masked = np.asarray(base, dtype=np.float64), np.asarray(masked, dtype=np.float64)
    return np.maximum(0.0, masked - base) / np.where(base < 1, 1.0 - base, 1.0)


@dataclasses.dataclass(frozen=True)
class _Jobs:
    """Row table of one chunked pass: row r blends ``sources[changed]`` (first ``count`` pixels of image
    ``img``'s order) with ``sources[kept]``. Segments: starts (3 x todo), masked (valid), deletion and
    insertion interiors (valid x (n_steps - 1) each)."""

    img: torch.Tensor
    changed: torch.Tensor
    kept: torch.Tensor
    count: torch.Tensor


def _jobs(n: int, todo: torch.Tensor, valid: torch.Tensor, steps: int, step: int) -> _Jobs:
    """Sources are stacked as [images, blurred, substrate, masked], so image i of block b is b * n + i."""
    inner = torch.arange(1, steps, device=valid.device) * step
    d_img = valid.repeat_interleave(steps - 1)
    d_count = inner.repeat(valid.shape[0])
    start_src = torch.cat([todo, n + todo, 2 * n + todo])
    zeros = torch.zeros(3 * todo.shape[0] + valid.shape[0], dtype=torch.long, device=valid.device)
    return _Jobs(
        img=torch.cat([todo.repeat(3), valid, d_img, d_img]),
        changed=torch.cat([start_src, 3 * n + valid, 2 * n + d_img, d_img]),
        kept=torch.cat([start_src, 3 * n + valid, d_img, n + d_img]),
        count=torch.cat([zeros, d_count, d_count]),
    )


def _validate(images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, substrate: str) -> None:
    if images.ndim != 4:
        raise DataError(f"images: expected (N,C,H,W), got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    if tuple(maps.shape) != (n, h, w):
        raise DataError(f"maps: expected shape {(n, h, w)} to match images, got {tuple(maps.shape)}")
    if tuple(targets.shape) != (n,):
        raise DataError(f"targets: expected shape ({n},), got {tuple(targets.shape)}")
    if substrate not in SUBSTRATES:
        raise ConfigError(f"substrate: {substrate!r} is not one of {', '.join(SUBSTRATES)}")


def _substrate(
    images: torch.Tensor, blurred: torch.Tensor, substrate: str, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    if substrate == "zero":
        return torch.zeros_like(images)
    if substrate == "black":
        return black_images(images, mean, std)
    return blurred


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence[float], n: int, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise DataError(f"{name}: expected shape ({n},), got {arr.shape}")
    return arr


def _cached_starts(
    cache: StartCache | None, keys: list[Hashable], valid: torch.Tensor
) -> tuple[np.ndarray, torch.Tensor]:
    """(N,3) start probabilities known from the cache (NaN elsewhere), and the valid rows still to compute."""
    starts = np.full((len(keys), 3), np.nan)
    if cache is None:
        return starts, valid.nonzero().squeeze(1)
    todo = []
    for i in valid.nonzero().squeeze(1).tolist():
        hit = cache.get(keys[i])
        if hit is None:
            todo.append(i)
        else:
            starts[i] = hit
    return starts, torch.tensor(todo, dtype=torch.long, device=valid.device)


def recognition_scores(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    base_probs: torch.Tensor | np.ndarray | None = None,
    step: int | None = None,
    substrate: Substrate = "zero",
    blur_kernel: int = 5,
    blur_sigma: float = 5.0,
    blur_construction: KernelConstruction = "rise",
    max_batch: int = 1024,
    ai_tolerance: float = DEFAULT_TIE_TOLERANCE,
    ai_rule: TieRule = "strict",
    curves: bool = True,
    cache: StartCache | None = None,
    ids: Sequence[Hashable] | None = None,
    counter: ForwardCounter | None = None,
) -> dict[str, np.ndarray]:
    """Per-image AD / AI / AG terms, insertion / deletion AUCs and curves for one method's maps.

    All images x steps go through the model in chunks of at most ``max_batch`` rows, built lazily
    (memory O(max_batch)). Model work per valid image: 1 (masked image) + 2 * (n_steps - 1) curve
    interiors, + 3 map-independent curve ends unless ``cache`` already holds them.

    Args:
        model: classifier returning logits; evaluated in eval mode.
        images: (N,C,H,W) normalised images.
        maps: (N,H,W) saliency maps in [0, 1]; NaN/inf maps are skipped.
        targets: (N,) long target classes.
        mean: per-channel normalisation mean (for ``x * m`` and the black substrate).
        std: per-channel normalisation std.
        base_probs: (N,) stage-1 probabilities Y; None computes f(x)_c here.
        step: pixels per curve step; None scales the study's 1792 at 224 x 224 to 28 steps at any size.
        substrate: what deletion puts in place of pixels, one of :data:`SUBSTRATES`.
        blur_kernel: insertion blur kernel side (odd).
        blur_sigma: insertion blur sigma.
        blur_construction: ``rise`` or ``sampled`` (:func:`~salbench.metrics.perturbation.gaussian_kernel`).
        max_batch: most rows per forward pass.
        ai_tolerance: relative difference of O and Y below which they are a near tie.
        ai_rule: ``strict`` (the study's float comparison) or ``tolerant`` (a near tie is no increase).
        curves: also return the curves.
        cache: :class:`StartCache` shared across methods of the same images; needs ``ids``.
        ids: (N,) hashable image ids for the cache.
        counter: optional :class:`~salbench.metrics.engine.ForwardCounter` of model work.

    Returns:
        float64 arrays: ``base_prob`` (Y used), ``masked_prob`` (O), ``increase_tie`` (1: O, Y near tie),
        ``average_drop``, ``average_increase``, ``average_gain``, ``insertion``, ``deletion`` (N,);
        ``insertion_curve``, ``deletion_curve`` (N, n_steps+1) when ``curves``; ``skipped`` (N,) bool.
    """
    _validate(images, maps, targets, substrate)
    check_tie_rule(ai_tolerance, ai_rule, ("ai_tolerance", "ai_rule"))
    check_ids(cache, ids, images.shape[0])
    n, _, h, w = images.shape
    step = default_step(h, w) if step is None else int(step)
    steps = n_steps(h, w, step)
    maps = maps.to(device=images.device, dtype=images.dtype)
    targets = targets.to(device=images.device, dtype=torch.long)
    valid = torch.isfinite(maps.reshape(n, -1)).all(dim=1)
    safe = torch.where(valid.view(-1, 1, 1), maps, torch.zeros_like(maps))
    blurred = gaussian_blur(images, blur_kernel, blur_sigma, blur_construction)
    substrate_images = _substrate(images, blurred, substrate, mean, std)
    sources = torch.cat([images, blurred, substrate_images, mask_pixels(images, safe, mean, std)])
    settings = (h, w, substrate, blur_kernel, float(blur_sigma), blur_construction, tuple(mean), tuple(std))
    keys = [(ids[i], t, *settings) for i, t in enumerate(targets.tolist())] if ids is not None else [None] * n
    starts, todo = _cached_starts(cache, keys, valid)
    jobs = _jobs(n, todo, valid.nonzero().squeeze(1), steps, step)
    ranks = pixel_ranks(pixel_order(safe)).to(torch.int32)  # int32 halves the per-chunk rank gather
    probs = _evaluate(model, sources, ranks, targets, jobs, max_batch, counter)
    n_todo = todo.shape[0]
    starts[todo.tolist()] = probs[: 3 * n_todo].reshape(3, n_todo).T
    if cache is not None:
        for i in todo.tolist():
            cache.put(keys[i], tuple(starts[i].tolist()))
    out = _assemble(probs[3 * n_todo :], starts, valid.cpu().numpy(), steps)
    base = starts[:, 0] if base_probs is None else _as_numpy(base_probs, n, "base_probs")
    base = np.where(out["skipped"], np.nan, base)
    out.update(_terms(base, out.pop("masked"), out, (ai_tolerance, ai_rule)))
    if not curves:
        del out["insertion_curve"], out["deletion_curve"]
    if not valid.all():
        logger.warning("recognition: skipped %d of %d images with non-finite maps", int((~valid).sum()), n)
    return out


def _evaluate(
    model: nn.Module,
    sources: torch.Tensor,
    ranks: torch.Tensor,
    targets: torch.Tensor,
    jobs: _Jobs,
    max_batch: int,
    counter: ForwardCounter | None,
) -> np.ndarray:
    """Target probability of every job row, rows built lazily chunk by chunk -> (M,) float64."""

    def build(start: int, stop: int) -> torch.Tensor:
        sl = slice(start, stop)
        return blend_rows(sources, jobs.changed[sl], jobs.kept[sl], ranks[jobs.img[sl]], jobs.count[sl])

    probs = chunked_target_probs(model, build, targets[jobs.img], max_batch, counter=counter)
    return probs.double().cpu().numpy()


def _assemble(probs: np.ndarray, starts: np.ndarray, valid: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Scatter the masked and interior probabilities of valid images into (N,) / (N, steps+1) arrays."""
    n, nv = valid.shape[0], int(valid.sum())
    masked = np.full(n, np.nan)
    masked[valid] = probs[:nv]
    inner = probs[nv:].reshape(2, nv, steps - 1)
    deletion, insertion = np.full((2, n, steps + 1), np.nan)
    deletion[:, 0], deletion[:, -1] = starts[:, 0], starts[:, 2]
    insertion[:, 0], insertion[:, -1] = starts[:, 1], starts[:, 0]
    deletion[valid, 1:-1], insertion[valid, 1:-1] = inner
    return {"masked": masked, "deletion_curve": deletion, "insertion_curve": insertion, "skipped": ~valid}


def _terms(base: np.ndarray, masked: np.ndarray, out: Mapping[str, np.ndarray], tie: tuple) -> Scores:
    return {
        "base_prob": base,
        "masked_prob": masked,
        "increase_tie": near_ties(base, masked, tie[0]),
        "average_drop": drop_terms(base, masked),
        "average_increase": increase_terms(base, masked, *tie),
        "average_gain": gain_terms(base, masked),
        "insertion": auc(out["insertion_curve"]),
        "deletion": auc(out["deletion_curve"]),
    }


@dataclasses.dataclass(frozen=True)
class RecognitionParams(MetricParams):
    """Settings of :func:`recognition_scores` shared by the five recognition metrics (acml2024 defaults;
    the reference protocol decides AI's near ties with ``ai_rule: tolerant``); the group blurs at the
    input's size (below 112 pixels, the blur's lengths scale: :func:`salbench.scaling.blur_at_size`)."""

    step: int | None = None
    substrate: Substrate = "zero"
    blur_kernel: int = 5
    blur_sigma: float = 5.0
    blur_construction: KernelConstruction = "rise"
    max_batch: int = 1024
    ai_tolerance: float = DEFAULT_TIE_TOLERANCE
    ai_rule: TieRule = "strict"
    tie_tolerances: ClassVar[tuple[str, ...]] = ("ai_tolerance",)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments of :func:`recognition_scores` (same names)."""
        return dataclasses.asdict(self)


def _recognition(inputs: MetricInputs, params: RecognitionParams, wanted: frozenset[str]) -> Scores:
    """The recognition group: every term of :func:`recognition_scores` in one chunked program."""
    return recognition_scores(
        inputs.model,
        inputs.images,
        inputs.maps,
        inputs.targets,
        mean=inputs.mean,
        std=inputs.std,
        base_probs=inputs.base_probs,
        curves=True,
        cache=inputs.cache,
        ids=inputs.ids if inputs.cache is not None else None,
        counter=inputs.counter,
        **blur_at_size(params.as_kwargs(), tuple(inputs.images.shape[-2:])),
    )


_PROBS = {"base_prob": "base_prob", "masked_prob": "masked_prob"}
RECOGNITION = register(
    MetricGroup(
        "recognition",
        "recognition",
        RecognitionParams,
        _recognition,
        accepts=("base_probs", "cache", "ids", "counter"),
        aux=("base_prob", "masked_prob", "increase_tie"),
        arrays={"insertion": "insertion_curve", "deletion": "deletion_curve"},
        ties={"average_increase": "increase_tie"},
    ),
    MetricDef(
        "average_drop",
        "recognition",
        False,
        "recognition",
        "AD",
        "Average Drop, mean of max(0, Y - O) / Y (Chattopadhyay et al., Grad-CAM++, WACV 2018, eq. 19); "
        "tables show 100 - AD.",
        outputs=_PROBS,
    ),
    MetricDef(
        "average_increase",
        "recognition",
        True,
        "recognition",
        "AI",
        "Average Increase (increase in confidence), mean of 1[Y < O] (Grad-CAM++, sec. 5.1).",
        outputs=_PROBS,
    ),
    MetricDef(
        "average_gain",
        "recognition",
        True,
        "recognition",
        "AG",
        "Average Gain, mean of max(0, O - Y) / (1 - Y) (Zhang et al., Opti-CAM, 2023).",
        outputs=_PROBS,
    ),
    MetricDef(
        "insertion",
        "recognition",
        True,
        "recognition",
        "I",
        "Insertion AUC (Petsiuk et al., RISE, BMVC 2018, sec. 4.1): blurred image, most salient pixels "
        "revealed first.",
        outputs={**_PROBS, "curve": "insertion_curve"},
    ),
    MetricDef(
        "deletion",
        "recognition",
        False,
        "recognition",
        "D",
        "Deletion AUC (RISE, sec. 4.1): most salient pixels replaced by the substrate first; tables show "
        "100 - D.",
        outputs={**_PROBS, "curve": "deletion_curve"},
    ),
)
