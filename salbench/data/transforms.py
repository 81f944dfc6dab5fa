"""Preprocessing (SPEC section 2) and the matching transformation of boxes and masks.

ImageNet: resize to ``resize x resize`` (square, bilinear, aspect ratio not kept, as the study did),
centre-crop ``crop x crop``, normalise with the ImageNet mean/std. Boxes and masks go through the same
resize and crop so they stay aligned with the model input.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from PIL import Image

from salbench.config import IMAGENET_MEAN, IMAGENET_STD

_WIDE = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB. 16-bit grey images are scaled by their bit depth (65535 -> 255), not
    clipped (Pillow's own conversion turns nearly every 16-bit pixel white)."""
    if image.mode in _WIDE:
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "I" or arr.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Square resize -> centre crop -> normalise.

    Attributes:
        resize: side after resizing (``0``: no resize).
        crop: side of the centre crop (``0``: no crop).
        mean: per-channel mean of the normalisation.
        std: per-channel std of the normalisation.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def crop_offset(self, size: int) -> int:
        """Top/left offset of the centre crop in a ``size x size`` image (torchvision's rounding)."""
        return round((size - self.crop) / 2.0) if self.crop else 0

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> (3,H,W) float32 pixels in [0,1] after resize and crop."""
        image = to_rgb(image)
        if self.resize:
            image = image.resize((self.resize, self.resize), Image.Resampling.BILINEAR)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        if self.crop:
            side = arr.shape[0]
            if self.crop > side or self.crop > arr.shape[1]:
                raise ValueError(f"crop {self.crop} larger than the image ({arr.shape[1]}x{arr.shape[0]})")
            top, left = self.crop_offset(side), self.crop_offset(arr.shape[1])
            arr = arr[top : top + self.crop, left : left + self.crop]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(...,3,H,W) pixels in [0,1] -> normalised model input."""
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        return (pixels - mean) / std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.pixels(image))

    def boxes(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Map (K,4) ``xmin, ymin, xmax, ymax`` (inclusive pixels of the original image) to the model frame.

        Box edges are scaled as continuous coordinates (pixel i spans [i, i+1)), shifted by the crop
        offset, clipped to the crop and returned as inclusive integer pixels. Boxes that fall outside the
        crop entirely come back with ``xmin > xmax`` or ``ymin > ymax`` (empty).
        """
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        sx = self.resize / width if self.resize else 1.0
        sy = self.resize / height if self.resize else 1.0
        side_w = self.resize or width
        side_h = self.resize or height
        ox, oy = (self.crop_offset(side_w), self.crop_offset(side_h)) if self.crop else (0, 0)
        out_w, out_h = (self.crop or side_w), (self.crop or side_h)
        x0 = b[:, 0] * sx - ox
        y0 = b[:, 1] * sy - oy
        x1 = (b[:, 2] + 1) * sx - ox
        y1 = (b[:, 3] + 1) * sy - oy
        res = np.stack(
            [
                np.clip(np.floor(x0), 0, out_w - 1),
                np.clip(np.floor(y0), 0, out_h - 1),
                np.clip(np.ceil(x1) - 1, -1, out_w - 1),
                np.clip(np.ceil(y1) - 1, -1, out_h - 1),
            ],
            axis=1,
        ).astype(np.int64)
        outside = (x1 <= 0) | (y1 <= 0) | (x0 >= out_w) | (y0 >= out_h)
        res[outside, 2] = res[outside, 0] - 1
        return res

    def mask(self, mask: Image.Image) -> torch.Tensor:
        """Object mask (L image) -> (H,W) bool in the model frame (nearest-neighbour resize, same crop)."""
        if self.resize:
            mask = mask.resize((self.resize, self.resize), Image.Resampling.NEAREST)
        arr = np.asarray(mask.convert("L")) > 127
        if self.crop:
            top, left = self.crop_offset(arr.shape[0]), self.crop_offset(arr.shape[1])
            arr = arr[top : top + self.crop, left : left + self.crop]
        return torch.from_numpy(np.ascontiguousarray(arr))
