"""CASME masker: a classifier trunk read at several scales + a small decoder giving a one-channel mask.

Zolna, Geras and Cho, "Classifier-agnostic saliency map extraction" (CVIU 2020, arXiv:1805.08249),
Sec. 4 and the authors' code (kondiz/casme, ``archs.py``): the encoder is a ResNet-50 whose stem output
(after the max-pool) and the outputs of ``layer1..layer4`` are read; the decoder passes the stem output
through unchanged, maps every other scale by a 1x1 convolution (64 channels) + batch norm + ReLU,
upsamples it bilinearly to the stem resolution, concatenates everything and ends with a 3x3 convolution
to one channel and a sigmoid. The mask lives at the stem resolution (stride 4: 56x56 at 224x224, 28x28
for the embedded ResNet at 112x112) and is upsampled to the input by the caller.

Generalisations (stated): the encoder may be any torchvision-named ResNet (``conv1 .. maxpool``,
``layer1..layer4``: the embedded ResNet, ``resnet18/50/...``) or VGG (``features`` read after every
max-pool: the embedded VGG, ``vgg16_bn``, ...); the upsampling is to the first scale's size rather than
by fixed factors 2/4/8 (identical for ResNet-50 at 224x224, where the sizes are exact multiples); the
decoder width is a parameter (64 in the paper, smaller for the CPU-sized embedded default). Module names
of the decoder (``conv1x1_1.0`` ..., ``final.0``) equal the authors', so their decoder state dict loads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from salbench.errors import ConfigError
from salbench.scoped import model_mode, removable_hooks

RESNET_POINTS = ("maxpool", "layer1", "layer2", "layer3", "layer4")


def feature_points(encoder: nn.Module) -> list[nn.Module]:
    """Modules whose outputs the decoder reads, from the finest scale to the coarsest.

    ResNets: ``maxpool`` (stem, stride 4) and ``layer1..layer4``; VGGs: every ``MaxPool2d`` of ``features``.

    Raises:
        ConfigError: when the encoder is neither a torchvision-named ResNet nor VGG.
    """
    if all(isinstance(getattr(encoder, name, None), nn.Module) for name in RESNET_POINTS):
        return [getattr(encoder, name) for name in RESNET_POINTS]
    features = getattr(encoder, "features", None)
    if isinstance(features, nn.Sequential):
        pools = [m for m in features if isinstance(m, nn.MaxPool2d)]
        if len(pools) >= 2:
            return pools
    raise ConfigError(
        f"casme: encoder {type(encoder).__name__} is not a torchvision-style ResNet (conv1..maxpool, "
        "layer1..layer4) or VGG (features with max-pools)"
    )


class Decoder(nn.Module):
    """Multi-scale decoder of the authors' ``archs.Decoder``, for any number of scales.

    Args:
        in_planes: channels of the scales, finest first (ResNet-50: ``(64, 256, 512, 1024, 2048)``).
        width: channels of every 1x1 projection (64 in the paper).

    Shapes: ``features[0]`` (N, in_planes[0], h, w), ``features[i]`` (N, in_planes[i], h_i, w_i)
    -> mask (N, 1, h, w) in [0, 1].
    """

    def __init__(self, in_planes: Sequence[int], width: int = 64) -> None:
        super().__init__()
        if len(in_planes) < 2 or width < 1:
            raise ConfigError("casme: the decoder needs at least two scales and width >= 1")
        self.in_planes = tuple(int(c) for c in in_planes)
        self.width = int(width)
        for i, planes in enumerate(self.in_planes[1:], start=1):
            proj = nn.Sequential(
                nn.Conv2d(planes, width, kernel_size=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
            self.add_module(f"conv1x1_{i}", proj)
        concat = self.in_planes[0] + width * (len(self.in_planes) - 1)
        self.final = nn.Sequential(nn.Conv2d(concat, 1, kernel_size=3, padding=1, bias=True), nn.Sigmoid())

    def reset_parameters(self, generator: torch.Generator) -> None:
        """The authors' initialisation: conv weights ~ N(0, 2 / (k * k * out_channels)), BN (1, 0).

        Deviation: the final convolution's bias starts at 0 (a mask of 0.5 everywhere) instead of
        PyTorch's default uniform draw, so that every draw comes from ``generator``.
        """
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    noise = torch.randn(m.weight.shape, generator=generator, device=generator.device)
                    m.weight.copy_(noise.to(m.weight) * math.sqrt(2.0 / n))
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.BatchNorm2d):
                    m.reset_parameters()
                    m.reset_running_stats()

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.in_planes):
            raise ValueError(f"decoder expects {len(self.in_planes)} feature maps, got {len(features)}")
        size = features[0].shape[-2:]
        parts = [features[0]]
        for i, f in enumerate(features[1:], start=1):
            proj = getattr(self, f"conv1x1_{i}")(f)
            if proj.shape[-2:] != size:
                proj = F.interpolate(proj, size=size, mode="bilinear", align_corners=False)
            parts.append(proj)
        return self.final(torch.cat(parts, 1))


class Masker(nn.Module):
    """Encoder (a whole classifier, read at :func:`feature_points`) + :class:`Decoder`.

    The encoder is the classifier trained concurrently with the decoder (paper Alg. 1; the authors'
    ``resnet50shared``): :meth:`encode` returns its logits and its multi-scale features in one pass.
    The decoder sees the features detached, as in the authors' code, so the decoder's loss never
    changes the encoder.

    Shapes: images (N,C,H,W) normalised -> :meth:`forward` mask (N,1,h,w) in [0, 1] at the finest
    scale (stride 4 for ResNets); :meth:`upsampled` (N,1,H,W).
    """

    def __init__(self, encoder: nn.Module, decoder: Decoder) -> None:
        super().__init__()
        feature_points(encoder)  # validates the architecture early
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits (N,K), features finest first) from one forward pass of the encoder."""
        captured: dict[int, torch.Tensor] = {}
        points = feature_points(self.encoder)
        with removable_hooks() as handles:
            for i, module in enumerate(points):
                handles.append(module.register_forward_hook(_capture(captured, i)))
            logits = self.encoder(images)
        return logits, [captured[i] for i in range(len(points))]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, features = self.encode(images)
        return self.decoder([f.detach() for f in features])

    def upsampled(self, images: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Mask (N,1,H,W) at the input size (``bilinear`` or ``nearest``, the authors' training mode)."""
        return upsample_mask(self(images), images.shape[-2:], mode)


def _capture(store: dict[int, torch.Tensor], index: int):
    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        store[index] = output

    return hook


def upsample_mask(mask: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """(N,1,h,w) -> (N,1,*size) by ``bilinear`` (align_corners=False) or ``nearest`` interpolation."""
    if mode not in ("bilinear", "nearest"):
        raise ConfigError(f"casme: upsample must be 'bilinear' or 'nearest', got {mode!r}")
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if mode == "nearest":
        return F.interpolate(mask, size=tuple(size), mode="nearest")
    return F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=False)


def input_channels(encoder: nn.Module) -> int:
    """Channels of the images the encoder reads: its first convolution's (3 when it has none)."""
    first = next((m for m in encoder.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


@torch.no_grad()
def encoder_planes(encoder: nn.Module, size: int = 64) -> tuple[int, ...]:
    """Channels of the encoder's feature points, measured by one eval-mode pass on a zero image."""
    points = feature_points(encoder)
    captured: dict[int, torch.Tensor] = {}
    device = next(encoder.parameters()).device
    with model_mode(encoder, False), removable_hooks() as handles:
        for i, module in enumerate(points):
            handles.append(module.register_forward_hook(_capture(captured, i)))
        encoder(torch.zeros(1, input_channels(encoder), size, size, device=device))
    return tuple(int(captured[i].shape[1]) for i in range(len(points)))


def build_masker(encoder: nn.Module, width: int, generator: torch.Generator | None = None) -> Masker:
    """A :class:`Masker` around ``encoder`` with a fresh decoder.

    With ``generator``, every decoder weight is drawn from it (:meth:`Decoder.reset_parameters`) and
    the construction does not advance the global generator; without, PyTorch's default initialisation.
    """
    planes = encoder_planes(encoder)
    if generator is None:
        decoder = Decoder(planes, width)
    else:
        with torch.random.fork_rng(devices=[]):
            decoder = Decoder(planes, width)
        decoder.reset_parameters(generator)
    decoder.to(next(encoder.parameters()).device)
    return Masker(encoder, decoder)
