"""Fidelity metrics that re-run the model: Monotonicity (correlation) and Completeness.

Monotonicity reproduces Quantus 0.6 ``MonotonicityCorrelation`` with the study's arguments
(``nr_samples=10``, ``features_in_step=224*32``, ``perturb_baseline="uniform"``, ``normalise=False``,
``abs=True``, softmax outputs, Spearman), evaluated as one chunked tensor program over all
images x groups x samples (:func:`salbench.metrics.engine.chunked_target_probs`).

The study's environment pinned Quantus 0.5.3, whose per-image implementation grouped differently: the
map's H*W *pixels* are sorted and cut into groups of ``features_in_step`` pixels (7 groups at 224x224),
every channel of a group's pixels is replaced, with one uniform value per channel. That variant is
``grouping="pixels"`` (with ``uniform_baseline(per_channel=True)``); the default ``"entries"`` is 0.6.

In a run both share the unperturbed outputs of a batch across the methods (f(x)_c, and f(black)_c for
Completeness), computed once per batch through the :class:`~salbench.metrics.shared.StartCache`.

Longer than ~400 lines: the two metrics' definitions, their Quantus deviations and the group adapters
that share their passes are read together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from salbench import rng
from salbench.errors import ConfigError, DataError
from salbench.metrics.base import (
    METRICS,
    MetricDef,
    MetricGroup,
    MetricInputs,
    MetricParams,
    Scores,
    register,
    to_numpy,
)
from salbench.metrics.engine import chunked_target_probs, target_probs
from salbench.metrics.ordering import TieOrder, default_features_in_step, entry_order, flag_tied
from salbench.metrics.perturbation import black_images
from salbench.scoped import autocast_passes, model_mode

Correlation = Literal["spearman", "pearson"]
Grouping = Literal["entries", "pixels"]
Baseline = Callable[[tuple[int, int, int, int], rng.Generators], torch.Tensor]
"""``baseline((G, S, N, C), generator)`` -> replacement values broadcastable to (G,S,N,C).

Entry ``[g, s, n, c]`` is the value written into channel ``c`` of every perturbed entry of image ``n``
for group ``g``, sample ``s``. Must be pure apart from the generator (one, or one per image: image
``n``'s values then come from generator ``n`` alone, see :mod:`salbench.rng`).
"""


def uniform_baseline(low: float = 0.0, high: float = 1.0, per_channel: bool = False) -> Baseline:
    """Quantus' ``perturb_baseline="uniform"``: values drawn from U[low, high) in normalised input space.

    Quantus 0.6 (batched perturbation) draws *one* value per image, group and sample and writes it into
    every perturbed entry; Quantus 0.5 drew one value per channel (``per_channel=True``).
    """

    def draw(shape: tuple[int, int, int, int], generator: rng.Generators) -> torch.Tensor:
        g, s, n, c = shape
        size = (g, s, n, c if per_channel else 1)
        return low + (high - low) * rng.rand(generator, size, 2, dtype=torch.float64)

    return draw


def _correlate(x: np.ndarray, y: np.ndarray, kind: Correlation) -> np.ndarray:
    """Row-wise correlation of (N,G) arrays; NaN for a constant row (as scipy/Quantus)."""
    if kind == "spearman":
        x, y = rankdata(x, axis=1), rankdata(y, axis=1)
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (xc * yc).sum(axis=1) / denom
    return np.where(denom > 0, np.clip(out, -1.0, 1.0), np.nan)


def monotonicity_groups(
    maps: torch.Tensor,
    channels: int,
    features_in_step: int,
    grouping: Grouping = "entries",
    tie_order: TieOrder = "stable",
) -> torch.Tensor:
    """Group id of every channel entry, in Quantus' ordering.

    ``"entries"`` (Quantus 0.6 ``MonotonicityCorrelation.evaluate_batch``): the (N,H,W) map is
    broadcast to (N,C,H,W) and flattened channel-first (entry ``c*H*W + p``), the entries are sorted by
    increasing attribution and cut into consecutive groups of ``features_in_step`` entries, so a group
    may hold only some channels of a pixel. ``"pixels"`` (Quantus 0.5 ``evaluate_instance``): the H*W
    pixels are sorted and grouped, and every channel of a pixel shares its group.

    Ties are broken by flat index (``tie_order="stable"``) or by numpy's ``argsort`` of the same array
    as Quantus (``"quantus"``: its order of equal values is numpy's); :mod:`salbench.metrics.ordering`.

    Returns:
        (N, C*H*W) long tensor of group ids in ``[0, ceil(K / features_in_step))``, K = C*H*W
        (entries) or H*W (pixels).
    """
    n = maps.shape[0]
    if grouping == "entries":
        flat = maps.unsqueeze(1).expand(n, channels, *maps.shape[1:]).reshape(n, -1)
    elif grouping == "pixels":
        flat = maps.reshape(n, -1)
    else:
        raise ConfigError(f"grouping: {grouping!r} is not one of entries, pixels")
    order = entry_order(flat, tie_order)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    groups = torch.div(ranks, features_in_step, rounding_mode="floor")
    return groups if grouping == "entries" else groups.repeat(1, channels)


def group_members(
    maps: torch.Tensor,
    channels: int,
    features_in_step: int,
    grouping: Grouping = "entries",
    tie_order: TieOrder = "stable",
) -> torch.Tensor:
    """Flat (channel-first) entry indices of every group of :func:`monotonicity_groups`, (N, G, L).

    Group ``g`` of an image holds the entries ranked ``g*step .. (g+1)*step - 1`` (entries) or every
    channel of the pixels ranked so (pixels); ``L`` = ``step`` (entries) or ``step*C`` (pixels). A
    shorter last group is padded by repeating its last entry (writing an entry twice with the same
    value changes nothing).
    """
    n, h, w = maps.shape
    if grouping == "entries":
        flat = maps.unsqueeze(1).expand(n, channels, h, w).reshape(n, -1)
    elif grouping == "pixels":
        flat = maps.reshape(n, -1)
    else:
        raise ConfigError(f"grouping: {grouping!r} is not one of entries, pixels")
    order = entry_order(flat, tie_order)
    n_groups = math.ceil(order.shape[1] / features_in_step)
    pad = n_groups * features_in_step - order.shape[1]
    order = torch.cat([order, order[:, -1:].expand(n, pad)], dim=1).view(n, n_groups, features_in_step)
    if grouping == "entries":
        return order
    offsets = torch.arange(channels, device=order.device).view(1, 1, 1, channels) * (h * w)
    return (order.unsqueeze(-1) + offsets).reshape(n, n_groups, features_in_step * channels)


def _group_attributions(
    a: torch.Tensor, channels: int, step: int, grouping: Grouping, tie_order: TieOrder = "stable"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C*H*W) entry group ids and (N, G) float64 summed attributions ``A_g`` of (N,H,W) maps."""
    n, h, w = a.shape
    groups = monotonicity_groups(a, channels, step, grouping, tie_order)
    n_groups = math.ceil((channels if grouping == "entries" else 1) * h * w / step)
    if grouping == "entries":
        flat_a, att_groups = a.unsqueeze(1).expand(n, channels, h, w).reshape(n, -1), groups
    else:
        flat_a, att_groups = a.reshape(n, -1), groups[:, : h * w]
    atts = torch.zeros(n, n_groups, dtype=torch.float64, device=a.device)
    return groups, atts.scatter_add_(1, att_groups, flat_a.to(torch.float64))


def _validate(images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor) -> None:
    if images.ndim != 4 or maps.ndim != 3 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise DataError(
            f"maps: expected shape (N,H,W) matching images (N,C,H,W), got {tuple(maps.shape)} "
            f"and {tuple(images.shape)}"
        )
    if targets.shape != (images.shape[0],):
        raise DataError(f"targets: expected shape ({images.shape[0]},), got {tuple(targets.shape)}")


def monotonicity(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    features_in_step: int | None = None,
    nr_samples: int = 10,
    correlation: Correlation = "spearman",
    abs_values: bool = True,
    eps: float = 1e-5,
    grouping: Grouping = "entries",
    baseline: Baseline | None = None,
    generator: rng.Generators = None,
    max_batch: int = 256,
    tie_order: TieOrder = "stable",
    base_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Monotonicity correlation (Nguyen & Martinez, "On quantitative aspects of model interpretability",
    2020, sec. 4.3; Quantus 0.6 ``MonotonicityCorrelation``).

    For each group ``g`` of entries (:func:`monotonicity_groups`, increasing attribution) and sample
    ``s``, the group's entries are replaced by ``baseline`` values and the target probability
    ``f(x_gs)_c`` recomputed; ``v_g = mean_s (f(x_gs)_c - f(x)_c)^2 / f(x)_c^2`` (the division is
    skipped when ``f(x)_c < eps``, as in Quantus), ``A_g`` = sum of the group's attributions (over
    entries: a pixel counts once per channel in the group; over pixels with ``grouping="pixels"``),
    and the score is the Spearman (acml2024) or Pearson correlation of ``A`` and ``v``.
    Positive values mean low-attribution groups change the output less (faithful).

    Rows of the batched program are ordered image-major: row ``(n*G + g)*S + s``.

    Args:
        model: classifier returning logits; evaluated in eval mode.
        images: (N,C,H,W) normalised inputs.
        maps: (N,H,W) maps.
        targets: (N,) long target classes.
        features_in_step: entries per group (None: :func:`default_features_in_step`).
        nr_samples: S, baseline draws per group (acml2024: 10).
        correlation: ``"spearman"`` (acml2024, Quantus default) or ``"pearson"`` (the paper's text).
        abs_values: use ``|a|`` (Quantus default ``abs=True``).
        eps: probability below which ``1 / f(x)_c^2`` is replaced by 1.
        grouping: ``"entries"`` (Quantus 0.6) or ``"pixels"`` (Quantus 0.5); see
            :func:`monotonicity_groups`.
        baseline: replacement values (None: :func:`uniform_baseline`, U[0,1) per image).
        generator: drives the default baseline (one, or one per image).
        max_batch: rows per forward pass.
        tie_order: order of equal attributions (:func:`~salbench.metrics.ordering.entry_order`).
        base_probs: (N,) ``f(x)_c`` already computed (by :func:`target_probs` with the same
            ``max_batch``: shared by every method of the same images); None computes it here.

    Returns:
        (N,) float64 correlations in [-1, 1]; NaN where attributions or variations are constant.
    """
    _validate(images, maps, targets)
    n, c, h, w = images.shape
    step = features_in_step if features_in_step is not None else default_features_in_step(h, w, c, grouping)
    if step < 1 or nr_samples < 1:
        raise ConfigError(f"features_in_step/nr_samples: must be >= 1, got {step}/{nr_samples}")
    a = maps.detach()  # the maps' own dtype: the array Quantus sorts (float32 maps stay float32)
    a = a.abs() if abs_values else a
    _, atts = _group_attributions(a, c, step, grouping, tie_order)
    n_groups = atts.shape[1]

    draw = baseline if baseline is not None else uniform_baseline()
    fill = draw((n_groups, nr_samples, n, c), generator).to(images.device)
    fill = fill.expand(n_groups, nr_samples, n, c)
    members = group_members(a, c, step, grouping, tie_order).to(images.device)
    flat_images = images.reshape(n, c * h * w)

    def build(start: int, stop: int) -> torch.Tensor:
        rows = torch.arange(start, stop, device=images.device)
        img, grp, smp = rows // (n_groups * nr_samples), (rows // nr_samples) % n_groups, rows % nr_samples
        entries = members[img, grp]  # (rows, L) flat entry indices of the row's group
        # float64 draws cast once to the input dtype, as Quantus writing them into a float32 array.
        values = (
            fill[grp, smp, img].to(images.dtype).gather(1, torch.div(entries, h * w, rounding_mode="floor"))
        )
        return flat_images[img].scatter_(1, entries, values).view(-1, c, h, w)

    row_targets = targets.to(images.device).repeat_interleave(n_groups * nr_samples)
    probs = chunked_target_probs(model, build, row_targets, max_batch).to(torch.float64)
    if base_probs is None:
        base_probs = target_probs(model, images, targets.to(images.device), max_batch)
    base = base_probs.to(device=images.device, dtype=torch.float64)
    inv = torch.where(base.abs() >= eps, 1.0 / base.abs().clamp_min(eps) ** 2, torch.ones_like(base))
    variation = ((probs.view(n, n_groups, nr_samples) - base.view(n, 1, 1)) ** 2).mean(dim=2)
    variation = variation * inv.view(n, 1)
    scores = _correlate(atts.cpu().numpy(), variation.cpu().numpy(), correlation)
    return torch.from_numpy(scores)


@torch.no_grad()
def _target_outputs(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, output: str, max_batch: int
) -> torch.Tensor:
    """(M,) float64 target logit (``output="logit"``) or softmax probability of ``inputs``, eval mode."""
    if output == "probability":
        return target_probs(model, inputs, targets, max_batch).to(torch.float64)
    if output != "logit":
        raise ConfigError(f"output: {output!r} is not one of logit, probability")
    parts = []
    with model_mode(model, False), autocast_passes(inputs.device):
        for start in range(0, inputs.shape[0], max_batch):
            logits = model(inputs[start : start + max_batch])
            parts.append(logits.gather(1, targets[start : start + max_batch].view(-1, 1)).squeeze(1))
    return torch.cat(parts).to(torch.float64)


def completeness(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    baselines: torch.Tensor,
    *,
    output: Literal["logit", "probability"] = "logit",
    atol: float = 1e-4,
    rtol: float = 1e-2,
    max_batch: int = 256,
    outputs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Completeness (Sundararajan et al., "Axiomatic attribution for deep networks", ICML 2017, sec. 3,
    Proposition 1): does ``sum_i a_i`` equal ``f(x)_c - f(x')_c``?

    Deviation from Quantus 0.6 ``Completeness`` (which the study called but never recorded): Quantus
    tests exact float equality, and its "black" baseline replaces only the first H*W entries of the
    flattened input (channel 0 of a one-channel map's input) by the image minimum. Here the baseline is
    a whole image (e.g. :func:`black_baseline`), and the gap is reported with a tolerance.

    Args:
        model: classifier returning logits.
        images: (N,C,H,W) normalised inputs.
        maps: (N,H,W) maps, summed as given (no abs).
        targets: (N,) long.
        baselines: (N,C,H,W) normalised baseline inputs ``x'``.
        output: ``"logit"`` (Quantus' ``softmax=False``) or ``"probability"``.
        atol: absolute tolerance of ``holds``.
        rtol: tolerance relative to ``|f(x)_c - f(x')_c|``.
        max_batch: rows per forward pass.
        outputs: (2N,) float64 outputs of the images then the baselines, already computed (shared by
            every method of the same images); None computes them here.

    Returns:
        ``(gap, holds)``: (N,) float64 ``|sum(a) - (f(x)_c - f(x')_c)|`` and (N,) bool
        ``gap <= atol + rtol * |f(x)_c - f(x')_c|``.
    """
    _validate(images, maps, targets)
    if baselines.shape != images.shape:
        raise DataError(f"baselines: expected shape {tuple(images.shape)}, got {tuple(baselines.shape)}")
    t = targets.to(images.device)
    both = outputs
    if both is None:
        both = _target_outputs(
            model, torch.cat([images, baselines.to(images)]), t.repeat(2), output, max_batch
        )
    delta = both[: images.shape[0]] - both[images.shape[0] :]
    total = maps.detach().to(torch.float64).reshape(maps.shape[0], -1).sum(dim=1).to(delta.device)
    gap = (total - delta).abs()
    return gap, gap <= atol + rtol * delta.abs()


@dataclasses.dataclass(frozen=True)
class MonotonicityParams(MetricParams):
    """Monotonicity parameters (defaults: the study's call under Quantus 0.6).

    ``features_in_step=None`` scales 224*32 to H*W; ``grouping="pixels"`` is Quantus 0.5's grouping
    (pair it with ``uniform_baseline(per_channel=True)`` passed to :meth:`Monotonicity.compute`).
    ``tie_order``/``tie_share``: the tie rule and flag (:mod:`salbench.metrics.ordering`).
    """

    features_in_step: int | None = None
    nr_samples: int = 10
    correlation: Correlation = "spearman"
    abs_values: bool = True
    eps: float = 1e-5
    grouping: Grouping = "entries"
    max_batch: int = 256
    tie_order: TieOrder = "stable"
    tie_share: float = 0.1


@dataclasses.dataclass(frozen=True)
class CompletenessParams(MetricParams):
    """Completeness parameters: model output compared and the tolerance of ``holds``."""

    output: Literal["logit", "probability"] = "logit"
    atol: float = 1e-4
    rtol: float = 1e-2
    max_batch: int = 256


def _per_batch(inputs: MetricInputs, what: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``, once per batch of images and targets for every method when a cache is given."""
    if inputs.cache is None or inputs.ids is None:
        return compute()
    return inputs.cache.shared((*what, tuple(inputs.ids), tuple(inputs.targets.tolist())), compute)


def _monotonicity(inputs: MetricInputs, params: MonotonicityParams, wanted: frozenset[str]) -> Scores:
    """f(x)_c is computed once per batch for every method (same passes: the same numbers)."""
    t = inputs.targets.to(inputs.images.device)
    base = _per_batch(
        inputs,
        ("f(x)", params.max_batch),
        lambda: target_probs(inputs.model, inputs.images, t, params.max_batch),
    )
    values = monotonicity(
        inputs.model,
        inputs.images,
        inputs.maps,
        inputs.targets,
        baseline=inputs.baseline,
        generator=inputs.generator("monotonicity"),
        base_probs=base,
        **{k: v for k, v in dataclasses.asdict(params).items() if k != "tie_share"},
    )
    tied = flag_tied(inputs.maps, params.tie_share, "monotonicity")
    return {"monotonicity": values.numpy(), "monotonicity_tied": tied}


def _completeness(inputs: MetricInputs, params: CompletenessParams, wanted: frozenset[str]) -> Scores:
    """Gap and verdict from one pass over the images and their baselines (black images by default)."""
    images = inputs.images
    baselines, outputs = inputs.baselines, None
    if baselines is None:  # the study's black image: both outputs shared by every method of the batch
        baselines = black_images(images, inputs.mean, inputs.std)
        t = inputs.targets.to(images.device).repeat(2)
        outputs = _per_batch(
            inputs,
            ("f(x), f(black)", tuple(inputs.mean), tuple(inputs.std), params.output, params.max_batch),
            lambda: _target_outputs(
                inputs.model, torch.cat([images, baselines]), t, params.output, params.max_batch
            ),
        )
    gap, holds = completeness(
        inputs.model,
        images,
        inputs.maps,
        inputs.targets,
        baselines,
        outputs=outputs,
        **dataclasses.asdict(params),
    )
    return {"completeness_gap": to_numpy(gap), "completeness_holds": to_numpy(holds).astype(np.float64)}


MONOTONICITY = register(
    MetricGroup(
        "monotonicity",
        "monotonicity",
        MonotonicityParams,
        _monotonicity,
        accepts=("baseline", "generator"),
        aux=("monotonicity_tied",),
        ties={"monotonicity": "monotonicity_tied"},
    ),
    MetricDef(
        "monotonicity",
        "monotonicity",
        True,
        "fidelity",
        "Monotonicity",
        "Monotonicity correlation (Nguyen & Martinez 2020, sec. 4.3; Quantus 0.6 MonotonicityCorrelation): "
        "correlation of each group's summed attribution and the squared change of f(x)_c when the group is "
        "replaced by noise.",
    ),
)
COMPLETENESS = register(
    MetricGroup("completeness", "completeness", CompletenessParams, _completeness, accepts=("baselines",)),
    MetricDef(
        "completeness_gap",
        "completeness",
        False,
        "fidelity",
        "Compl. gap",
        "Completeness gap |sum(a) - (f(x)_c - f(x')_c)| against a baseline x' (Sundararajan et al. 2017, "
        "sec. 3); lower is better.",
        outputs={"holds": "completeness_holds"},
    ),
    MetricDef(
        "completeness_holds",
        "completeness",
        True,
        "fidelity",
        "Compl. holds",
        "Share of images whose completeness gap is within atol + rtol |f(x)_c - f(x')_c|.",
    ),
)
METRICS.alias("completeness", "completeness_gap")
