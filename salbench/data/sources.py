"""Resolve the data section of a config into a list of images, class names and preprocessing.

Three kinds share one loading path: ``embedded`` (the generated benchmark, written in the ImageNet
layout, generated on first use), ``imagenet`` (root + list CSV + ILSVRC XML boxes) and ``imagefolder``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from salbench.config import Config
from salbench.data.annotations import read_annotation
from salbench.data.listing import ImageRecord, read_list_csv, read_utf8, scan_image_folder
from salbench.data.transforms import Preprocess
from salbench.errors import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """The images a run explains, in list order.

    Attributes:
        name: dataset id written to results (``embedded``, ``imagenet``, or the folder name).
        root: data root.
        records: listed images, in order (``limit`` already applied).
        class_names: class index -> name.
        preprocess: resize/crop/normalisation.
        annotations: folder of ``<stem>.xml`` box files, or None.
        masks: folder of ``<stem>.png`` object masks, or None.
    """

    name: str
    root: Path
    records: tuple[ImageRecord, ...]
    class_names: tuple[str, ...]
    preprocess: Preprocess
    annotations: Path | None = None
    masks: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ids(self) -> list[str]:
        return [r.image_id for r in self.records]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "root": str(self.root),
            "n_images": len(self.records),
            "num_classes": self.num_classes,
            "preprocess": dataclasses.asdict(self.preprocess),
            "annotations": str(self.annotations) if self.annotations else None,
            "masks": str(self.masks) if self.masks else None,
        }


def _resolve(root: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else root / p


def embedded_root(cfg: Config) -> Path:
    """Where the embedded benchmark lives (``data.root`` or ``<output_root>/benchmark``)."""
    return Path(cfg.data.root) if cfg.data.root else Path(cfg.run.output_root) / "benchmark"


def ensure_embedded(cfg: Config, progress: bool = True) -> Path:
    """Generate the embedded benchmark if it is not on disk yet (a no-op when it is); return its root."""
    from salbench.data.embedded import BenchmarkSpec, generate_benchmark

    e = cfg.data.embedded
    spec = BenchmarkSpec(image_size=e.image_size, n_train=e.n_train, n_val=e.n_val, n_eval=e.n_eval)
    root = embedded_root(cfg)
    generate_benchmark(root, seed=e.seed, spec=spec, progress=progress)
    return root


def imagenet_class_names() -> tuple[str, ...]:
    """ImageNet class names in torchvision's index order (shipped with torchvision, no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def preprocess_for(cfg: Config) -> Preprocess:
    """The resize/crop/normalisation the run's data kind applies (what :func:`open_data` would use)."""
    d = cfg.data
    side = d.embedded.image_size if d.kind == "embedded" else 0
    return Preprocess(d.resize or side or 256, d.crop or side or 224, d.mean, d.std)


def class_names_for(cfg: Config, num_classes: int) -> tuple[str, ...]:
    """Class index -> name for the run's data kind without opening the data (indices when unknown)."""
    if cfg.data.kind == "embedded":
        from salbench.data.shapes import CLASS_NAMES

        names: tuple[str, ...] = CLASS_NAMES
    elif cfg.data.kind == "imagenet" or num_classes == 1000:
        names = imagenet_class_names()
    elif cfg.data.root and Path(cfg.data.root).is_dir():
        names = tuple(scan_image_folder(Path(cfg.data.root))[1])
    else:
        names = ()
    return names if len(names) == num_classes else tuple(str(i) for i in range(num_classes))


def open_data(cfg: Config, split: str | None = None, limit: int | None = None) -> DataSource:
    """Resolve ``cfg.data`` into a :class:`DataSource`.

    Args:
        cfg: run configuration.
        split: embedded split (``train``/``val``/``eval``); default ``cfg.data.split``.
        limit: keep the first N images; default ``cfg.run.limit`` (0 = all).
    """
    d = cfg.data
    limit = cfg.run.limit if limit is None else limit
    if d.kind == "embedded":
        root = ensure_embedded(cfg)
        split = split or d.split
        class_names = tuple(read_utf8(root / "classes.txt", "class list").split())
        size = d.embedded.image_size
        preprocess = Preprocess(d.resize or size, d.crop or size, d.mean, d.std)
        records = read_list_csv(_resolve(root, d.list_csv or f"{split}.csv"), root, len(class_names))
        ann = _resolve(root, d.annotations or f"annotations/{split}")
        masks = _resolve(root, d.masks or f"masks/{split}")
        name = "embedded"
    elif d.kind == "imagenet":
        if not d.root:
            raise DataError("data.root is required for data.kind=imagenet (the ILSVRC2012 validation folder)")
        if not d.list_csv:
            raise DataError(
                "data.list_csv is required for data.kind=imagenet ('relative/path.JPEG,label' lines)"
            )
        root = Path(d.root)
        class_names = imagenet_class_names()
        preprocess = Preprocess(d.resize or 256, d.crop or 224, d.mean, d.std)
        records = read_list_csv(_resolve(root, d.list_csv), root, len(class_names))
        ann = _resolve(root, d.annotations) if d.annotations else None
        masks = _resolve(root, d.masks) if d.masks else None
        name = "imagenet"
    else:
        root = Path(d.root)
        recs, classes = scan_image_folder(root)
        records, class_names = recs, tuple(classes)
        preprocess = Preprocess(d.resize or 256, d.crop or 224, d.mean, d.std)
        ann = _resolve(root, d.annotations) if d.annotations else None
        masks = _resolve(root, d.masks) if d.masks else None
        name = root.name
    if ann is not None and not ann.is_dir():
        raise DataError(f"annotations folder {str(ann)!r} does not exist")
    if limit and limit > 0:
        records = records[:limit]
    return DataSource(name, root, tuple(records), class_names, preprocess, ann, masks)


def load_image(source: DataSource, record: ImageRecord) -> torch.Tensor:
    """Load and preprocess one image -> (3,H,W) normalised; a one-line DataError if unreadable/truncated."""
    try:
        with Image.open(record.path) as img:
            img.load()
            return source.preprocess(img)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{record.source}: image {str(record.path)!r} cannot be read ({exc})") from None


def load_boxes(source: DataSource, record: ImageRecord) -> np.ndarray | None:
    """Ground-truth boxes (K,4) in the model input frame, or None when the source has no annotations."""
    if source.annotations is None:
        return None
    ann = read_annotation(source.annotations / f"{record.stem}.xml")
    return source.preprocess.boxes(ann.boxes, ann.width, ann.height)


def load_mask(source: DataSource, record: ImageRecord) -> torch.Tensor | None:
    """Object mask (H,W) bool in the model input frame, or None when the source has no masks."""
    if source.masks is None:
        return None
    path = source.masks / f"{record.stem}.png"
    try:
        with Image.open(path) as m:
            m.load()
            return source.preprocess.mask(m)
    except (OSError, ValueError) as exc:
        raise DataError(f"mask {str(path)!r} cannot be read ({exc})") from None


def iter_batches(
    source: DataSource, batch_size: int, rows: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, images (B,3,H,W), labels (B,))`` in list order (optionally only ``rows``)."""
    idx = np.arange(len(source.records)) if rows is None else np.asarray(rows, dtype=np.int64)
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        recs = [source.records[i] for i in chunk]
        images = torch.stack([load_image(source, r) for r in recs])
        labels = torch.tensor([r.label for r in recs], dtype=torch.long)
        yield chunk, images, labels
