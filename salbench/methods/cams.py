"""CAM-family saliency methods, wrapping pytorch-grad-cam 1.5.7 (``pytorch_grad_cam``).

Every method reads ``context.target_layer`` (``layer4[-1]`` for ResNets, ``features[-1]`` for VGGs; the
rules per architecture live in :mod:`salbench.models.layers`) and explains the target class **logit**
through :class:`ClassifierOutputTarget`. Transformer layers reach the library as a ``(N, C, h, w)`` grid
through its ``reshape_transform`` (:meth:`salbench.models.layers.FeatureLayout.to_grid`: ViT/DeiT tokens
without the class/distillation tokens, Swin's channels-last maps permuted), for every method; a missing
layer or one whose output has no spatial grid gives a one-line :class:`~salbench.errors.NotApplicableError`
naming the method and the architecture (:mod:`salbench.methods.spatial`), which generation records.
Ablation-CAM ablates channels of such layers as the library's ``AblationLayerVit`` does.

What the library does, and therefore what is not done again here (``BaseCAM.forward`` ->
``compute_cam_per_layer`` -> ``aggregate_multi_layers``):

- the CAM at feature resolution goes through ``max(cam, 0)``, per-image min-max ``(cam - min) /
  (max + 1e-7)`` and ``cv2.resize`` (bilinear, half-pixel centres) to the input size; after the mean over
  target layers, ``max(., 0)`` and the same min-max again. A constant CAM therefore comes out as zeros;
  the maximum is ``1 - O(1e-7)`` rather than exactly 1.
- ``BaseCAM.__init__`` calls ``model.eval()`` and registers two forward hooks on the target layer; its
  ``forward`` calls ``model.zero_grad()`` (parameter ``.grad`` set to None) and, for the gradient-based
  CAMs, ``backward`` on the summed target logits. It does not modify the input tensor.
- ``AblationCAM`` swaps the target layer for an ``AblationLayer`` inside the model while it runs and
  swaps it back only on success; its default ``AblationLayer`` instance is shared by every AblationCAM
  object. ``ScoreCAM`` reads an optional ``batch_size`` attribute (default 16). Both print ``tqdm``
  progress bars on stderr.
- ``BaseCAM.__exit__`` swallows ``IndexError`` (printing it), so the ``with`` form is not used here.

The wrappers below build a fresh library object per call inside :func:`model_mode` (eval) and
:func:`frozen_parameters`, give the library a copy of the input (made to require grad for the
gradient-based CAMs, so the target-layer output has a graph although the parameters are frozen), restore
the parameters' ``.grad``, call ``release()`` (hook removal) and undo the ablation layer swap in a
``finally`` block, and turn any non-finite map (e.g. AblationCAM dividing by a zero logit) into zeros.
Runs on whatever device the model is on; nothing assumes CUDA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import (
    AblationCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from salbench import rng
from salbench.errors import ConfigError, DataError, NotApplicableError
from salbench.methods.base import METHODS, MethodContext, MethodParams, SaliencyMethod
from salbench.methods.gradients import check_batch
from salbench.methods.spatial import check_grid, layer_name, require_layer
from salbench.models.layers import FeatureLayout, architecture_name, feature_layout
from salbench.scoped import autocast_passes, frozen_parameters, model_mode

logger = logging.getLogger(__name__)

_NORMALISATION = (
    "pytorch-grad-cam: ReLU, per-image min-max (eps 1e-7) at feature resolution, bilinear cv2.resize to "
    "input size, ReLU + per-image min-max (eps 1e-7) again; non-finite maps set to 0"
)

Reshape = Callable[[torch.Tensor], torch.Tensor]
"""pytorch-grad-cam's ``reshape_transform``: a target layer's output (or its gradient) -> (N,C,h,w)."""


class _CheckedTarget(ClassifierOutputTarget):
    """:class:`ClassifierOutputTarget` (the target logit) that names an out-of-range class index."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        if self.category >= model_output.shape[-1]:
            raise DataError(
                f"targets: class index {self.category} out of range for {model_output.shape[-1]} logits"
            )
        return super().__call__(model_output)


class _ScoreCAM(ScoreCAM):
    """ScoreCAM whose masked-input batch size is a constructor argument, and whose weights are computed
    on the device without the library's per-copy ``.cpu().item()`` (a host synchronisation per masked
    copy: 3.2x the bare passes on a GPU) and without holding all K masked copies of an image at once.

    Same arithmetic as ``ScoreCAM.get_cam_weights``: each activation map upsampled bilinearly
    (``align_corners=True``, as ``UpsamplingBilinear2d``), min-max normalised (eps 1e-8), multiplied
    into the image; the target logit of every copy, in the same passes of ``batch_size`` copies of one
    image, gathered as float32 and softmax-ed over the K channels (tested equal to the library's)."""

    def __init__(
        self, model: nn.Module, target_layers: list[nn.Module], reshape: Reshape, batch_size: int
    ) -> None:
        super().__init__(model, target_layers, reshape_transform=reshape)
        self.batch_size = batch_size

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        with torch.no_grad():
            acts = torch.from_numpy(activations).to(input_tensor.device)
            up = F.interpolate(acts, size=input_tensor.shape[-2:], mode="bilinear", align_corners=True)
            flat = up.flatten(2)
            lo, hi = flat.min(dim=-1)[0][..., None, None], flat.max(dim=-1)[0][..., None, None]
            up = (up - lo) / (hi - lo + 1e-8)
            B, K = up.shape[:2]
            scores = torch.empty((B, K), dtype=torch.float32, device=input_tensor.device)
            with autocast_passes(input_tensor.device):
                for b, target in enumerate(targets):
                    for i in range(0, K, self.batch_size):
                        copies = input_tensor[b, None] * up[b, i : i + self.batch_size, None]
                        scores[b, i : i + len(copies)] = target(self.model(copies)).float()
            return torch.softmax(scores, dim=-1).cpu().numpy()


class _AblationCAM(AblationCAM):
    """AblationCAM whose ablated copies' passes run in the pass precision (activations in float32)."""

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        with autocast_passes(input_tensor.device):
            return super().get_cam_weights(input_tensor, target_layer, targets, activations, grads)


class _LayoutAblationLayer(AblationLayerVit):
    """Ablates channel ``k`` of a ``(N, C, h, w)`` output as :class:`AblationLayer` does, and of a token
    ``(N, T, C)`` or channels-last ``(N, h, w, C)`` output as :class:`AblationLayerVit` does (channels
    moved to dim 1 and back; the prefix tokens are ablated with the patches)."""

    def __init__(self, layout: FeatureLayout) -> None:
        super().__init__()
        self.layout = layout

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations.ndim == 4 and not self.layout.channels_last:
            return AblationLayer.__call__(self, x)
        return super().__call__(x)


@contextlib.contextmanager
def _preserved_grads(model: nn.Module) -> Iterator[None]:
    """Keep each parameter's ``.grad`` across the library's ``model.zero_grad()``."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, grad in saved:
            p.grad = grad


def finite_maps(maps: torch.Tensor, method: str) -> torch.Tensor:
    """Replace every map (N,H,W) that holds a NaN/inf by zeros (logged), clip to [0, 1], float32."""
    maps = maps.float()
    bad = ~torch.isfinite(maps).flatten(1).all(dim=1)
    if bool(bad.any()):
        logger.warning("%s: %d of %d maps were not finite; set to 0", method, int(bad.sum()), len(maps))
        maps = torch.where(bad.view(-1, 1, 1), torch.zeros_like(maps), maps)
    return maps.clamp(0.0, 1.0)


class LibraryCAM(SaliencyMethod):
    """Base of the pytorch-grad-cam wrappers: subclasses set ``cam_cls`` (and may override :meth:`_build`)."""

    family: ClassVar[str] = "CAM"
    deterministic: ClassVar[bool] = True
    normalisation: ClassVar[str] = _NORMALISATION
    cam_cls: ClassVar[type[BaseCAM]]

    def _build(self, layer: nn.Module, reshape: Reshape, layout: FeatureLayout) -> BaseCAM:
        return self.cam_cls(model=self.model, target_layers=[layer], reshape_transform=reshape)

    def _undo(self, cam: BaseCAM, layer: nn.Module) -> None:
        """Undo any change the library makes to the model's structure (after success or error)."""

    def check_applies(self, example: torch.Tensor) -> None:
        """:class:`NotApplicableError` unless the target layer exists and outputs a grid for ``example``."""
        check_grid(self.name, self.model, self.context.target_layer, example)

    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """Maps (N,H,W) float32 in [0, 1] at the input resolution; ``generator`` is unused."""
        check_batch(images, targets)
        layer = require_layer(self.name, self.model, self.context.target_layer)
        if len(images) == 0:
            return images.new_zeros((0, *images.shape[2:]), dtype=torch.float32)
        layout = feature_layout(self.model, layer)
        # every CAM weights and upsamples a (N,C,h,w) grid: tokens and channels-last outputs are reshaped
        reshape = functools.partial(layout.to_grid, size=tuple(images.shape[-2:]))
        x = images.detach().clone()
        cam_targets = [_CheckedTarget(int(t)) for t in targets]
        with (
            model_mode(self.model, False),
            frozen_parameters(self.model),
            _preserved_grads(self.model),
            torch.enable_grad(),
        ):
            cam = self._build(layer, reshape, layout)
            try:
                if cam.uses_gradients:
                    x.requires_grad_(True)
                maps = cam(input_tensor=x, targets=cam_targets)
            except ConfigError as exc:  # raised by the reshape: the layer has no spatial grid
                raise NotApplicableError(
                    f"{self.name} does not apply to {architecture_name(self.model)} at target layer "
                    f"{layer_name(self.model, layer)}: {exc}"
                ) from None
            finally:
                cam.activations_and_grads.release()
                self._undo(cam, layer)
        out = torch.from_numpy(np.asarray(maps, dtype=np.float32)).to(images.device)
        return finite_maps(out, self.name)


@METHODS.register("gradcam")
class GradCAMMethod(LibraryCAM):
    """Grad-CAM (Selvaraju et al., 2017, eq. 1-2): ``alpha_k = mean_ij d y_c / d A^k_ij``,
    ``L = ReLU(sum_k alpha_k A^k)``, with ``y_c`` the target logit."""

    name: ClassVar[str] = "gradcam"
    cam_cls: ClassVar[type[BaseCAM]] = GradCAM


@METHODS.register("gradcampp")
class GradCAMPlusPlusMethod(LibraryCAM):
    """Grad-CAM++ (Chattopadhay et al., 2018, eq. 19 and 7): ``alpha^kc_ij = g^2 / (2 g^2 + sum_ab A^k_ab
    g^3)``, ``w_k = sum_ij alpha^kc_ij ReLU(g_ij)``. Deviation (library): ``g`` is the gradient of the
    logit, its powers standing in for the derivatives of ``exp(y_c)``, with 1e-6 added to the denominator
    and ``alpha`` zeroed where ``g == 0``."""

    name: ClassVar[str] = "gradcampp"
    cam_cls: ClassVar[type[BaseCAM]] = GradCAMPlusPlus


@METHODS.register("xgradcam")
class XGradCAMMethod(LibraryCAM):
    """XGrad-CAM (Fu et al., 2020, eq. 11):
    ``w_k = sum_ij (A^k_ij / (sum_ab A^k_ab + 1e-7)) d y_c / d A^k_ij``."""

    name: ClassVar[str] = "xgradcam"
    cam_cls: ClassVar[type[BaseCAM]] = XGradCAM


@METHODS.register("layercam")
class LayerCAMMethod(LibraryCAM):
    """LayerCAM (Jiang et al., 2021, eq. 5-6): ``L = ReLU(sum_k ReLU(d y_c / d A^k) * A^k)`` pixel-wise."""

    name: ClassVar[str] = "layercam"
    cam_cls: ClassVar[type[BaseCAM]] = LayerCAM


@METHODS.register("eigengradcam")
class EigenGradCAMMethod(LibraryCAM):
    """EigenGrad-CAM: Eigen-CAM (Muhammad & Yeasin, 2020, eq. 2-3) applied to ``A * d y_c / d A``: the
    projection of the centred ``(HW, K)`` matrix on its first right singular vector. The SVD sign is
    arbitrary (library behaviour); the ReLU then keeps the positive side."""

    name: ClassVar[str] = "eigengradcam"
    cam_cls: ClassVar[type[BaseCAM]] = EigenGradCAM


@dataclasses.dataclass(frozen=True)
class ScoreCAMParams(MethodParams):
    """Score-CAM: ``batch_size`` masked copies of an image per forward pass (library default 16)."""

    batch_size: int = 16


@METHODS.register("scorecam")
class ScoreCAMMethod(LibraryCAM):
    """Score-CAM (Wang et al., 2020, eq. 5-8): each activation map ``A^k``, bilinearly upsampled and
    min-max normalised (eps 1e-8), masks the input; ``w = softmax_k(y_c(X * H^k))``. Deviation (library):
    the score is the target logit of the masked input, without subtracting a baseline score."""

    name: ClassVar[str] = "scorecam"
    sampling: ClassVar[bool] = True
    params_cls: ClassVar[type[MethodParams]] = ScoreCAMParams

    def __init__(self, model: nn.Module, context: MethodContext, params: MethodParams | None = None):
        super().__init__(model, context, params)
        if self.params.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 for scorecam, got {self.params.batch_size}")

    def _build(self, layer: nn.Module, reshape: Reshape, layout: FeatureLayout) -> BaseCAM:
        return _ScoreCAM(self.model, [layer], reshape, batch_size=self.params.batch_size)


@dataclasses.dataclass(frozen=True)
class AblationCAMParams(MethodParams):
    """Ablation-CAM: ``batch_size`` ablated copies per forward pass (library default 32) and the
    library's experimental ``ratio_channels_to_ablate`` (1.0 = every channel, as in the paper)."""

    batch_size: int = 32
    ratio_channels_to_ablate: float = 1.0


@METHODS.register("ablationcam")
class AblationCAMMethod(LibraryCAM):
    """Ablation-CAM (Desai & Ramaswamy, 2020, eq. 3): ``w_k = (y_c - y_c^k) / y_c`` where ``y_c^k`` is the
    target logit with channel ``k`` of the target layer ablated. Deviation (library): when the layer's
    minimum activation is not 0 the channel is set to ``min - 1e7`` instead of 0; ``y_c = 0`` gives a
    non-finite map, returned as zeros."""

    name: ClassVar[str] = "ablationcam"
    sampling: ClassVar[bool] = True
    params_cls: ClassVar[type[MethodParams]] = AblationCAMParams

    def __init__(self, model: nn.Module, context: MethodContext, params: MethodParams | None = None):
        super().__init__(model, context, params)
        if self.params.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 for ablationcam, got {self.params.batch_size}")
        if not 0.0 < self.params.ratio_channels_to_ablate <= 1.0:
            raise ConfigError(
                f"ratio_channels_to_ablate must be in (0, 1], got {self.params.ratio_channels_to_ablate}"
            )

    def _build(self, layer: nn.Module, reshape: Reshape, layout: FeatureLayout) -> BaseCAM:
        return _AblationCAM(
            self.model,
            [layer],
            reshape_transform=reshape,
            # fresh: the library's default instance is shared and stateful
            ablation_layer=_LayoutAblationLayer(layout),
            batch_size=self.params.batch_size,
            ratio_channels_to_ablate=self.params.ratio_channels_to_ablate,
        )

    def _undo(self, cam: BaseCAM, layer: nn.Module) -> None:
        # No-op after success (the library swapped back already); restores the model after an error.
        replace_layer_recursive(self.model, cam.ablation_layer, layer)
