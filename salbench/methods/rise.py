"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das and Saenko, BMVC 2018).

Saliency of pixel ``x`` for class ``c`` is the expected score of the class under random binary masks
that keep ``x`` (paper Eq. 5-6, Monte-Carlo estimate Eq. 7)::

    S_c(x) = 1 / (N * p1) * sum_i f_c(I * M_i) * M_i(x)

Masks (paper Sec. 3.2): an ``s x s`` binary grid with cells kept with probability ``p1`` is upsampled
bilinearly (mirror boundary, as the paper's skimage call) to ``(s + 1) * cell`` with
``cell = ceil(H / s)``, and cropped at a random integer shift in ``[0, cell)``, which makes the masks
smooth and shift-varied.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from salbench import rng
from salbench.errors import ConfigError, DataError, SalbenchError
from salbench.methods.base import METHODS, MethodContext, MethodParams, Preparation, SaliencyMethod
from salbench.saliency import minmax_per_image
from salbench.scoped import autocast_passes, model_mode

logger = logging.getLogger(__name__)

SCORES = ("logits", "probs")


@dataclasses.dataclass(frozen=True)
class RiseParams(MethodParams):
    """RISE parameters (defaults: the ``acml2024`` protocol).

    The ``reference`` protocol uses the paper's published ResNet50 settings: ``n_masks=4000``,
    ``grid_size=7``, ``p1=0.5`` and ``score="probs"`` (the paper explains softmax outputs).

    Attributes:
        n_masks: number of random masks N.
        grid_size: side s of the coarse binary grid.
        p1: probability that a grid cell is kept (1 = pixel visible).
        score: ``"logits"`` (what the study's code scored) or ``"probs"`` (softmax, as the paper).
        max_batch: most masked images pushed through the model at once.
    """

    n_masks: int = 32
    grid_size: int = 4
    p1: float = 0.1
    score: str = "logits"
    max_batch: int = 256

    def __post_init__(self) -> None:
        if self.n_masks < 1:
            raise ConfigError(f"rise: n_masks must be >= 1, got {self.n_masks}")
        if self.grid_size < 1:
            raise ConfigError(f"rise: grid_size must be >= 1, got {self.grid_size}")
        if not 0.0 < self.p1 <= 1.0:
            raise ConfigError(f"rise: p1 must be in (0, 1], got {self.p1}")
        if self.score not in SCORES:
            raise ConfigError(f"rise: score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.max_batch < 1:
            raise ConfigError(f"rise: max_batch must be >= 1, got {self.max_batch}")


def interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Linear interpolation ``n_in -> n_out`` samples as an (n_out, n_in) float64 matrix.

    Half-pixel-centred coordinates ``src = (o + 0.5) * n_in / n_out - 0.5`` with mirror boundary
    (``src -> -src`` below 0, ``2 (n_in - 1) - src`` above ``n_in - 1``): what
    ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)``, used by the paper's
    code, computes along each axis (skimage's ``"reflect"`` is scipy's ``"mirror"``).
    """
    if n_in == 1:
        return torch.ones(n_out, 1, dtype=torch.float64)
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5
    src = src.abs()
    src = torch.where(src > n_in - 1, 2 * (n_in - 1) - src, src)
    lo = src.floor().long().clamp(0, n_in - 2)
    frac = src - lo
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    mat[rows, lo] = 1 - frac
    mat[rows, lo + 1] += frac
    return mat


def upsample_grids(grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample coarse grids bilinearly to ``(s + 1) * cell`` and crop at integer shifts (RISE masks).

    Separable linear interpolation (:func:`interpolation_matrix`, equal to the paper's skimage
    resize), evaluated only on the kept window ``[dy : dy + H, dx : dx + W]``.

    Args:
        grids: (n, s, s) float grid values.
        shifts: (n, 2) long shifts ``(dy, dx)`` with ``0 <= dy < cell_h``, ``0 <= dx < cell_w``.
        size: output ``(H, W)``.

    Returns:
        (n, H, W) float32 masks on ``grids``' device.
    """
    s = grids.shape[-1]
    H, W = size
    cell_h, cell_w = math.ceil(H / s), math.ceil(W / s)
    dev = grids.device
    ry = interpolation_matrix(s, (s + 1) * cell_h).to(dev)
    rx = interpolation_matrix(s, (s + 1) * cell_w).to(dev)
    shifts = shifts.to(dev)
    ry_n = ry[shifts[:, 0:1] + torch.arange(H, device=dev)]  # (n, H, s)
    rx_n = rx[shifts[:, 1:2] + torch.arange(W, device=dev)]  # (n, W, s)
    return (ry_n @ grids.double() @ rx_n.transpose(1, 2)).float()


def generate_masks(
    n: int, s: int, p1: float, size: tuple[int, int], generator: torch.Generator, chunk: int = 256
) -> torch.Tensor:
    """Draw ``n`` RISE masks (paper Sec. 3.2); a pure function of the generator state.

    Args:
        n: number of masks.
        s: grid side.
        p1: probability of keeping a grid cell.
        size: mask size ``(H, W)``.
        generator: source of randomness; masks are built on its device.
        chunk: masks upsampled at once (bounds temporary memory).

    Returns:
        (n, H, W) float32 in [0, 1]; the expected mean value is ``p1``.
    """
    H, W = size
    cell_h, cell_w = math.ceil(H / s), math.ceil(W / s)
    dev = generator.device
    grids = (torch.rand((n, s, s), generator=generator, device=dev) < p1).float()
    dy = torch.randint(0, cell_h, (n,), generator=generator, device=dev)
    dx = torch.randint(0, cell_w, (n,), generator=generator, device=dev)
    shifts = torch.stack([dy, dx], dim=1)
    parts = [upsample_grids(grids[i : i + chunk], shifts[i : i + chunk], size) for i in range(0, n, chunk)]
    return torch.cat(parts).clamp_(0.0, 1.0)


def save_masks(masks: torch.Tensor, path: str | Path) -> None:
    """Write masks (N,H,W) as a float32 ``.npy`` atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, masks.detach().cpu().numpy().astype(np.float32))
    os.replace(tmp, path)


def load_masks(path: str | Path) -> torch.Tensor:
    """Read masks (N,H,W) written by :func:`save_masks` (no unpickling)."""
    try:
        arr = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read RISE masks from {path}: {err}") from None
    if arr.ndim != 3:
        raise DataError(f"RISE masks in {path} must have shape (N, H, W), got {arr.shape}")
    return torch.from_numpy(arr.astype(np.float32))


@METHODS.register("rise")
class Rise(SaliencyMethod):
    """RISE with masks generated once per run and every (image, mask) pair batched through the model.

    Map: ``S = sum_i score_i * M_i / (N * p1)`` (paper Eq. 7) with ``score_i`` the target logit or
    probability of ``image * M_i``, then per-map min-max (the study min-maxed the map of every class
    before selecting the target: the same numbers for the target map). The masks are drawn from the
    generator of the first :meth:`explain` call unless given (``masks=`` or :meth:`set_masks`); the
    ``masks`` attribute holds them so a run can store them with :func:`save_masks`.

    Masks multiply the normalised image, as the paper's and the study's code do, so a hidden pixel
    is 0 in normalised space (the dataset mean colour), not black. Deviation: the masks are drawn
    with torch's RNG instead of numpy's, so for a given seed they differ from the study's masks
    (same construction and distribution).
    """

    name: ClassVar[str] = "rise"
    sampling: ClassVar[bool] = True
    family: ClassVar[str] = "Occlusion"
    deterministic: ClassVar[bool] = False
    normalisation: ClassVar[str] = "sum_i score_i*M_i/(N*p1), per-map min-max"
    params_cls: ClassVar[type[MethodParams]] = RiseParams

    def __init__(
        self,
        model: nn.Module,
        context: MethodContext,
        params: MethodParams | None = None,
        masks: torch.Tensor | None = None,
    ) -> None:
        super().__init__(model, context, params)
        self.masks: torch.Tensor | None = None
        if masks is not None:
            self.set_masks(masks)

    def masks_file(self, seed: int) -> str:
        """File name of this run's masks: a function of the mask parameters and the run seed."""
        p: RiseParams = self.params  # type: ignore[assignment]
        return f"rise_masks_n{p.n_masks}_s{p.grid_size}_p{p.p1}_seed{seed}.npy"

    def prepare(self, preparation: Preparation) -> None:
        """Draw the run's masks once from ``preparation.generator()``, or reload them from its state folder.

        Every user of the run (generation, the sensitivity re-explanation, sanity checks, ROAR) thus
        explains with the same masks; masks already given are kept.
        """
        if self.masks is not None:
            return
        p: RiseParams = self.params  # type: ignore[assignment]
        name = self.masks_file(preparation.seed)
        path = None if preparation.state_dir is None else preparation.state_dir / name
        if name in preparation.shared:
            masks = preparation.shared[name]
        elif path is not None and path.is_file():
            masks = load_masks(path)
        else:
            masks = generate_masks(p.n_masks, p.grid_size, p.p1, preparation.size, preparation.generator())
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_masks(masks, path)
        preparation.shared[name] = masks
        self.set_masks(masks.to(preparation.device))

    def set_masks(self, masks: torch.Tensor) -> None:
        """Use precomputed masks (N,H,W) in [0, 1] (e.g. loaded with :func:`load_masks`)."""
        p: RiseParams = self.params  # type: ignore[assignment]
        if masks.ndim != 3:
            raise ConfigError(f"rise: masks must have shape (N, H, W), got {tuple(masks.shape)}")
        if masks.shape[0] != p.n_masks:
            raise ConfigError(f"rise: got {masks.shape[0]} masks but n_masks is {p.n_masks}")
        if not torch.isfinite(masks).all() or masks.min() < 0 or masks.max() > 1:
            raise ConfigError("rise: masks must be finite and in [0, 1]")
        self.masks = masks.detach().float()

    def _masks_for(
        self, size: tuple[int, int], device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Masks (N,H,W) on ``device``: the stored ones, or drawn once from ``generator``."""
        p: RiseParams = self.params  # type: ignore[assignment]
        if self.masks is None:
            gen = generator
            if gen is None:  # no generator: draw the mask seed from torch's global RNG
                gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
            logger.info(
                "rise: generating %d masks (s=%d, p1=%g) of size %s", p.n_masks, p.grid_size, p.p1, size
            )
            self.masks = generate_masks(p.n_masks, p.grid_size, p.p1, size, gen)
        if tuple(self.masks.shape[1:]) != tuple(size):
            raise SalbenchError(
                f"rise: masks are {tuple(self.masks.shape[1:])} but images are {tuple(size)}; "
                "use one image size per run"
            )
        if self.masks.device != device:
            self.masks = self.masks.to(device)
        return self.masks

    @torch.no_grad()
    def scores(self, images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Target scores of every masked image: (B,C,H,W), (B,), (N,H,W) -> (B, N) float32.

        Rows ``b * N + n`` (image-major) are built lazily and pushed through the model in chunks
        of ``max_batch``; the model runs in eval mode.
        """
        p: RiseParams = self.params  # type: ignore[assignment]
        B, N = images.shape[0], masks.shape[0]
        out = torch.empty(B * N, dtype=torch.float32, device=images.device)
        with model_mode(self.model, False):
            for start in range(0, B * N, p.max_batch):
                rows = torch.arange(start, min(start + p.max_batch, B * N), device=images.device)
                b, n = rows // N, rows % N
                with autocast_passes(images.device):
                    logits = self.model(images[b] * masks[n][:, None].to(images.dtype))
                logits = logits.float()
                if p.score == "probs":
                    logits = torch.softmax(logits, dim=1)
                out[rows] = logits.gather(1, targets[b].view(-1, 1)).squeeze(1)
        return out.view(B, N)

    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """RISE maps (N,H,W) float32 in [0, 1] for normalised ``images`` (N,C,H,W), ``targets`` (N,)."""
        p: RiseParams = self.params  # type: ignore[assignment]
        H, W = images.shape[-2:]
        masks = self._masks_for((H, W), images.device, rng.first(generator))
        scores = self.scores(images, targets.to(images.device).long(), masks)
        sal = scores @ masks.reshape(masks.shape[0], -1).float() / (masks.shape[0] * p.p1)
        return minmax_per_image(sal.reshape(-1, H, W))
