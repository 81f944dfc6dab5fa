"""``build_metric(config)``: a metric from a config mapping, its parameters checked by name and type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from salbench.api.reinference import ReInferenceMetric
from salbench.config import build_dataclass
from salbench.errors import ConfigError
from salbench.metrics import METRICS, Metric

RETRAINING_TYPES = ("roar",)


def _split(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a mapping with a 'type' key, got {type(config).__name__}")
    kind = config.get("type")
    if not isinstance(kind, str):
        choices = ", ".join([*METRICS.names(), *RETRAINING_TYPES])
        raise ConfigError(f"config: 'type' must name a metric, one of {choices}")
    return kind, {k: v for k, v in config.items() if k != "type"}


def build_metric(
    config: Mapping[str, Any],
    *,
    model: nn.Module | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | str | None = None,
) -> Any:
    """Build an evaluation metric from ``{"type": <id>, **params}`` (``saliency_metrics.build_metric``).

    Args:
        config: ``type`` is a metric registry id (``insertion``, ``monotonicity``, ``dauc``,
            ``sparseness``, ``energy_pointing_game``, ...) or ``roar``; every other key is a field of
            that metric's frozen parameter dataclass (``roar``: of ``RoarSettings``).
        model: classifier returning logits (not needed by complexity and localization metrics).
        mean: per-channel normalisation mean of the images (default ImageNet's).
        std: per-channel normalisation std (default ImageNet's).
        device: compute device (default: the model's).

    Returns:
        A :class:`~salbench.api.reinference.ReInferenceMetric`, or for ``roar`` a
        :class:`~salbench.api.roar.ReTrainingMetric`.

    Raises:
        ConfigError: unknown type or parameter (named), a bad choice, or no model for a metric that
            re-runs one.
    """
    kind, values = _split(config)
    if kind == "roar":
        from salbench.api.roar import ReTrainingMetric

        return ReTrainingMetric.from_config(values, mean=mean, std=std, device=device)
    if kind not in METRICS:
        choices = ", ".join([*METRICS.names(), *RETRAINING_TYPES])
        raise ConfigError(f"unknown metric type {kind!r}; choose from: {choices}")
    definition = METRICS.get(kind)
    params = build_dataclass(definition.params_cls, values, f"metric {kind!r}")
    return ReInferenceMetric(Metric(definition, params), model=model, mean=mean, std=std, device=device)
