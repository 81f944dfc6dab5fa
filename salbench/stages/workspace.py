"""Everything a stage needs, resolved once from the config: runtime, layout, data, model, method context."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from salbench.config import Config
from salbench.data.images import FileImages, ImageSource
from salbench.data.sources import DataSource, open_data
from salbench.errors import ConfigError
from salbench.methods.base import MethodContext
from salbench.models.layers import resolve_target_layer
from salbench.models.registry import EMBEDDED_MODELS, build_model
from salbench.runtime import Runtime, setup_runtime
from salbench.store.layout import RunLayout, embedded_checkpoint


def with_default_checkpoint(cfg: Config) -> Config:
    """For embedded models without ``model.checkpoint``: a new config pointing at the cached checkpoint."""
    if cfg.model.name in EMBEDDED_MODELS and not cfg.model.checkpoint:
        model = dataclasses.replace(cfg.model, checkpoint=str(embedded_checkpoint(cfg)))
        return dataclasses.replace(cfg, model=model)
    return cfg


@dataclasses.dataclass(frozen=True)
class Workspace:
    """Resolved inputs of a stage (built by :func:`open_workspace`)."""

    cfg: Config
    runtime: Runtime
    layout: RunLayout
    data: DataSource
    model: nn.Module
    model_info: dict[str, Any]
    target_layer: str
    context: MethodContext
    images: ImageSource
    augmentation: str = "none"
    variant: str = ""

    def describe(self) -> dict[str, Any]:
        """Provenance recorded in manifests."""
        return {"data": self.data.describe(), "model": self.model_info, "target_layer": self.target_layer}


def open_workspace(cfg: Config, split: str | None = None) -> Workspace:
    """Set up the runtime, open the data and build the model (eval mode, on the run device)."""
    cfg = with_default_checkpoint(cfg)
    runtime = setup_runtime(cfg.run)
    data = open_data(cfg, split=split)
    model, info = build_model(cfg.model, num_classes=data.num_classes)
    model = model.to(runtime.torch_device)
    try:
        spec, layer = resolve_target_layer(model, cfg.model.target_layer)
    except ConfigError:
        if cfg.model.target_layer:
            raise
        spec, layer = "", None  # only layer-based methods need it; they fail with a clear message
    context = MethodContext(
        target_layer=layer,
        mean=data.preprocess.mean,
        std=data.preprocess.std,
        num_classes=info["num_classes"],
    )
    return Workspace(
        cfg, runtime, RunLayout.from_config(cfg), data, model, info, spec, context, FileImages(data)
    )
