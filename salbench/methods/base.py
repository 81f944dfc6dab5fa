"""The one saliency-method protocol every method implements.

A method is built once per (model, configuration) and then called on batches:
``method(images (N,C,H,W) normalised, targets (N,) long, generator) -> maps (N,H,W) float32``
at input resolution, finite, with the normalisation stated in :attr:`SaliencyMethod.normalisation`.

Modelled on captum's single ``attribute`` verb and torchcam's typed base class.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from salbench.errors import ConfigError
from salbench.registry import Registry


@dataclasses.dataclass(frozen=True)
class MethodContext:
    """What a method may need besides the model: fixed per run.

    Attributes:
        target_layer: the layer CAM/IBA methods read (``layer4[-1]`` for ResNets, ``features[-1]``
            for VGGs), resolved once by :func:`salbench.models.layers.resolve_target_layer`.
        mean: per-channel normalisation mean (images are ``(pixels - mean) / std``).
        std: per-channel normalisation std.
        num_classes: number of model outputs.
    """

    target_layer: nn.Module | None = None
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    num_classes: int = 1000

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N,C,H,W) normalised -> pixels in [0, 1] (up to preprocessing clipping)."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        return images * std + mean

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N,C,H,W) pixels in [0, 1] -> normalised model input."""
        mean = torch.tensor(self.mean, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        return (pixels - mean) / std


@dataclasses.dataclass(frozen=True)
class MethodParams:
    """Base of every method's frozen parameter dataclass (empty for parameter-free methods)."""


class SaliencyMethod(abc.ABC):
    """Base class: subclasses set the class constants and implement :meth:`explain`.

    Class constants:
        name: registry id (lower_snake, stable).
        family: table group: ``Uninformed``, ``Gradient``, ``CAM``, ``Occlusion``, ``Learning``, ``Control``.
        deterministic: True when the same inputs give the same map without a generator.
        normalisation: how raw attributions become the stored map (channel reduction, abs,
            upsampling, min-max), recorded in every manifest.
        params_cls: the frozen dataclass of this method's parameters.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    deterministic: ClassVar[bool] = True
    normalisation: ClassVar[str] = ""
    params_cls: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, model: nn.Module, context: MethodContext, params: MethodParams | None = None):
        self.model = model
        self.context = context
        self.params = params if params is not None else self.params_cls()

    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Estimate whatever the method needs from the evaluated images before explaining them.

        Called once per run with an iterable of normalised image batches (N,C,H,W). Default: nothing.
        IBA overrides it to estimate the feature mean/std at its layer.
        """
        return None

    @property
    def store_id(self) -> str:
        """Id under which maps are stored (methods with variants, e.g. deprocessing, override it)."""
        return self.name

    @abc.abstractmethod
    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Return maps (N,H,W) float32, finite, for normalised ``images`` (N,C,H,W) and ``targets`` (N,).

        Must not mutate ``images``, must remove every hook it registers and restore
        ``model.training`` even when it raises.
        """

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.explain(images, targets, generator)

    def describe(self) -> dict[str, Any]:
        """Metadata recorded in manifests."""
        return {
            "method": self.store_id,
            "name": self.name,
            "family": self.family,
            "deterministic": self.deterministic,
            "normalisation": self.normalisation,
            "params": dataclasses.asdict(self.params),
        }


def build_params(cls: type[MethodParams], values: Mapping[str, Any], method: str) -> MethodParams:
    """Build a method's frozen params from a mapping, rejecting unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        allowed = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"unknown parameter {unknown[0]!r} for method {method!r}; allowed: {allowed}")
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            out[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**out)


METHODS: Registry[type[SaliencyMethod]] = Registry("method")
