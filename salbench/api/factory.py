"""``build_metric(config)``: a metric from a config mapping, its parameters checked by name and type."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from salbench.api.reinference import ReInferenceMetric
from salbench.errors import ConfigError
from salbench.metrics import METRICS

RETRAINING_TYPES = ("roar",)


def build_dataclass(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """Build the frozen dataclass ``cls`` from ``values``, rejecting unknown keys and bad choices by name.

    Lists become tuples; a :data:`typing.Literal` field must hold one of its choices.

    Args:
        cls: a frozen parameter dataclass.
        values: field name -> value.
        what: how errors name the owner, e.g. ``"metric 'insertion'"``.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise ConfigError(f"unknown parameter {unknown[0]!r} for {what}; allowed: {allowed}")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        value = tuple(value) if isinstance(value, list) else value
        if typing.get_origin(hints[name]) is Literal and value not in typing.get_args(hints[name]):
            choices = ", ".join(map(str, typing.get_args(hints[name])))
            raise ConfigError(f"parameter {name!r} of {what}: {value!r} is not one of {choices}")
        out[name] = value
    return cls(**out)


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
    cls = METRICS.get(kind)
    params = build_dataclass(cls.params_cls, values, f"metric {kind!r}")
    return ReInferenceMetric(cls(params), model=model, mean=mean, std=std, device=device)
