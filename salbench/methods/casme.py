"""CASME: classifier-agnostic saliency map extraction (Zolna, Geras and Cho, CVIU 2020).

A trained masker (``casme_utils``: its own encoder, the classifier trained concurrently with it, read
at several scales + a small decoder) maps an image to a one-channel mask at stride 4 in one forward
pass. The map is that mask upsampled bilinearly (``align_corners=False``; ``upsample="nearest"`` gives
the authors' ``get_mask``) to the input size, then min-max normalised per image (a constant mask
becomes all zeros).

What the explained model does here: nothing. The masker carries its own encoder (initialised from the
explained classifier when trained by ``main/train_casme.py``; the authors' ImageNet masker carries its
own ResNet-50), so the map depends on the image only: it is class-agnostic (the same for every target)
and classifier-agnostic, as in the paper. The explained model is neither run, hooked nor switched
between train/eval mode; only its device is read.

The checkpoint comes from ``methods.casme.checkpoint`` (see :mod:`casme_utils.checkpoint` for the two
layouts read); the generation stage fills it with the embedded default
(:func:`casme_utils.checkpoint.resolve_checkpoint`) when it is empty. A masker already in memory may
be passed instead (``masker=``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from salbench import rng
from salbench.errors import ConfigError
from salbench.methods.base import METHODS, MethodContext, MethodParams, SaliencyMethod
from salbench.saliency import minmax_per_image
from salbench.scoped import model_mode

if TYPE_CHECKING:
    from casme_utils.architecture import Masker

# casme_utils imports salbench.scoped, so importing it here at module level would make
# ``import salbench.methods`` and ``import casme_utils`` depend on each other's order: it is imported
# where it is used.


@dataclasses.dataclass(frozen=True)
class CasmeParams(MethodParams):
    """CASME parameters.

    Attributes:
        checkpoint: masker checkpoint file; empty = the embedded default, filled in by the generation
            stage (this class itself needs a path or a masker).
        upsample: ``bilinear`` (default) or ``nearest`` (the authors' decoder) mask upsampling.
        max_batch: most images pushed through the masker at once.
    """

    checkpoint: str = ""
    upsample: str = "bilinear"
    max_batch: int = 64

    def __post_init__(self) -> None:
        if self.upsample not in ("bilinear", "nearest"):
            raise ConfigError(f"casme: upsample must be 'bilinear' or 'nearest', got {self.upsample!r}")
        if self.max_batch < 1:
            raise ConfigError(f"casme: max_batch must be >= 1, got {self.max_batch}")


@METHODS.register("casme")
class Casme(SaliencyMethod):
    """CASME masker as a saliency method (one forward pass, no gradients, deterministic).

    If the masker was trained with another normalisation than ``context`` (recorded ``mean``/``std``
    in its metadata), images are re-normalised for it.
    """

    name: ClassVar[str] = "casme"
    family: ClassVar[str] = "Learning"
    deterministic: ClassVar[bool] = True
    normalisation: ClassVar[str] = (
        "masker output (sigmoid, stride 4) upsampled to the input (params.upsample, default bilinear), "
        "per-image min-max"
    )
    params_cls: ClassVar[type[MethodParams]] = CasmeParams

    def __init__(
        self,
        model: nn.Module,
        context: MethodContext,
        params: MethodParams | None = None,
        masker: Masker | None = None,
        masker_meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, context, params)
        from casme_utils.checkpoint import load_masker

        p: CasmeParams = self.params  # type: ignore[assignment]
        if masker is None:
            if not p.checkpoint:
                raise ConfigError(
                    "casme: methods.casme.checkpoint is empty; train a masker with main/train_casme.py "
                    "or give a checkpoint path"
                )
            masker, masker_meta = load_masker(p.checkpoint)
        self.masker = masker
        self.masker_meta = dict(masker_meta or {})
        param = next(model.parameters(), None)
        if param is not None:
            self.masker.to(param.device)

    def _renormalise(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.masker_meta.get("mean"), self.masker_meta.get("std")
        if mean is None or std is None:
            return images
        if tuple(mean) == tuple(self.context.mean) and tuple(std) == tuple(self.context.std):
            return images
        pixels = self.context.denormalize(images)
        m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (pixels - m) / s

    @torch.no_grad()
    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """Maps (N,H,W) float32 in [0, 1] for ``images`` (N,C,H,W), C the masker encoder's channels;
        ``targets`` (N,) are not used."""
        if images.dim() != 4 or targets.shape != (images.shape[0],):
            raise ValueError(f"casme: expected images (N,C,H,W) and targets (N,), got {tuple(images.shape)}")
        from casme_utils.architecture import upsample_mask

        p: CasmeParams = self.params  # type: ignore[assignment]
        device = next(self.masker.parameters()).device
        out = []
        with model_mode(self.masker, False):
            for i in range(0, images.shape[0], p.max_batch):
                x = self._renormalise(images[i : i + p.max_batch].to(device))
                mask = upsample_mask(self.masker(x), x.shape[-2:], p.upsample)
                out.append(minmax_per_image(mask[:, 0].float()))
        return torch.cat(out).to(images.device)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["masker"] = {
            k: self.masker_meta.get(k) for k in ("format", "encoder", "decoder_width", "upsample")
        }
        return info
