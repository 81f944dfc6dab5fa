"""LIME on quickshift superpixels (Ribeiro, Singh and Guestrin, KDD 2016), batched over images.

For each image, superpixels are the interpretable features; ``n_samples`` binary vectors ``z`` switch
superpixels on (original pixels) or off (a hide colour); the model scores every perturbed image and a
weighted sparse linear model ``g(z) = w . z + b`` is fitted with sample weights ``pi(z)`` (paper
Eq. 1-2: locally weighted loss, exponential kernel ``pi = exp(-D^2 / (2 width^2))``; the ``lime``
package writes it as ``sqrt(exp(-D^2 / width^2))``, the same function).

All perturbed images of all images in a batch go through the model together (chunks of ``max_batch``
rows); the surrogate fits are per image (scikit-learn).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from skimage.segmentation import quickshift
from sklearn.linear_model import Lasso, Ridge
from sklearn.metrics import pairwise_distances
from torch import nn

from salbench import rng
from salbench.errors import ConfigError
from salbench.methods.base import METHODS, MethodContext, MethodParams, SaliencyMethod
from salbench.saliency import minmax_per_image
from salbench.scaling import scaled_length
from salbench.scoped import autocast_passes, model_mode

DISTANCES = ("input_euclidean", "binary_cosine", "binary_euclidean")
HIDES = ("zero", "superpixel_mean")
REGRESSORS = ("lasso", "ridge")
SEGMENT_SPACES = ("pixels", "normalised")
SCORES = ("logits", "probs")


def _choice(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ConfigError(f"lime: {name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class LimeParams(MethodParams):
    """LIME parameters; defaults are the ``acml2024`` protocol (captum's ``Lime`` as the study called it).

    The ``lime`` package's own image defaults (the ``reference`` protocol) are ``n_samples=1000``,
    ``regressor="ridge"``, ``alpha=1.0``, ``kernel_width=0.25``, ``distance="binary_cosine"``,
    ``hide="superpixel_mean"``, ``include_original=True``, ``score="probs"``.

    Attributes:
        n_samples: perturbed samples per image.
        alpha: regularisation of the surrogate (``Lasso(alpha)`` or ``Ridge(alpha)``).
        regressor: ``"lasso"`` or ``"ridge"`` (fit_intercept, sample-weighted, all superpixels).
        kernel_width: width of the exponential kernel on the distance.
        distance: ``"input_euclidean"``: L2 distance between the normalised image and its perturbed
            version (captum's ``get_exp_kernel_similarity_function("euclidean")``);
            ``"binary_cosine"`` / ``"binary_euclidean"``: distance of ``z`` to the all-ones vector
            (the ``lime`` package, whose default metric is cosine).
        hide: value of switched-off superpixels: ``"zero"`` in normalised space (captum's default
            baseline, the dataset mean colour) or ``"superpixel_mean"`` (``lime``'s ``hide_color=None``).
        include_original: force the first sample to all-ones (``lime`` does; captum does not).
        score: model output regressed: target ``"logits"`` (captum on the raw model) or ``"probs"``.
        kernel_size, max_dist, ratio: ``skimage.segmentation.quickshift`` parameters; the two lengths
            are pixels at inputs of 112 pixels and more, scaled below (:meth:`Lime.segment`).
        segment_on: segment the de-normalised ``"pixels"`` (clipped to [0, 1]) or the
            ``"normalised"`` tensor (what the study's code passed to quickshift).
        segment_seed: seed of quickshift's tie-breaking noise, the same for every image (42, scikit-image's
            default when quickshift is called without one): the superpixels are a function of the image
            alone, so they are computed once per image and shared by every target, label set and
            sanity-check model (:func:`cached_segments`).
        max_batch: most perturbed images pushed through the model at once.
    """

    n_samples: int = 40
    alpha: float = 0.08
    regressor: str = "lasso"
    kernel_width: float = 1000.0
    distance: str = "input_euclidean"
    hide: str = "zero"
    include_original: bool = False
    score: str = "logits"
    kernel_size: float = 4.0
    max_dist: float = 200.0
    ratio: float = 0.2
    segment_on: str = "pixels"
    segment_seed: int = 42
    max_batch: int = 256

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            raise ConfigError(f"lime: n_samples must be >= 2, got {self.n_samples}")
        if self.alpha < 0 or self.kernel_width <= 0:
            raise ConfigError("lime: alpha must be >= 0 and kernel_width > 0")
        if self.max_batch < 1:
            raise ConfigError(f"lime: max_batch must be >= 1, got {self.max_batch}")
        _choice(self.distance, DISTANCES, "distance")
        _choice(self.hide, HIDES, "hide")
        _choice(self.regressor, REGRESSORS, "regressor")
        _choice(self.segment_on, SEGMENT_SPACES, "segment_on")
        _choice(self.score, SCORES, "score")


def draw_seeds(generator: rng.Generators, n: int) -> list[int]:
    """``n`` integer seeds in [0, 2^31): one per image from per-image generators, else drawn in order
    from ``generator`` (torch's global RNG if None)."""
    return rng.draw_seeds(generator, n, 2**31 - 1)


def quickshift_segments(
    image: np.ndarray, kernel_size: float, max_dist: float, ratio: float, seed: int
) -> np.ndarray:
    """Quickshift superpixels of one image (H,W,C) -> (H,W) int64 labels ``0..K-1`` (contiguous).

    Three-channel images are converted to Lab by quickshift; other channel counts are segmented
    on their raw values.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    seg = quickshift(
        img, ratio=ratio, kernel_size=kernel_size, max_dist=max_dist, convert2lab=img.shape[-1] == 3, rng=seed
    )
    return np.unique(seg, return_inverse=True)[1].reshape(seg.shape).astype(np.int64)


SEGMENT_CACHE_SIZE = 4096
"""Superpixel maps kept per process (~100 KB each at 112x112): see :func:`cached_segments`."""
_SEGMENTS: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()


def cached_segments(
    image: np.ndarray, kernel_size: float, max_dist: float, ratio: float, seed: int
) -> np.ndarray:
    """:func:`quickshift_segments`, computed once per process for the same image bytes, parameters and
    seed: every target of an image (label sets, sanity-check models) sees the same image and
    ``segment_seed`` again (the segmentation depends on neither the model nor the target)."""
    key = (
        hashlib.blake2b(image.tobytes(), digest_size=16).digest(),
        image.shape,
        kernel_size,
        max_dist,
        ratio,
        seed,
    )
    if key in _SEGMENTS:
        _SEGMENTS.move_to_end(key)
        return _SEGMENTS[key].copy()  # the kept map stays as computed whatever a caller does
    seg = quickshift_segments(image, kernel_size, max_dist, ratio, seed)
    _SEGMENTS[key] = seg.copy()
    if len(_SEGMENTS) > SEGMENT_CACHE_SIZE:
        _SEGMENTS.popitem(last=False)
    return seg


def sample_states(n_samples: int, n_features: int, seed: int, include_original: bool) -> np.ndarray:
    """Binary perturbation vectors as the ``lime`` package draws them: (n_samples, n_features) int64.

    ``RandomState(seed).randint(0, 2, n_samples * n_features)`` reshaped row-major, first row all
    ones when ``include_original``; equal to ``LimeImageExplainer(random_state=seed)``'s samples.
    """
    data = np.random.RandomState(seed).randint(0, 2, n_samples * n_features).reshape(n_samples, n_features)
    if include_original:
        data[0, :] = 1
    return data.astype(np.int64)


def kernel_weights(distances: np.ndarray, width: float) -> np.ndarray:
    """Exponential kernel ``exp(-d^2 / (2 width^2))`` (= lime's ``sqrt(exp(-d^2 / width^2))``)."""
    return np.exp(-(np.asarray(distances, dtype=np.float64) ** 2) / (2.0 * width**2))


def fit_surrogate(
    states: np.ndarray, scores: np.ndarray, weights: np.ndarray, regressor: str, alpha: float
) -> np.ndarray:
    """Weighted linear surrogate over all superpixels: (S,K), (S,), (S,) -> coefficients (K,) float64."""
    cls = Lasso if regressor == "lasso" else Ridge
    model = cls(alpha=alpha, fit_intercept=True)
    model.fit(states, np.asarray(scores, dtype=np.float64), sample_weight=weights)
    return np.asarray(model.coef_, dtype=np.float64).reshape(-1)


def _hide_images(images: torch.Tensor, segs: torch.Tensor, kmax: int, mode: str) -> torch.Tensor:
    """Hide colour per image (N,C,H,W): zeros, or each superpixel's mean colour (float64 means)."""
    if mode == "zero":
        return torch.zeros_like(images)
    N, C = images.shape[:2]
    flat = images.reshape(N, C, -1).double()
    idx = segs.reshape(N, 1, -1).expand(N, C, -1)
    sums = torch.zeros(N, C, kmax, dtype=torch.float64, device=images.device).scatter_add_(2, idx, flat)
    counts = torch.zeros(N, 1, kmax, dtype=torch.float64, device=images.device)
    counts.scatter_add_(2, segs.reshape(N, 1, -1), torch.ones_like(flat[:, :1]))
    means = sums / counts.clamp_min(1)
    return means.gather(2, idx).reshape(images.shape).to(images.dtype)


@METHODS.register("lime")
class Lime(SaliencyMethod):
    """LIME saliency: superpixel coefficients of the weighted linear surrogate, per pixel.

    Map: the coefficient ``w_k`` of each pixel's superpixel, broadcast over the C channels as captum's
    ``Lime(return_input_shape=True)`` returns it, L2 norm over channels (``sqrt(C) * |w_k|``, what the
    study's code computed from that 3-channel attribution), then per-map min-max: the map is the
    min-max of ``|w_k|``, so positive and negative evidence both show as salient.

    Randomness: quickshift's tie-breaking is seeded with ``segment_seed`` (superpixels depend on the
    image only); one sampling seed per image is drawn in order from the generator and seeds a
    ``numpy.random.RandomState`` for the samples, as the ``lime`` package does. A batch therefore equals
    the same images explained one at a time with the same generator.
    """

    name: ClassVar[str] = "lime"
    sampling: ClassVar[bool] = True
    family: ClassVar[str] = "Occlusion"
    deterministic: ClassVar[bool] = False
    normalisation: ClassVar[str] = "superpixel coefficient broadcast over channels, L2 over channels, min-max"
    params_cls: ClassVar[type[MethodParams]] = LimeParams

    def __init__(self, model: nn.Module, context: MethodContext, params: MethodParams | None = None) -> None:
        super().__init__(model, context, params)

    def segment(self, images: torch.Tensor, seeds: Sequence[int]) -> list[np.ndarray]:
        """Quickshift superpixels of normalised ``images`` (N,C,H,W) -> N label maps (H,W) int64.

        ``kernel_size`` and ``max_dist`` are used as given on inputs of 112 pixels and more, scaled by
        ``min(H, W) / 112`` below (``kernel_size`` at least 1, quickshift's minimum;
        :mod:`salbench.scaling`), so a 28 x 28 image gets about as many superpixels as the embedded
        default's 112 x 112 images instead of one or two.
        """
        p: LimeParams = self.params  # type: ignore[assignment]
        kernel_size, max_dist = self.segmentation_lengths(tuple(images.shape[-2:]))
        src = self.context.denormalize(images).clamp(0, 1) if p.segment_on == "pixels" else images
        arr = src.detach().permute(0, 2, 3, 1).cpu().double().numpy()
        return [cached_segments(a, kernel_size, max_dist, p.ratio, s) for a, s in zip(arr, seeds)]

    def segmentation_lengths(self, size: tuple[int, int]) -> tuple[float, float]:
        """Quickshift's ``(kernel_size, max_dist)`` in pixels for inputs of ``size`` (see :meth:`segment`)."""
        p: LimeParams = self.params  # type: ignore[assignment]
        return scaled_length(p.kernel_size, size, minimum=1.0), scaled_length(p.max_dist, size)

    @torch.no_grad()
    def _scores(
        self, images: torch.Tensor, targets: torch.Tensor, segs: torch.Tensor, states: torch.Tensor
    ) -> torch.Tensor:
        """Target scores of every perturbed image: states (N,S,Kmax) -> (N,S) float64."""
        p: LimeParams = self.params  # type: ignore[assignment]
        N, S = states.shape[:2]
        hide = _hide_images(images, segs, states.shape[2], p.hide)
        flat_segs = segs.reshape(N, -1)
        out = torch.empty(N * S, dtype=torch.float64, device=images.device)
        with model_mode(self.model, False):
            for start in range(0, N * S, p.max_batch):
                rows = torch.arange(start, min(start + p.max_batch, N * S), device=images.device)
                i, s = rows // S, rows % S
                keep = states[i, s].gather(1, flat_segs[i]).reshape(-1, 1, *images.shape[-2:])
                keep = keep.to(images.dtype)
                with autocast_passes(images.device):
                    logits = self.model(keep * images[i] + (1 - keep) * hide[i])
                logits = logits.float()
                if p.score == "probs":
                    logits = torch.softmax(logits, dim=1)
                out[rows] = logits.gather(1, targets[i].view(-1, 1)).squeeze(1).double()
        return out.view(N, S)

    def _distances(
        self, images: torch.Tensor, segs: torch.Tensor, states: np.ndarray, k: int, i: int
    ) -> np.ndarray:
        """Distances (S,) of image ``i``'s samples to the unperturbed image (see ``distance``)."""
        p: LimeParams = self.params  # type: ignore[assignment]
        z = states[:, :k].astype(np.float64)
        if p.distance == "binary_cosine":
            return pairwise_distances(z, np.ones((1, k)), metric="cosine").ravel()
        if p.distance == "binary_euclidean":
            return np.sqrt(k - z.sum(axis=1))
        # ||x - x'||^2 = sum over hidden superpixels of their squared change (in normalised space)
        hide = _hide_images(images[i : i + 1], segs[i : i + 1], k, p.hide)[0]
        sq = ((images[i] - hide).double() ** 2).sum(0).reshape(-1)
        per_k = torch.zeros(k, dtype=torch.float64, device=sq.device).index_add_(0, segs[i].reshape(-1), sq)
        return np.sqrt(np.clip((1.0 - z) @ per_k.cpu().numpy(), 0.0, None))

    def surrogate_weights(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        segments: Sequence[np.ndarray],
        seeds: Sequence[int],
    ) -> list[np.ndarray]:
        """Surrogate coefficients per image: list of (K_i,) float64, one per superpixel label.

        Args:
            images: (N,C,H,W) normalised.
            targets: (N,) class indices.
            segments: N label maps (H,W) with labels ``0..K_i-1``.
            seeds: N sampling seeds (``numpy.random.RandomState``).
        """
        p: LimeParams = self.params  # type: ignore[assignment]
        ks = [int(s.max()) + 1 for s in segments]
        kmax = max(ks)
        states_np = np.ones((len(ks), p.n_samples, kmax), dtype=np.int64)
        for i, (k, seed) in enumerate(zip(ks, seeds)):
            states_np[i, :, :k] = sample_states(p.n_samples, k, seed, p.include_original)
        dev = images.device
        segs = torch.as_tensor(np.stack(segments), dtype=torch.long, device=dev)
        states = torch.as_tensor(states_np, device=dev)
        scores = self._scores(images, targets.to(dev).long(), segs, states).cpu().numpy()
        out = []
        for i, k in enumerate(ks):
            weights = kernel_weights(self._distances(images, segs, states_np[i], k, i), p.kernel_width)
            out.append(fit_surrogate(states_np[i, :, :k], scores[i], weights, p.regressor, p.alpha))
        return out

    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """LIME maps (N,H,W) float32 in [0, 1] for normalised ``images`` (N,C,H,W), ``targets`` (N,)."""
        p: LimeParams = self.params  # type: ignore[assignment]
        seeds = draw_seeds(generator, images.shape[0])
        segments = self.segment(images, [p.segment_seed] * images.shape[0])
        coefs = self.surrogate_weights(images, targets, segments, seeds)
        return lime_maps(coefs, segments, images.shape[1]).to(images.device)


def lime_maps(coefs: Sequence[np.ndarray], segments: Sequence[np.ndarray], channels: int) -> torch.Tensor:
    """Per-pixel maps from superpixel coefficients: L2 over ``channels`` copies, then min-max -> (N,H,W)."""
    maps = np.stack([math.sqrt(channels) * np.abs(c)[s] for c, s in zip(coefs, segments)])
    return minmax_per_image(torch.from_numpy(maps))
