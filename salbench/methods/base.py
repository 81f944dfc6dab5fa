"""The one saliency-method protocol every method implements.

A method is built once per (model, configuration), prepared once per run (:meth:`SaliencyMethod.prepare`
with a :class:`Preparation`: RISE draws or reloads its masks, IBA estimates its feature statistics) and
then called on batches:
``method(images (N,C,H,W) normalised, targets (N,) long, generator) -> maps (N,H,W) float32``
at input resolution, finite, in [0, 1], with the normalisation stated in
:attr:`SaliencyMethod.normalisation`. :meth:`SaliencyMethod.__call__` checks the inputs and the maps of
every method in one place.

Modelled on captum's single ``attribute`` verb and torchcam's typed base class.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from salbench import rng
from salbench.config import build_dataclass
from salbench.errors import ConfigError, DataError, SalbenchError
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
        """(N,C,H,W) normalised -> pixels in [0, 1] (up to preprocessing clipping).

        Raises:
            ConfigError: ``mean``/``std`` do not have one value per image channel (a 3-value mean is
                never broadcast over a 1-channel image).
        """
        mean, std = self._stats(images)
        return images * std + mean

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N,C,H,W) pixels in [0, 1] -> normalised model input (same check as :meth:`denormalize`)."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def _stats(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1,C,1,1) mean and std on the images' device and dtype, one value per channel."""
        channels = images.shape[1] if images.ndim == 4 else -1
        if len(self.mean) != channels or len(self.std) != channels:
            raise ConfigError(
                f"method context: mean/std have {len(self.mean)}/{len(self.std)} values for images of "
                f"{channels} channels (shape {tuple(images.shape)})"
            )
        kw = {"device": images.device, "dtype": images.dtype}
        return torch.tensor(self.mean, **kw).view(1, -1, 1, 1), torch.tensor(self.std, **kw).view(1, -1, 1, 1)


@dataclasses.dataclass(frozen=True)
class Preparation:
    """What a method may use once per run, before it explains any image (:meth:`SaliencyMethod.prepare`).

    Attributes:
        images: returns a fresh iterable over every evaluated image, as normalised batches (N,C,H,W) on
            the run device (IBA's feature statistics are estimated over them).
        size: image size ``(H, W)``.
        seed: the run seed; run-level draws (RISE masks) use :meth:`generator`.
        device: where run-level tensors are drawn.
        state_dir: folder where run-level state is saved and reloaded (None: nothing saved).
        shared: run-level tensors already drawn, by file name, so that methods built for several
            models (sanity checks) share them without a state folder.
    """

    images: Callable[[], Iterable[torch.Tensor]]
    size: tuple[int, int]
    seed: int = 0
    device: str = "cpu"
    state_dir: Path | None = None
    shared: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def generator(self) -> torch.Generator:
        """A generator on :attr:`device` seeded with :attr:`seed` (the same draws on every call)."""
        return torch.Generator(device=self.device).manual_seed(self.seed)


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
        sampling: True when the map is computed from forward-only passes of perturbed or masked copies
            (RISE, LIME, Score-/Ablation-CAM); these passes (and only these) run in the pass precision
            a stage sets (:func:`salbench.scoped.autocast_passes`), every other method in float32.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    deterministic: ClassVar[bool] = True
    normalisation: ClassVar[str] = ""
    params_cls: ClassVar[type[MethodParams]] = MethodParams
    sampling: ClassVar[bool] = False

    @property
    def row_separable(self) -> bool:
        """True when an image's map depends only on the image, its target and its own generator (one
        per image, :mod:`salbench.rng`), not on the other images of the batch."""
        return True

    def __init__(self, model: nn.Module, context: MethodContext, params: MethodParams | None = None):
        self.model = model
        self.context = context
        self.params = params if params is not None else self.params_cls()

    def prepare(self, preparation: Preparation) -> None:
        """Compute what the method needs once per run, before explaining any image (default: nothing).

        RISE draws its masks (or reloads them from ``preparation.state_dir``); IBA estimates the feature
        mean/std at its layer over ``preparation.images()``. Every caller (generation, the sensitivity
        re-explanation, sanity checks, ROAR) prepares a method through this one call.
        """
        return None

    def check_applies(self, example: torch.Tensor) -> None:
        """Raise :class:`~salbench.errors.NotApplicableError` when this method cannot explain the model
        as configured, before any work (default: every method applies).

        Args:
            example: (1,C,H,W) normalised image of the run (layer-based methods run the model on it up
                to their target layer).
        """
        return None

    @property
    def store_id(self) -> str:
        """Id under which maps are stored (methods with variants, e.g. deprocessing, override it)."""
        return self.name

    @abc.abstractmethod
    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """Return maps (N,H,W) float32, finite, for normalised ``images`` (N,C,H,W) and ``targets`` (N,).

        Must not mutate ``images``, must remove every hook it registers and restore
        ``model.training`` even when it raises.
        """

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """:meth:`explain` with its inputs and outputs checked (shapes, target range, finite maps in [0, 1]).

        Raises:
            SalbenchError: bad images or targets (named), or maps that break the protocol.
        """
        check_inputs(images, targets, self.context.num_classes, self.store_id)
        maps = self.explain(images, targets, generator)
        check_maps(maps, images, self.store_id)
        return maps

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
    """Build a method's frozen params from a mapping, rejecting unknown keys and bad choices by name."""
    return build_dataclass(cls, values, f"method {method!r}")


def check_inputs(images: torch.Tensor, targets: torch.Tensor, num_classes: int, method: str) -> None:
    """Raise a one-line :class:`DataError` unless ``images`` (N,C,H,W) float and ``targets`` (N,)
    integer class indices in ``[0, num_classes)`` fit together."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"{method}: images must be a float tensor (N,C,H,W), got {got}")
    if not isinstance(targets, torch.Tensor) or targets.ndim != 1 or targets.is_floating_point():
        got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise DataError(f"{method}: targets must be an integer tensor (N,), got {got}")
    if targets.shape[0] != images.shape[0]:
        raise DataError(f"{method}: {images.shape[0]} images but {targets.shape[0]} targets")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        bad = int(targets.max()) if int(targets.max()) >= num_classes else int(targets.min())
        raise DataError(f"{method}: target class {bad} is out of range [0, {num_classes})")


def check_maps(maps: torch.Tensor, images: torch.Tensor, method: str) -> None:
    """Raise :class:`SalbenchError` unless ``maps`` are (N,H,W) float32, finite and in [0, 1]."""
    n, _, h, w = images.shape
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != (n, h, w) or maps.dtype != torch.float32:
        got = (tuple(maps.shape), maps.dtype) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise SalbenchError(f"{method}: maps must be float32 of shape {(n, h, w)}, got {got}")
    if maps.numel() and not bool(torch.isfinite(maps).all()):
        raise SalbenchError(f"{method}: {int((~torch.isfinite(maps)).sum())} map values are NaN or inf")
    if maps.numel() and (float(maps.min()) < 0.0 or float(maps.max()) > 1.0):
        raise SalbenchError(
            f"{method}: maps must lie in [0, 1], got values in [{float(maps.min())}, {float(maps.max())}]"
        )


METHODS: Registry[type[SaliencyMethod]] = Registry("method")
