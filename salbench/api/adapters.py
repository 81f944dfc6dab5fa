"""One batch-level call per registered metric: ``(images, maps, targets, extras) -> per-image arrays``.

Each adapter calls the metric's own batched function (``recognition_scores``, ``GomezMetric.scores``,
the metrics' ``compute``) with the metric's frozen
parameters and returns ``value`` (N,), optionally ``skipped`` (N,) bool and further per-image outputs
(probabilities, curves). No metric logic lives here.

Extras are the keyword arguments a metric needs beyond images, maps and targets (boxes, masks,
stage-1 probabilities, a generator, a re-explainer); :data:`PER_IMAGE` says how one image's extra
becomes a batch of one.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from salbench.errors import ConfigError
from salbench.methods.base import MethodContext
from salbench.metrics.base import Metric
from salbench.metrics.fidelity import Completeness, Monotonicity, black_baseline
from salbench.metrics.gomez import GomezMetric
from salbench.metrics.recognition import CurveMetric, RecognitionMetric, recognition_scores
from salbench.metrics.robustness import AvgSensitivity, MaxSensitivity, saliency_explainer

Scores = dict[str, np.ndarray]
Extras = Mapping[str, Any]
Tensor = torch.Tensor | None
"""Images and targets are None for maps-only metrics."""


@dataclasses.dataclass(frozen=True)
class Env:
    """What every adapter may use: the model (None for map-only metrics) and the input normalisation."""

    model: nn.Module | None
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _np(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _recognition(
    metric: Metric, env: Env, images: Tensor, maps: torch.Tensor, targets: Tensor, extras: Extras
) -> Scores:
    curve = isinstance(metric, CurveMetric)
    out = recognition_scores(
        env.model,
        images,
        maps,
        targets,
        mean=env.mean,
        std=env.std,
        curves=curve,
        **extras,
        **metric.params.as_kwargs(),
    )
    scores = {"value": out[metric.score_key], "skipped": out["skipped"]}
    scores |= {"base_prob": out["base_prob"], "masked_prob": out["masked_prob"]}
    if curve:
        scores["curve"] = out[metric.curve_key]
    return scores


def _gomez(
    metric: Metric, env: Env, images: Tensor, maps: torch.Tensor, targets: Tensor, extras: Extras
) -> Scores:
    out = metric.scores(env.model, images, maps, targets, mean=env.mean, std=env.std, **extras)
    keep = ("base_prob", "kept_prob", "removed_prob", "curve", "step_saliency")
    return {"value": out[metric.name], "skipped": out["skipped"], **{k: out[k] for k in keep if k in out}}


def _monotonicity(
    metric: Metric, env: Env, images: Tensor, maps: torch.Tensor, targets: Tensor, extras: Extras
) -> Scores:
    return {"value": _np(metric.compute(env.model, images, maps, targets, **extras))}


def _completeness(
    metric: Metric, env: Env, images: Tensor, maps: torch.Tensor, targets: Tensor, extras: Extras
) -> Scores:
    rest = dict(extras)
    baselines = rest.pop("baselines", None)
    if baselines is None:  # the study's black image, as stage 3 uses
        baselines = black_baseline(images, MethodContext(mean=env.mean, std=env.std))
    gap, holds = metric.compute(env.model, images, maps, targets, baselines, **rest)
    return {"value": _np(gap), "holds": _np(holds).astype(np.float64)}


def _sensitivity(
    metric: Metric, env: Env, images: Tensor, maps: torch.Tensor, targets: Tensor, extras: Extras
) -> Scores:
    rest = dict(extras)
    explain = rest.pop("explain", None) or saliency_explainer(env.model)  # acml2024 default
    return {"value": _np(metric.compute(maps, images, targets, explain, **rest))}


def _map_only(
    metric: Metric, env: Env, images: Tensor, maps: torch.Tensor, targets: Tensor, extras: Extras
) -> Scores:
    """Complexity and localization metrics: ``compute(maps, **extras)`` on the CPU, as stage 3 does."""
    tensors = {k: torch.as_tensor(v) for k, v in extras.items() if k in ("masks", "correct")}
    return {"value": _np(metric.compute(maps.cpu(), **{**extras, **tensors}))}


@dataclasses.dataclass(frozen=True)
class Adapter:
    """How the API drives one registered metric.

    Attributes:
        run: ``run(metric, env, images, maps, targets, extras) -> scores``.
        needs_model: the metric re-runs the model (images, targets and ``model=`` required).
        optional: extras it accepts.
        required: extras it cannot do without.
    """

    run: Callable[..., Scores]
    needs_model: bool
    optional: tuple[str, ...] = ()
    required: tuple[str, ...] = ()


def _compute_args(metric: Metric) -> tuple[str, ...]:
    """Arguments ``metric.compute`` takes after ``maps`` (localization: boxes, masks, correct)."""
    params = list(inspect.signature(metric.compute).parameters.values())
    return tuple(p.name for p in params if p.name != "maps")


def adapter_for(metric: Metric) -> Adapter:
    """The :class:`Adapter` of a registered metric instance.

    Raises:
        ConfigError: a metric no adapter knows (every registered one has one; a test checks it).
    """
    if isinstance(metric, RecognitionMetric):
        return Adapter(_recognition, True, ("base_probs", "counter"))
    if isinstance(metric, GomezMetric):
        return Adapter(_gomez, True, ("counter",))
    if isinstance(metric, Monotonicity):
        return Adapter(_monotonicity, True, ("baseline", "generator", "max_batch"))
    if isinstance(metric, Completeness):
        return Adapter(_completeness, True, ("baselines", "max_batch"))
    if isinstance(metric, MaxSensitivity | AvgSensitivity):
        return Adapter(_sensitivity, True, ("explain", "perturb", "generator"))
    if metric.category in ("complexity", "localization"):
        return Adapter(_map_only, False, required=_compute_args(metric))
    raise ConfigError(f"metric {metric.name!r} has no batch adapter in salbench.api")


def _image(v: Any) -> torch.Tensor:
    t = torch.as_tensor(v)
    return t if t.ndim == 4 else t.unsqueeze(0)


PER_IMAGE: dict[str, Callable[[Any], Any]] = {
    "base_probs": lambda v: torch.as_tensor([float(v)], dtype=torch.float64),
    "boxes": lambda v: [v],
    "masks": lambda v: torch.as_tensor(v).unsqueeze(0),
    "correct": lambda v: torch.as_tensor([bool(v)]),
    "baselines": _image,
}
"""One image's extra -> a batch of one (extras not listed, e.g. ``generator``, pass unchanged)."""
