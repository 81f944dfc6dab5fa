"""Sanity checks (Adebayo et al. 2018) for any attribution method, through :mod:`salbench.stages.sanity`.

An attribution method is either a registered method id (built on every randomised model with its
parameters, exactly as ``evaluation/sanity_checks.py`` does, by
:class:`salbench.stages.sanity.MethodExplainer`)
or any callable following :class:`AttributionMethod`. Randomised models, similarities and summaries
are :mod:`salbench.stages.sanity`'s own functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import nn

from salbench.api.results import dump_result, plain
from salbench.config import IMAGENET_MEAN, IMAGENET_STD, resolve_config
from salbench.errors import ConfigError, DataError
from salbench.methods.base import MethodContext
from salbench.metrics.similarity import METRIC_IDS
from salbench.models.layers import resolve_target_layer
from salbench.models.randomisation import randomisation_blocks
from salbench.runtime import Runtime
from salbench.stages.sanity import (
    VARIANTS,
    SanitySettings,
    compare_methods,
    flag_row,
    model_variants,
    summarise,
)
from salbench.stages.workspace import MethodExplainer, Workspace
from salbench.store.layout import RunLayout


@runtime_checkable
class AttributionMethod(Protocol):
    """``explain(model, images (N,C,H,W), targets (N,)) -> maps (N,H,W)`` or ``(maps, signed maps)``.

    It is called with the original model and with every randomised copy; signed maps (e.g. the
    channel sum of raw gradients) feed ``sanity_spearman``, and default to the maps.
    """

    def __call__(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


class CallableExplainer:
    """What :func:`salbench.stages.sanity.compare_methods` calls (``ws``, ``store_id``, ``explainer(model)``),
    for an :class:`AttributionMethod`."""

    family = "Custom"

    def __init__(
        self,
        ws: Workspace,
        explain: AttributionMethod,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        name: str,
    ) -> None:
        self.ws, self.explain, self.batches, self.store_id = ws, explain, batches, name

    def __call__(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """(maps (N,H,W), signed maps (N,H,W)) of every image on ``model``."""
        maps, signed = [], []
        for images, targets in self.batches:
            out = self.explain(model, images, targets)
            m, s = out if isinstance(out, tuple) else (out, out)
            for name, arr in (("maps", m), ("signed maps", s)):
                if tuple(arr.shape) != (images.shape[0], *images.shape[2:]):
                    raise DataError(
                        f"explain: returned {name} of shape {tuple(arr.shape)}, "
                        f"expected {(images.shape[0], *images.shape[2:])}"
                    )
            maps.append(torch.as_tensor(m).detach().float().cpu().numpy())
            signed.append(torch.as_tensor(s).detach().float().cpu().numpy())
        return np.concatenate(maps), np.concatenate(signed)


@dataclasses.dataclass(frozen=True)
class SanityResult:
    """Similarities of one method's maps on randomised models to its maps on the original model.

    Attributes:
        method: store id of the method (``gradient_smoothgrad``) or the callable's name.
        family: the method's family (``Custom`` for callables).
        blocks: randomised blocks, output layer first (level k = the first k blocks, cascading).
        per_image: one row per image x variant: ``image_id, variant, level`` and :data:`METRIC_IDS`.
        summary: per variant ``variant, level, n_images`` and the mean of each of :data:`METRIC_IDS`.
    """

    method: str
    family: str
    blocks: tuple[str, ...]
    per_image: pd.DataFrame
    summary: pd.DataFrame

    def flags(self, threshold: float = 0.5, flag_metric: str = "sanity_spearman_abs") -> dict[str, Any]:
        """:func:`salbench.stages.sanity.flag_row`: does the method fail (similarity above ``threshold``)?"""
        if flag_metric not in METRIC_IDS:
            raise ConfigError(f"flag_metric: {flag_metric!r} is not one of {', '.join(METRIC_IDS)}")
        settings = SanitySettings(threshold=threshold, flag_metric=flag_metric)
        deepest = f"cascading:{self.blocks[-1]}"
        return flag_row(self.method, self.family, self.summary, deepest, settings)

    def as_dict(self) -> dict[str, Any]:
        """JSON/YAML-safe view (NaN -> None)."""
        return plain(
            {
                "method": self.method,
                "family": self.family,
                "blocks": list(self.blocks),
                "summary": self.summary.to_dict(orient="list"),
                "per_image": self.per_image.to_dict(orient="list"),
            }
        )

    def dump(self, path: str | Path) -> Path:
        """Write :meth:`as_dict` as JSON or YAML by suffix, atomically."""
        return dump_result(self.as_dict(), path)


def _workspace(
    model: nn.Module,
    method: str | None,
    params: Mapping[str, Any] | None,
    context: MethodContext,
    target_layer: str,
    seed: int,
    protocol: str,
    device: torch.device,
) -> Workspace:
    """A workspace holding only what :mod:`salbench.stages.sanity` reads (config, runtime, model, context)."""
    overrides: dict[str, Any] = {"run": {"seed": seed, "protocol": protocol}}
    if method is not None:
        overrides["methods"] = {method: dict(params or {})}
    cfg = resolve_config(None, overrides)
    runtime = Runtime(device.type, seed, 0, False, torch.__version__, None)
    return Workspace(cfg, runtime, RunLayout.from_config(cfg), None, model, {}, target_layer, context, None)


def sanity_check(
    model: nn.Module,
    explain: str | AttributionMethod,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    params: Mapping[str, Any] | None = None,
    variants: Sequence[str] = ("cascading", "independent"),
    data_model: nn.Module | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    target_layer: str = "",
    batch_size: int = 32,
    seed: int = 0,
    protocol: str = "acml2024",
    ids: Sequence[str] | None = None,
    name: str = "custom",
) -> SanityResult:
    """Model-parameter (and data) randomisation check of one attribution method.

    Args:
        model: the trained classifier (never modified; randomised copies are made).
        explain: a registered method id (``gradient``, ``gradcam``, ...) or an :class:`AttributionMethod`.
        images: (N,C,H,W) normalised images, on the model's device.
        targets: (N,) target classes.
        params: parameters of a registered method (over the ``protocol`` preset's).
        variants: subset of ``cascading``, ``independent``, ``data``.
        data_model: the same architecture trained on shuffled labels (needed by ``data``).
        mean: per-channel normalisation mean (default ImageNet's), for methods that need it.
        std: per-channel normalisation std.
        target_layer: layer path for CAM-style methods (default: the ResNet/VGG rule).
        batch_size: images per method call.
        seed: seeds the randomised weights and the methods' generators (as ``run.seed``).
        protocol: parameter preset of registered methods.
        ids: image ids of the per-image rows (default ``"0"``, ``"1"``, ...).
        name: id of a callable method in the result.
    """
    bad = sorted(set(variants) - set(VARIANTS))
    if bad or not variants:
        raise ConfigError(f"variants: {bad[0] if bad else 'none'!r} given; choose from {', '.join(VARIANTS)}")
    if "data" in variants and data_model is None:
        raise ConfigError("data_model: the 'data' variant needs the model trained on shuffled labels")
    if images.ndim != 4 or tuple(targets.shape) != (images.shape[0],):
        raise DataError(
            f"images/targets: expected (N,C,H,W) and (N,), got {tuple(images.shape)}, {tuple(targets.shape)}"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
    try:
        spec, layer = resolve_target_layer(model, target_layer)
    except ConfigError:
        if target_layer:
            raise
        spec, layer = "", None  # only layer-based methods need one; they say so
    context = MethodContext(
        target_layer=layer,
        mean=tuple(IMAGENET_MEAN if mean is None else mean),
        std=tuple(IMAGENET_STD if std is None else std),
    )
    method = explain if isinstance(explain, str) else None
    ws = _workspace(model, method, params, context, spec, seed, protocol, images.device)
    targets = targets.to(device=images.device, dtype=torch.long)
    batches = [
        (images[i : i + batch_size], targets[i : i + batch_size]) for i in range(0, len(images), batch_size)
    ]
    if method is not None:
        explainer: Any = MethodExplainer(ws, method, batches)
        family = explainer.cls.family
    else:
        if params:
            raise ConfigError("params: only for a registered method id; a callable carries its own")
        explainer, family = CallableExplainer(ws, explain, batches, name), CallableExplainer.family
    blocks = randomisation_blocks(model)
    ids = [str(i) for i in range(len(images))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(images):
        raise DataError(f"ids: {len(ids)} ids for {len(images)} images")
    chosen = tuple(v for v in VARIANTS if v in variants)
    models = model_variants(ws, blocks, chosen, lambda: data_model)
    per_image = compare_methods([explainer], ids, models)[explainer.store_id]
    return SanityResult(
        explainer.store_id, family, tuple(b.name for b in blocks), per_image, summarise(per_image)
    )
