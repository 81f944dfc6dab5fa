"""Model-free maps: the uninformed ``fakecam`` of the study and two controls, ``random`` and ``edge``.

None of them reads the model or the targets; they calibrate the metrics (a metric that ranks ``fakecam``
or an edge detector above real methods measures something other than faithfulness to the model).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from salbench import rng
from salbench.errors import ConfigError
from salbench.methods.base import METHODS, SaliencyMethod
from salbench.methods.gradients import check_batch
from salbench.saliency import minmax_per_image

# ITU-R BT.601 luma weights, as in PIL's ``convert("L")`` and skimage's ``rgb2gray`` family.
_LUMA_RGB = (0.299, 0.587, 0.114)
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


@METHODS.register("fakecam")
class FakeCAM(SaliencyMethod):
    """Uninformed baseline of the study: every pixel 1 except the top-left pixel, 0.

    The single 0 keeps the map non-constant, so min-max based metrics and thresholds stay defined.
    """

    name: ClassVar[str] = "fakecam"
    family: ClassVar[str] = "Uninformed"
    deterministic: ClassVar[bool] = True
    normalisation: ClassVar[str] = "none: constant 1 with pixel (0, 0) set to 0"

    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """(N,H,W) float32 ones with ``[:, 0, 0] = 0``."""
        check_batch(images, targets)
        n, _, h, w = images.shape
        maps = torch.ones((n, h, w), dtype=torch.float32, device=images.device)
        maps[:, 0, 0] = 0.0
        return maps


@METHODS.register("random")
class RandomMap(SaliencyMethod):
    """Control: i.i.d. uniform [0, 1) pixels drawn from the call's generator (required).

    The same generator state gives the same maps; the draw is one (N,H,W) tensor on the generator's device.
    """

    name: ClassVar[str] = "random"
    family: ClassVar[str] = "Control"
    deterministic: ClassVar[bool] = False
    normalisation: ClassVar[str] = "none: uniform [0, 1) samples"

    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """(N,H,W) float32 uniform [0, 1) from ``generator`` (one draw, or one per image)."""
        check_batch(images, targets)
        if generator is None:
            raise ConfigError("random is stochastic: pass a torch.Generator")
        n, _, h, w = images.shape
        return rng.rand(generator, (n, h, w), 0).to(images.device)


def grey(pixels: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) pixels -> (N,1,H,W) grey: BT.601 luma for C == 3, the channel mean otherwise."""
    if pixels.shape[1] == 3:
        weights = torch.tensor(_LUMA_RGB, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels * weights).sum(dim=1, keepdim=True)
    return pixels.mean(dim=1, keepdim=True)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude ``sqrt(gx^2 + gy^2)`` of (N,1,H,W) -> (N,H,W).

    Borders use replicate padding, so the image edge itself is not an edge.
    """
    kx = torch.tensor(_SOBEL_X, dtype=image.dtype, device=image.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2,1,3,3): d/dx, d/dy
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(padded, kernels)
    return torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2)


@METHODS.register("edge")
class EdgeMap(SaliencyMethod):
    """Control: edge detector (Sobel, 1968) on the de-normalised grey image, per-image min-max.

    Model-independent by construction; Adebayo et al. (2018, "Sanity Checks for Saliency Maps") show that
    several saliency methods resemble such an edge map.
    """

    name: ClassVar[str] = "edge"
    family: ClassVar[str] = "Control"
    deterministic: ClassVar[bool] = True
    normalisation: ClassVar[str] = (
        "Sobel gradient magnitude of the BT.601 grey de-normalised image (replicate padding), "
        "per-image min-max"
    )

    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """(N,H,W) float32 in [0, 1]; a flat image gives zeros."""
        check_batch(images, targets)
        if len(images) == 0:
            return images.new_zeros((0, *images.shape[2:]), dtype=torch.float32)
        pixels = self.context.denormalize(images.detach())
        return minmax_per_image(sobel_magnitude(grey(pixels)))
