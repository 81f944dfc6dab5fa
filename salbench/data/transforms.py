"""Preprocessing (SPEC section 2) and the matching transformation of boxes and masks.

ImageNet: resize to ``resize x resize`` (square, bilinear, aspect ratio not kept, as the study did),
centre-crop ``crop x crop``, normalise with the ImageNet mean/std. Boxes and masks go through the same
resize and crop so they stay aligned with the model input. Images become 8-bit RGB (3 channels) or 8-bit
grey (1 channel) first. :class:`InputSpec` is what a model says about its input (built by
:func:`salbench.models.inputs.model_input_spec`); the data layer reads it without knowing the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from salbench.config import IMAGENET_MEAN, IMAGENET_STD, Config
from salbench.data.listing import ImageRecord
from salbench.errors import ConfigError

_WIDE = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _narrow(image: Image.Image) -> Image.Image:
    """16-bit grey images as 8-bit grey, scaled by their bit depth (65535 -> 255), not clipped (Pillow's
    own conversion turns nearly every 16-bit pixel white); other images unchanged."""
    if image.mode in _WIDE:
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "I" or arr.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB (16-bit grey scaled by its bit depth, see :func:`to_grey`)."""
    return _narrow(image).convert("RGB")


def to_grey(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit grey ("L": ITU-R 601-2 luma for colour images); 16-bit grey images are
    scaled by their bit depth (65535 -> 255) as :func:`to_rgb` does."""
    return _narrow(image).convert("L")


CHANNELS = (1, 3)
"""Channel counts a model input may have: 8-bit grey or RGB."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model says about its input; every field may be unknown (``0``, ``()`` or ``""``).

    Attributes:
        channels: input channels of its first convolution.
        first_conv: the module ``channels`` was read from (for messages).
        fixed_size: the only input side it accepts (a ViT's patch embedding), 0 when any size works.
        fixed_size_from: where ``fixed_size`` was read (for messages).
        resize: side it was evaluated at before the crop (timm ``crop_pct``, torchvision weights).
        crop: side it sees (timm ``input_size``, torchvision weights' ``crop_size``, ``fixed_size``).
        mean: per-channel normalisation mean it was trained with.
        std: per-channel normalisation std.
        num_classes: its number of outputs.
        source: where ``resize``/``crop``/``mean``/``std`` came from, e.g. ``timm pretrained_cfg``.
    """

    channels: int = 0
    first_conv: str = ""
    fixed_size: int = 0
    fixed_size_from: str = ""
    resize: int = 0
    crop: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    num_classes: int = 0
    source: str = ""


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Grey/RGB conversion -> square resize -> centre crop -> normalise.

    Attributes:
        resize: side after resizing (``0``: no resize).
        crop: side of the centre crop (``0``: no crop).
        mean: per-channel mean of the normalisation, exactly ``channels`` values.
        std: per-channel std of the normalisation, exactly ``channels`` values, all > 0.
        channels: 3 (8-bit RGB) or 1 (8-bit grey, :func:`to_grey`).

    Raises:
        ConfigError: ``channels`` is not 1 or 3, or ``mean``/``std`` do not hold ``channels`` values
            (a one-value mean is never broadcast over three channels).
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ConfigError(f"preprocessing: channels must be 1 or 3, got {self.channels}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.channels:
                raise ConfigError(
                    f"preprocessing: {name} has {len(values)} value(s) {tuple(values)} but the input has "
                    f"{self.channels} channel(s)"
                )
        if any(not v > 0 for v in self.std):
            raise ConfigError(f"preprocessing: std must be > 0, got {tuple(self.std)}")

    def crop_offset(self, size: int) -> int:
        """Top/left offset of the centre crop in a ``size x size`` image (torchvision's rounding)."""
        return round((size - self.crop) / 2.0) if self.crop else 0

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> (C,H,W) float32 pixels in [0,1] after resize and crop (C = ``channels``)."""
        image = to_rgb(image) if self.channels == 3 else to_grey(image)
        if self.resize:
            image = image.resize((self.resize, self.resize), Image.Resampling.BILINEAR)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        arr = arr if arr.ndim == 3 else arr[:, :, None]
        if self.crop:
            side = arr.shape[0]
            if self.crop > side or self.crop > arr.shape[1]:
                raise ValueError(f"crop {self.crop} larger than the image ({arr.shape[1]}x{arr.shape[0]})")
            top, left = self.crop_offset(side), self.crop_offset(arr.shape[1])
            arr = arr[top : top + self.crop, left : left + self.crop]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(...,C,H,W) pixels in [0,1] -> normalised model input."""
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


FLAGS = {
    "data.channels": "--channels",
    "data.resize": "--resize-size",
    "data.crop": "--input-size",
    "data.mean": "--mean",
    "data.std": "--std",
    "data.class_index": "--class-index",
    "model.num_classes": "--num-classes",
}
"""Config key -> the command-line flag that sets it (messages name both)."""


def key_name(key: str) -> str:
    """``'data.crop' (--input-size)``: a config key and its flag, for messages."""
    return f"'{key}'" + (f" ({FLAGS[key]})" if key in FLAGS else "")


def check_inputs(cfg: Config) -> None:
    """Raise a one-line :class:`ConfigError` for input values that cannot fit together, naming the key
    and flag: channels other than 1/3, a mean/std whose length is not the channel count (a one-value
    mean is never broadcast), std <= 0, negative sides, a crop larger than the resize, a class index
    for a data kind without class folders."""
    data, model = cfg.data, cfg.model
    if data.channels not in (1, 3):
        raise ConfigError(f"config key {key_name('data.channels')} must be 1 or 3, got {data.channels}")
    for name in ("mean", "std"):
        values = getattr(data, name)
        if values and len(values) != data.channels:
            raise ConfigError(
                f"config key {key_name('data.' + name)} has {len(values)} value(s) {list(values)} but "
                f"{key_name('data.channels')} is {data.channels}: give exactly {data.channels} value(s)"
            )
    if any(not v > 0 for v in data.std):
        raise ConfigError(f"config key {key_name('data.std')} must hold values > 0, got {list(data.std)}")
    for key, value in (
        ("data.resize", data.resize),
        ("data.crop", data.crop),
        ("model.num_classes", model.num_classes),
    ):
        if value < 0:
            raise ConfigError(f"config key {key_name(key)} must be >= 0 (0: not given), got {value}")
    if data.resize and data.crop > data.resize:
        raise ConfigError(
            f"config key {key_name('data.crop')} is {data.crop}, larger than {key_name('data.resize')} "
            f"{data.resize}: the centre crop must fit in the resized image"
        )
    if data.class_index and data.kind != "imagefolder":
        raise ConfigError(
            f"config key {key_name('data.class_index')} maps class folders: it needs data.kind "
            f"imagefolder, not {data.kind!r}"
        )


IMAGENET_SIDES = (256, 224)
"""ImageNet evaluation: resize 256, centre crop 224 (torchvision's reference recipe, the study's)."""


def common_side(records: Sequence[ImageRecord]) -> int:
    """The side all images share when they are all square and the same size, else 0 (image headers
    only; stops at the first image that differs; an unreadable image is left to the loader's message)."""
    side = 0
    for record in records:
        try:
            with Image.open(record.path) as img:
                w, h = img.size
        except (OSError, ValueError, Image.DecompressionBombError):
            return 0
        if w != h or (side and w != side):
            return 0
        side = w
    return side


def kind_sides(cfg: Config, records: Callable[[], Sequence[ImageRecord]]) -> tuple[int, int, str]:
    """The data kind's default ``(resize, crop, why)`` (:class:`~salbench.config.DataConfig`)."""
    d = cfg.data
    if d.kind == "embedded":
        side = d.embedded.image_size
        return side, side, f"data kind embedded (image_size {side})"
    side = common_side(records())  # photos of different sizes stop the scan at the second image
    if side:
        return side, side, f"the images' own size ({side}x{side})"
    return (*IMAGENET_SIDES, f"ImageNet default ({IMAGENET_SIDES[0]} / {IMAGENET_SIDES[1]})")


def resolve_preprocess(
    cfg: Config, spec: InputSpec | None, defaults: Callable[[], tuple[int, int, str]]
) -> tuple[Preprocess, dict[str, str], tuple[int, int, str] | None]:
    """Resolve the model input, value by value: config > the model's ``spec`` > the data kind's default.

    The sides form a pair: a crop the model only accepts (``spec.fixed_size``) counts as given; a side
    given without the other gets the other by the ratio of the model's pair when it has one, else of
    the data kind's (ImageNet: ``resize = crop * 256 / 224``; images kept at their own size:
    ``resize = crop``); with neither side given, the model's pair, else the kind's.

    Args:
        cfg: run configuration (``data.channels``, ``resize``, ``crop``, ``mean``, ``std``).
        spec: what the model says about its input (None: nothing).
        defaults: the data kind's ``(resize, crop, why)`` (:func:`kind_sides`), called only when needed.

    Returns:
        ``(preprocess, where each value came from, the kind's sides if they were needed)``.

    Raises:
        ConfigError: values that cannot fit together (:func:`check_inputs`), a crop larger than the
            resize, or a 1-channel input without mean/std.
    """
    check_inputs(cfg)
    d, spec = cfg.data, spec or InputSpec()
    origin: dict[str, str] = {}
    resize, crop = d.resize, d.crop
    if resize:
        origin["resize"] = "config"
    if crop:
        origin["crop"] = "config"
    elif spec.fixed_size:
        crop, origin["crop"] = spec.fixed_size, f"the model's fixed input size ({spec.fixed_size_from})"
    kind = None
    if resize and crop:
        pair = (resize, crop, "config")
    elif spec.resize and spec.crop:
        pair = (spec.resize, spec.crop, spec.source)
    else:
        pair = kind = defaults()
    if not resize and not crop:
        resize, crop = pair[0], pair[1]
        origin["resize"] = origin["crop"] = pair[2]
    elif not resize:
        resize = max(crop, round(crop * pair[0] / pair[1]))
        origin["resize"] = f"the crop x {pair[0]}/{pair[1]} ({pair[2]})"
    elif not crop:
        crop = min(resize, round(resize * pair[1] / pair[0]))
        origin["crop"] = f"the resize x {pair[1]}/{pair[0]} ({pair[2]})"
    if crop > resize:
        raise ConfigError(
            f"the crop {crop} ({key_name('data.crop')}, from {origin['crop']}) is larger than the resize "
            f"{resize} ({key_name('data.resize')}, from {origin['resize']})"
        )
    norm: dict[str, tuple[float, ...]] = {}
    for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        given, from_model = getattr(d, key), getattr(spec, key)
        if given:
            norm[key], origin[key] = tuple(given), "config"
        elif len(from_model) == d.channels:
            norm[key], origin[key] = tuple(from_model), spec.source
        elif d.channels == 3:
            norm[key], origin[key] = default, "ImageNet default"
        else:
            raise ConfigError(
                f"{key_name('data.channels')} is 1 and {key_name('data.' + key)} is not given: a grey "
                "input has no conventional normalisation; give --mean M --std S (0 and 1 keep pixels in "
                "[0, 1])"
            )
    pre = Preprocess(resize, crop, norm["mean"], norm["std"], d.channels)
    return pre, origin, kind
