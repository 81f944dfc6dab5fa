"""Everything a stage needs, resolved once from the config: runtime, layout, data, model, method context."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from salbench.config import Config
from salbench.data.images import FileImages, ImageSource
from salbench.data.sources import DataSource, open_data
from salbench.errors import ConfigError
from salbench.methods.base import METHODS, MethodContext, Preparation, SaliencyMethod, build_params
from salbench.models.layers import get_submodule, resolve_target_layer
from salbench.models.registry import EMBEDDED_MODELS, build_model
from salbench.progress import progress as progress_bar
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

    @property
    def state_dir(self):
        """Where run-level method state (RISE masks) is saved: beside the map stores."""
        return self.layout.model_dir / "maps"

    def method(
        self, method_id: str, overrides: Mapping[str, Any] | None = None, model: nn.Module | None = None
    ) -> SaliencyMethod:
        """``method_id`` with the run's parameters (protocol preset < config < ``overrides``), not prepared.

        Args:
            method_id: registry id.
            overrides: parameter values replacing the configured ones (e.g. ``deprocess``).
            model: explain this model instead of the run's (a randomised copy); its target layer is
                found at the run's target-layer path.
        """
        cls = METHODS.get(method_id)
        values = {**self.cfg.method_params(method_id), **(overrides or {})}
        context = self.context
        if model is not None:
            layer = get_submodule(model, self.target_layer) if self.target_layer else None
            context = dataclasses.replace(context, target_layer=layer)
        return cls(
            self.model if model is None else model, context, build_params(cls.params_cls, values, method_id)
        )

    def preparation(
        self,
        images: Callable[[], Iterable[torch.Tensor]] | None = None,
        desc: str | None = None,
        progress: bool = True,
    ) -> Preparation:
        """The :class:`Preparation` of this run: its evaluated images (or ``images``), seed, device and
        state folder. ``desc`` labels a progress bar over the images when a method reads them."""
        dev, bs = self.runtime.torch_device, self.cfg.run.batch_size

        def run_images() -> Iterable[torch.Tensor]:
            batches = self.images.batches(bs)
            if desc:
                batches = progress_bar(batches, desc, enabled=progress)
            return (x.to(dev) for _, x, _ in batches)

        return Preparation(
            images or run_images, self.images.size, self.cfg.run.seed, self.runtime.device, self.state_dir
        )


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
