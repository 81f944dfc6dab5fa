"""Augmentations of the augmented-image stage (SPEC section 7): MixUp, CutMix, Resize, Rotation, Crop.

Pure, seeded functions on normalised batches ``images (N,C,H,W)``, ``labels (N,)``. The study applied
MixUp (seeds 32, 44, 55, 93), Resize (32, 64, 128, 448 px), Rotation (45, 135, 225, 315 degrees) and
RandomResizedCrop (seeds 32, 44, 55, 93) to its 1,000-image subset; CutMix is an addition.

The seed alone decides every draw: image ``i`` gets its own ``torch.Generator`` derived from
``(augmentation, seed, image id)`` through SHA-256 (stable across processes, unlike Python's ``hash``),
so its transformed image does not depend on the batch size, on the other images in the batch, or on
which saliency methods run afterwards. MixUp/CutMix partners are drawn from the full image list
(:class:`PartnerPool`), never from the batch. The study's scripts did not guarantee this.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from salbench.errors import ConfigError, DataError
from salbench.registry import Registry

STUDY_SEEDS = (32, 44, 55, 93)
STUDY_ANGLES = (45, 135, 225, 315)
# The study's resize sides at 224 input (32, 64, 128, 448) as multiples of input/7.
RESIZE_SEVENTHS = (1, 2, 4, 14)
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)

Params = dict[str, Any]
# (variant, images, labels, ids, partner_pool) -> (transformed images, per-image parameters)
Applied = tuple[torch.Tensor, list[Params]]
Applier = Callable[["Variant", torch.Tensor, torch.Tensor, list[str], "PartnerPool | None"], Applied]
AUGMENTATIONS: Registry[Applier] = Registry("augmentation")
SEEDED = frozenset({"mixup", "cutmix", "crop"})


@dataclasses.dataclass(frozen=True)
class Variant:
    """One augmentation setting, e.g. ``Variant("mixup", "mixup_32", 32)``.

    Attributes:
        augmentation: ``mixup``, ``cutmix``, ``resize``, ``rotation`` or ``crop`` (the registry ids).
        name: stable CSV id of the variant (``<augmentation>_<value>``).
        seed_or_param: the seed (mixup, cutmix, crop), the output side in pixels (resize) or the
            counter-clockwise angle in degrees (rotation).
    """

    augmentation: str
    name: str
    seed_or_param: int | float

    def __post_init__(self) -> None:
        AUGMENTATIONS.get(self.augmentation)
        value = self.seed_or_param
        if self.augmentation != "rotation" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"augmentation {self.name!r}: seed_or_param must be an integer, got {value!r}")
        if self.augmentation in SEEDED and value < 0:
            raise ConfigError(f"augmentation {self.name!r}: seed must be >= 0, got {value}")
        if self.augmentation == "resize" and value < 1:
            raise ConfigError(f"augmentation {self.name!r}: resize side must be >= 1, got {value}")
        if self.augmentation == "rotation" and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise ConfigError(f"augmentation {self.name!r}: angle must be finite, got {value}")


def make_variant(augmentation: str, value: int | float) -> Variant:
    """``Variant`` named ``<augmentation>_<value>`` (e.g. ``resize_64``)."""
    return Variant(augmentation, f"{augmentation}_{value}", value)


def resize_sizes(input_size: int) -> tuple[int, ...]:
    """The study's resize sides scaled to ``input_size``: 224 -> (32, 64, 128, 448), 112 -> (16, 32, 64, 224).

    The sides are the fractions 1/7, 2/7, 4/7 and 2 of the input side, rounded to whole pixels.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ConfigError(f"input_size must be a positive integer, got {input_size!r}")
    return tuple(max(1, round(input_size * k / 7)) for k in RESIZE_SEVENTHS)


def study_variants(input_size: int) -> list[Variant]:
    """The study's 16 variants (MixUp, Resize, Rotation, Crop) plus CutMix with the MixUp seeds."""
    variants = [make_variant("mixup", s) for s in STUDY_SEEDS]
    variants += [make_variant("resize", s) for s in resize_sizes(input_size)]
    variants += [make_variant("rotation", a) for a in STUDY_ANGLES]
    variants += [make_variant("crop", s) for s in STUDY_SEEDS]
    variants += [make_variant("cutmix", s) for s in STUDY_SEEDS]
    return variants


@dataclasses.dataclass(frozen=True)
class PartnerPool:
    """The full image list MixUp/CutMix partners are drawn from (the same for every batch).

    Attributes:
        ids: image ids in list order.
        labels: class of each image.
        fetch: pool indices -> their normalised images (K,C,H,W), preprocessed like the batch.
    """

    ids: tuple[str, ...]
    labels: tuple[int, ...]
    fetch: Callable[[list[int]], torch.Tensor]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.labels):
            raise DataError(f"partner_pool: {len(self.ids)} ids but {len(self.labels)} labels")
        if len(set(self.ids)) != len(self.ids):
            raise DataError("partner_pool: image ids are not unique")

    @classmethod
    def from_tensor(cls, images: torch.Tensor, labels: Sequence[int], ids: Sequence[str]) -> PartnerPool:
        """Pool over an in-memory batch ``images (N,C,H,W)``."""
        return cls(tuple(str(i) for i in ids), tuple(int(y) for y in labels), lambda idx: images[idx])

    @classmethod
    def from_source(cls, source: Any) -> PartnerPool:
        """Pool over every record of a :class:`salbench.data.sources.DataSource`, loaded on demand."""
        from salbench.data.sources import load_image

        def fetch(idx: list[int]) -> torch.Tensor:
            return torch.stack([load_image(source, source.records[i]) for i in idx])

        records = source.records
        return cls(tuple(r.image_id for r in records), tuple(int(r.label) for r in records), fetch)

    @functools.cached_property
    def label_tensor(self) -> torch.Tensor:
        return torch.tensor(self.labels, dtype=torch.long)

    @functools.cached_property
    def label_of(self) -> dict[str, int]:
        return dict(zip(self.ids, self.labels))


@dataclasses.dataclass(frozen=True)
class AugmentedBatch:
    """Transformed images with their targets and per-image parameters.

    Attributes:
        images: (N,C,H',W') transformed images (H', W' differ from the input for resize only).
        labels: (N,) targets (always the image's own label, MixUp/CutMix included).
        ids: image ids, in batch order.
        params: one JSON-able dict per image with everything needed to redo the transformation.
        variant: the variant applied.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: tuple[str, ...]
    params: list[Params]
    variant: Variant


def image_generator(augmentation: str, seed: int, image_id: str) -> torch.Generator:
    """CPU generator seeded from SHA-256 of ``(augmentation, seed, image_id)`` (63 bits)."""
    key = f"salbench.augment/{augmentation}/{seed}/{image_id}".encode()
    value = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(value)


def draw_lambda(generator: torch.Generator) -> float:
    """Mixing weight lambda ~ Beta(1, 1), i.e. uniform on [0, 1) (Zhang et al. 2018; Yun et al. 2019)."""
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def draw_partner(label: int, pool: PartnerPool, generator: torch.Generator) -> int:
    """Pool index of a partner drawn uniformly among the pool images whose class differs from ``label``."""
    candidates = torch.nonzero(pool.label_tensor != int(label)).flatten()
    if candidates.numel() == 0:
        raise DataError(f"partner_pool: no image of a class other than {label} to mix with")
    k = int(torch.randint(candidates.numel(), (), generator=generator))
    return int(candidates[k])


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """CutMix box ``(top, left, height, width)`` covering about ``1 - lam`` of the image.

    Yun et al. 2019 (CutMix, ICCV), Eq. 2 and Algorithm A1: side ratio ``sqrt(1 - lam)``, centre
    uniform over the pixels, half-sides ``floor(side / 2)`` and the box clipped to the image, as the
    reference code does. The effective lambda is ``1 - box area / image area``.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (), generator=generator))
    cx = int(torch.randint(width, (), generator=generator))
    top, bottom = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    left, right = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    return top, left, bottom - top, right - left


def crop_params(
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[int, int, int, int]:
    """RandomResizedCrop box ``(top, left, height, width)`` drawn from ``generator``.

    The same draws in the same order as ``torchvision.transforms.RandomResizedCrop.get_params``
    (area fraction ~ U(scale), log aspect ~ U(log ratio), 10 attempts, then a centre crop clamped to
    the ratio range), so a generator seeded with ``s`` gives torchvision's box under ``torch.manual_seed(s)``.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        u = torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=generator)
        aspect = torch.exp(u).item()
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,size,size): bilinear, antialiased, as torchvision's functional resize on tensors.

    The output is square (the evaluation crop is). Resizing to the input's own size returns a copy.
    """
    if tuple(images.shape[-2:]) == (size, size):
        return images.clone()
    return TF.resize(images, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


def rotate(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate (N,C,H,W) counter-clockwise by ``angle`` degrees about the image centre, same size.

    torchvision's functional ``rotate`` (bilinear, ``expand=False``) with ``fill=None``: points
    sampled outside the image read 0 (the dataset mean in normalised space) inside the bilinear
    kernel. An explicit ``fill=0`` would instead multiply border pixels by the sampled coverage a
    second time. Multiples of 90 degrees on square images are exact index permutations.
    """
    return TF.rotate(images, float(angle), interpolation=InterpolationMode.BILINEAR, expand=False, fill=None)


def reconstruct_mixup(x: torch.Tensor, partner: torch.Tensor, lam: float | Sequence[float]) -> torch.Tensor:
    """``lam * x + (1 - lam) * partner`` (Zhang et al. 2018, MixUp, Eq. 1) in the images' dtype.

    Args:
        x: (C,H,W) or (N,C,H,W) images.
        partner: partners, same shape as ``x``.
        lam: one weight, or one per image for a batch.
    """
    n = 1 if x.dim() == 3 else x.shape[0]
    lam_t = torch.as_tensor(lam, dtype=torch.float64).to(x.dtype).reshape(-1)
    lam_t = lam_t.expand(n).reshape((-1, 1, 1, 1) if x.dim() == 4 else (1, 1, 1)).to(x.device)
    return lam_t * x + (1 - lam_t) * partner


def reconstruct_cutmix(x: torch.Tensor, partner: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """Copy of ``x`` (...,C,H,W) with ``box = (top, left, height, width)`` pasted from ``partner``."""
    top, left, h, w = (int(v) for v in box)
    out = x.clone()
    out[..., top : top + h, left : left + w] = partner[..., top : top + h, left : left + w]
    return out


def content_hash(images: torch.Tensor) -> str:
    """SHA-256 hex digest of the exact bytes of ``images``, prefixed by its dtype and shape."""
    flat = images.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}|{tuple(images.shape)}|".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _partners(
    variant: Variant, images: torch.Tensor, labels: torch.Tensor, ids: list[str], pool: PartnerPool | None
) -> tuple[list[torch.Generator], list[Params], torch.Tensor]:
    """Per-image generators, partner records and partner images (N,C,H,W) for MixUp/CutMix."""
    if pool is None:
        raise ConfigError(f"augmentation {variant.name!r} needs partner_pool (the full image list)")
    gens, records = [], []
    for image_id, label in zip(ids, labels.tolist()):
        known = pool.label_of.get(image_id)
        if known is not None and known != label:
            raise DataError(f"partner_pool: image {image_id!r} has label {known}, the batch says {label}")
        g = image_generator(variant.augmentation, int(variant.seed_or_param), image_id)
        p = draw_partner(label, pool, g)
        gens.append(g)
        records.append({"partner_index": p, "partner_id": pool.ids[p], "partner_label": pool.labels[p]})
    partners = pool.fetch([r["partner_index"] for r in records]).to(images.device, images.dtype)
    if partners.shape != images.shape:
        raise DataError(
            f"partner_pool: partner images {tuple(partners.shape)} != batch {tuple(images.shape)}"
        )
    return gens, records, partners


@AUGMENTATIONS.register("mixup")
def _apply_mixup(
    variant: Variant, images: torch.Tensor, labels: torch.Tensor, ids: list[str], pool: PartnerPool | None
) -> Applied:
    gens, records, partners = _partners(variant, images, labels, ids, pool)
    lams = [draw_lambda(g) for g in gens]
    for rec, lam in zip(records, lams):
        rec["lam"] = lam
    return reconstruct_mixup(images, partners, lams), records


@AUGMENTATIONS.register("cutmix")
def _apply_cutmix(
    variant: Variant, images: torch.Tensor, labels: torch.Tensor, ids: list[str], pool: PartnerPool | None
) -> Applied:
    gens, records, partners = _partners(variant, images, labels, ids, pool)
    height, width = images.shape[-2:]
    out = torch.empty_like(images)
    for i, (g, rec) in enumerate(zip(gens, records)):
        lam = draw_lambda(g)
        box = cutmix_box(height, width, lam, g)
        rec.update(lam_drawn=lam, box=list(box), lam=1.0 - box[2] * box[3] / (height * width))
        out[i] = reconstruct_cutmix(images[i], partners[i], box)
    return out, records


@AUGMENTATIONS.register("resize")
def _apply_resize(
    variant: Variant, images: torch.Tensor, labels: torch.Tensor, ids: list[str], pool: PartnerPool | None
) -> Applied:
    size = int(variant.seed_or_param)
    return resize(images, size), [{"size": [size, size]} for _ in ids]


@AUGMENTATIONS.register("rotation")
def _apply_rotation(
    variant: Variant, images: torch.Tensor, labels: torch.Tensor, ids: list[str], pool: PartnerPool | None
) -> Applied:
    angle = float(variant.seed_or_param)
    return rotate(images, angle), [{"angle": angle} for _ in ids]


@AUGMENTATIONS.register("crop")
def _apply_crop(
    variant: Variant, images: torch.Tensor, labels: torch.Tensor, ids: list[str], pool: PartnerPool | None
) -> Applied:
    height, width = images.shape[-2:]
    out = torch.empty_like(images)
    records = []
    for i, image_id in enumerate(ids):
        box = crop_params(height, width, image_generator("crop", int(variant.seed_or_param), image_id))
        out[i] = TF.resized_crop(
            images[i], *box, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True
        )
        records.append({"box": list(box), "size": [height, width]})
    return out, records


def apply_variant(
    variant: Variant,
    images: torch.Tensor,
    labels: torch.Tensor,
    ids: Sequence[str],
    partner_pool: PartnerPool | None = None,
) -> AugmentedBatch:
    """Apply ``variant`` to a batch; every image's draws depend only on (variant, its id).

    Args:
        variant: what to apply.
        images: (N,C,H,W) normalised float images (not modified).
        labels: (N,) class of each image; also the target after the transformation.
        ids: N stable image ids (e.g. relative paths), keys of the per-image random streams.
        partner_pool: the full image list MixUp/CutMix partners come from (required for those).

    Returns:
        The transformed batch, its targets and one JSON-able parameter dict per image.
    """
    ids = [str(i) for i in ids]
    if images.dim() != 4 or not images.is_floating_point():
        raise DataError(f"images must be a float (N,C,H,W) tensor, got {images.dtype} {tuple(images.shape)}")
    labels = torch.as_tensor(labels).reshape(-1).long()
    if labels.numel() != images.shape[0] or len(ids) != images.shape[0]:
        raise DataError(f"{images.shape[0]} images but {labels.numel()} labels and {len(ids)} ids")
    out, params = AUGMENTATIONS.get(variant.augmentation)(variant, images, labels, ids, partner_pool)
    return AugmentedBatch(out, labels.clone(), tuple(ids), params, variant)


STUDY_VARIANTS: tuple[Variant, ...] = tuple(study_variants(224))
