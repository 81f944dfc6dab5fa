"""IBA: Information Bottleneck Attribution, per-sample bottleneck (Schulz et al., ICLR 2020).

"Restricting the flow: information bottlenecks for attribution". At a layer with features ``R``
(estimated mean ``mu_R`` and std ``sigma_R`` per feature over the evaluated images), the bottleneck
replaces ``R`` by ``Z = lambda * R + (1 - lambda) * eps``, ``eps ~ N(mu_R, sigma_R^2)`` (paper Eq. 2)
with ``lambda = sigmoid(alpha)`` per feature, spatially smoothed by a Gaussian (paper Sec. 3.2). The
capacity of each feature is ``KL(P(Z|R) || Q(Z))`` with ``Q(Z) = N(mu_R, sigma_R^2)`` (paper Eq. 4,
in nats; in standardised units ``mu = lambda * (R - mu_R) / sigma_R``, ``var = (1 - lambda)^2``)::

    L = CE(target) + beta * mean(capacity)            (paper Eq. 6)

``alpha`` (init 5) is optimised with Adam; the map is the capacity summed over channels, upsampled
bilinearly to the input, min-max normalised.

Details follow the authors' reference implementation (``IBA`` package, as used in the study):
``sigma_R`` is clamped below by ``min_std``; features that are non-zero on at most
``active_threshold`` of the fitted images are inactive (their ``Z`` and capacity are 0); the
Gaussian kernel has ``2 * round(2 * sigma) + 1`` taps with reflection padding; the map uses the
capacity of the last optimisation step's forward pass (before its Adam update).

The bottleneck sits at ``context.target_layer``, the CAM methods' layer, and works on the same
``(N, C, h, w)`` grid (:mod:`salbench.methods.spatial`): CNN feature maps as they are, Swin's
channels-last maps permuted, ViT/DeiT patch tokens on their patch grid. Deviation for token layers: only
the patch tokens pass the bottleneck; the class/distillation tokens are left as they are (they have no
position, and the paper's bottleneck is spatial), so on a ViT at ``blocks[-1].norm1`` the map shows which
patches the last attention needs (the residual stream around that layer is not restricted). A layer
whose output is no grid makes the method not applicable (:class:`~salbench.errors.NotApplicableError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from salbench import rng
from salbench.errors import ConfigError, SalbenchError
from salbench.methods.base import METHODS, MethodContext, MethodParams, Preparation, SaliencyMethod
from salbench.methods.spatial import check_grid, from_grid, layer_output, require_layer, to_grid
from salbench.models.layers import feature_layout
from salbench.saliency import minmax_per_image
from salbench.scoped import frozen_parameters, model_mode, removable_hooks


@dataclasses.dataclass(frozen=True)
class IbaParams(MethodParams):
    """IBA parameters (defaults: the paper's and the ``acml2024`` protocol's).

    Attributes:
        beta: weight of the information loss.
        steps: Adam steps per image.
        lr: Adam learning rate.
        n_noise: noise samples per step (the reference's ``batch_size``).
        init_alpha: initial ``alpha`` (``lambda = sigmoid(5) ~ 0.993``: almost all information).
        min_std: lower bound of the estimated feature std.
        sigma: std (in feature cells) of the Gaussian smoothing of ``lambda``; 0 disables it.
        active_threshold: features non-zero on a fraction <= this of the fitted images are inactive.
        max_batch: most rows (images x ``n_noise``) pushed through the model at once.
    """

    beta: float = 10.0
    steps: int = 10
    lr: float = 1.0
    n_noise: int = 10
    init_alpha: float = 5.0
    min_std: float = 0.01
    sigma: float = 1.0
    active_threshold: float = 0.01
    max_batch: int = 320

    def __post_init__(self) -> None:
        if self.steps < 1 or self.n_noise < 1 or self.max_batch < 1:
            raise ConfigError("iba: steps, n_noise and max_batch must be >= 1")
        if self.beta < 0 or self.lr <= 0 or self.min_std <= 0 or self.sigma < 0:
            raise ConfigError("iba: beta and sigma must be >= 0; lr and min_std must be > 0")


def _draw_seeds(generator: rng.Generators, n: int) -> list[int]:
    return rng.draw_seeds(generator, n, 2**62)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian (k, k) with ``k = 2 * round(2 * sigma) + 1`` (reference implementation)."""
    k = round(2 * sigma) * 2 + 1
    x = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return (g / g.sum()).float()


def smooth(lam: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian smoothing of (N,C,h,w) with reflection padding (replicate if the map is smaller)."""
    if sigma <= 0:
        return lam
    ker = gaussian_kernel(sigma).to(lam)
    pad = ker.shape[0] // 2
    mode = "reflect" if pad < min(lam.shape[-2:]) else "replicate"
    C = lam.shape[1]
    weight = ker.expand(C, 1, *ker.shape)
    return F.conv2d(F.pad(lam, (pad, pad, pad, pad), mode=mode), weight, groups=C)


def capacity(r: torch.Tensor, lam: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-feature KL(N(lam * r', (1 - lam)^2) || N(0, 1)) in nats, r' = (r - mean) / std (paper Eq. 4).

    ``1 - lam`` is clamped at 1e-7 (float32 resolution below 1) so that a saturated sigmoid gives a
    large finite capacity instead of the reference implementation's ``inf``.
    """
    mu = (r - mean) / std * lam
    var = (1 - lam).clamp_min(1e-7) ** 2
    return -0.5 * (1 + torch.log(var) - mu**2 - var)


@METHODS.register("iba")
class Iba(SaliencyMethod):
    """Per-sample Information Bottleneck Attribution at ``context.target_layer``.

    Call :meth:`fit` with the evaluated images first. A batch is optimised at once: the loss is the
    sum of the per-image losses, and each image has its own ``alpha``, so every ``alpha`` only gets its
    own image's gradient and Adam, being element-wise, takes exactly the steps an independent
    optimisation would. Noise: one seed per image is drawn in order from the generator, so a batch
    equals its images explained one at a time with the same generator.
    """

    name: ClassVar[str] = "iba"
    family: ClassVar[str] = "Learning"
    deterministic: ClassVar[bool] = False
    normalisation: ClassVar[str] = "capacity summed over channels, bilinear upsampling, min-max"
    params_cls: ClassVar[type[MethodParams]] = IbaParams

    def __init__(self, model: nn.Module, context: MethodContext, params: MethodParams | None = None) -> None:
        super().__init__(model, context, params)
        self.layer = require_layer(self.name, model, context.target_layer)
        self.layout = feature_layout(model, self.layer)
        self.feature_mean: torch.Tensor | None = None
        self.feature_std: torch.Tensor | None = None
        self.active: torch.Tensor | None = None
        self.n_fitted = 0

    def check_applies(self, example: torch.Tensor) -> None:
        """:class:`NotApplicableError` unless the target layer outputs a grid for ``example``."""
        check_grid(self.name, self.model, self.layer, example)

    def prepare(self, preparation: Preparation) -> None:
        """Estimate the feature statistics over every evaluated image (:meth:`fit`)."""
        self.fit(preparation.images())

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Estimate per-feature (C,h,w) mean, std (unbiased) and activity over all images of ``batches``.

        Features are the target layer's output as a grid (:func:`~salbench.methods.spatial.to_grid`).
        Streaming: batch moments are merged with Chan et al.'s parallel update in float64.

        Raises:
            NotApplicableError: the target layer's output is no grid.
        """
        p: IbaParams = self.params  # type: ignore[assignment]
        n, mean, m2, nonzero = 0, None, None, None
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            out = layer_output(self.model, self.layer, images)
            x = to_grid(self.name, self.model, self.layer, out, tuple(images.shape[-2:])).double()
            b, bmean = x.shape[0], x.mean(0)
            bm2 = ((x - bmean) ** 2).sum(0)
            if mean is None:
                mean, m2, nonzero = bmean, bm2, (x != 0).sum(0)
            else:
                delta = bmean - mean
                mean = mean + delta * b / (n + b)
                m2 = m2 + bm2 + delta**2 * n * b / (n + b)
                nonzero = nonzero + (x != 0).sum(0)
            n += b
        if n < 2:
            raise SalbenchError(f"iba: fit needs at least 2 images, got {n}")
        self.feature_mean = mean.float()
        self.feature_std = (m2 / (n - 1)).sqrt().float()
        self.active = nonzero.double() / n > p.active_threshold
        self.n_fitted = n

    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """IBA maps (N,H,W) float32 in [0, 1] for normalised ``images`` (N,C,H,W), ``targets`` (N,)."""
        if self.feature_mean is None:
            raise SalbenchError("iba: call fit() on the evaluated images before explain()")
        p: IbaParams = self.params  # type: ignore[assignment]
        seeds = _draw_seeds(generator, images.shape[0])
        per_chunk = max(1, p.max_batch // p.n_noise)
        targets = targets.to(images.device).long()
        caps = []
        with model_mode(self.model, False), frozen_parameters(self.model), torch.enable_grad():
            for s in range(0, images.shape[0], per_chunk):
                sl = slice(s, s + per_chunk)
                caps.append(self._optimise(images[sl], targets[sl], seeds[sl]))
        cap = torch.cat(caps).sum(1, keepdim=True)  # (N,1,h,w), nats summed over channels
        sal = F.interpolate(cap, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return minmax_per_image(sal)

    def _optimise(self, images: torch.Tensor, targets: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Optimise ``alpha`` for a chunk of images; return the last step's capacity (B,C,h,w)."""
        p: IbaParams = self.params  # type: ignore[assignment]
        B, K = images.shape[0], p.n_noise
        dev = images.device
        mean, std = self.feature_mean.to(dev), self.feature_std.to(dev).clamp_min(p.min_std)  # type: ignore[union-attr]
        active = self.active.to(dev).float()  # type: ignore[union-attr]
        gens = [torch.Generator(device=dev).manual_seed(s) for s in seeds]
        alpha = torch.full((B, *mean.shape), p.init_alpha, device=dev, requires_grad=True)
        optimizer = torch.optim.Adam([alpha], lr=p.lr)
        state: dict[str, torch.Tensor] = {}
        size = tuple(images.shape[-2:])

        def bottleneck(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
            r = to_grid(self.name, self.model, self.layer, out, size)  # (B*K,C,h,w)
            if r.shape[1:] != mean.shape:
                raise SalbenchError(
                    f"iba: layer output {tuple(r.shape[1:])} differs from fit {tuple(mean.shape)}"
                )
            lam = smooth(torch.sigmoid(alpha), p.sigma)  # (B,C,h,w)
            cap = capacity(r[::K], lam, mean, std) * active
            state["capacity"] = cap
            noise = torch.cat([torch.randn((K, *mean.shape), generator=g, device=dev) for g in gens])
            lam_k = lam.repeat_interleave(K, dim=0)
            z = lam_k * r + (1 - lam_k) * (std * noise + mean)
            return from_grid(z * active, out, self.layout)

        expanded = images.repeat_interleave(K, dim=0)
        with removable_hooks() as handles:
            handles.append(self.layer.register_forward_hook(bottleneck))
            for _ in range(p.steps):
                optimizer.zero_grad()
                logits = self.model(expanded).float()
                ce = (
                    F.cross_entropy(logits, targets.repeat_interleave(K), reduction="none").view(B, K).mean(1)
                )
                info = state["capacity"].flatten(1).mean(1)
                (ce + p.beta * info).sum().backward()
                optimizer.step()
        return state["capacity"].detach()
