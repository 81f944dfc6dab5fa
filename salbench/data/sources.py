"""Resolve the data section of a config into a list of images, class names and preprocessing.

Three kinds share one loading path: ``embedded`` (the generated benchmark, written in the ImageNet
layout, generated on first use), ``imagenet`` (root + list CSV + ILSVRC XML boxes) and ``imagefolder``
(class folders, optionally mapped to model outputs by a class index or ImageNet wnids).
:func:`open_data` resolves what the config and the data kind decide; :func:`fit_to_model` then maps the
labels to a model's outputs and completes the input with the model's own specification.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from salbench.config import Config
from salbench.data.annotations import read_annotation
from salbench.data.listing import (
    WNID,
    ImageRecord,
    read_class_index,
    read_list_csv,
    read_utf8,
    scan_image_folder,
)
from salbench.data.transforms import (
    InputSpec,
    Preprocess,
    check_inputs,
    key_name,
    kind_sides,
    resolve_preprocess,
)
from salbench.errors import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """The images a run explains, in list order.

    Attributes:
        name: dataset id written to results (``embedded``, ``imagenet``, or the folder name).
        root: data root.
        records: listed images, in order (``limit`` already applied).
        class_names: class index -> name (after :func:`fit_to_model`: one per model output).
        preprocess: conversion/resize/crop/normalisation.
        annotations: folder of ``<stem>.xml`` box files, or None.
        masks: folder of ``<stem>.png`` object masks, or None.
        class_names_source: where ``class_names`` (and the labels' meaning) came from.
        input_from: ``resize``/``crop``/``mean``/``std`` -> where the value came from.
        default_sides: the data kind's default ``(resize, crop, why)`` when it was needed.
    """

    name: str
    root: Path
    records: tuple[ImageRecord, ...]
    class_names: tuple[str, ...]
    preprocess: Preprocess
    annotations: Path | None = None
    masks: Path | None = None
    class_names_source: str = ""
    input_from: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    default_sides: tuple[int, int, str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ids(self) -> list[str]:
        return [r.image_id for r in self.records]

    def input_spec(self) -> dict[str, Any]:
        """The resolved model input: channels, sides, normalisation, classes, and where each came from."""
        p = self.preprocess
        return {
            "channels": p.channels,
            "resize": p.resize,
            "crop": p.crop,
            "mean": list(p.mean),
            "std": list(p.std),
            "num_classes": self.num_classes,
            "class_names": self.class_names_source,
            "from": dict(self.input_from),
        }

    def describe(self) -> dict:
        return {
            "name": self.name,
            "root": str(self.root),
            "n_images": len(self.records),
            "num_classes": self.num_classes,
            "preprocess": dataclasses.asdict(self.preprocess),
            "input": self.input_spec(),
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


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in torchvision's index order (sorted; timm ships the list, no
    download)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


def preprocess_for(cfg: Config, spec: InputSpec | None = None) -> Preprocess:
    """The preprocessing the run's data would get (what :func:`open_data` and :func:`fit_to_model`
    resolve) without opening the data; the images' own size is read when ``data.root`` lists them."""

    def records() -> list[ImageRecord]:
        d, root = cfg.data, Path(cfg.data.root)
        try:
            if d.kind == "imagefolder" and d.root:
                return scan_image_folder(root)[0]
            if d.kind == "imagenet" and d.root and d.list_csv:
                return read_list_csv(_resolve(root, d.list_csv), root)
        except DataError:
            pass  # no readable listing: the kind's default sides
        return []

    return resolve_preprocess(cfg, spec, lambda: kind_sides(cfg, records))[0]


def class_names_for(cfg: Config, num_classes: int) -> tuple[str, ...]:
    """Class index -> name for the run's data kind without opening the data (indices when unknown)."""
    if cfg.data.kind == "embedded":
        from salbench.data.shapes import CLASS_NAMES

        names: tuple[str, ...] = CLASS_NAMES
    elif cfg.data.class_index:
        index = read_class_index(cfg.data.class_index)
        named = {i: name for i, name in index.values()}
        names = tuple(named.get(i, str(i)) for i in range(num_classes))
    elif cfg.data.kind == "imagenet" or num_classes == 1000:
        names = imagenet_class_names()
    elif cfg.data.root and Path(cfg.data.root).is_dir():
        names = tuple(scan_image_folder(Path(cfg.data.root))[1])
    else:
        names = ()
    return names if len(names) == num_classes else tuple(str(i) for i in range(num_classes))


def open_data(cfg: Config, split: str | None = None, limit: int | None = None) -> DataSource:
    """Resolve ``cfg.data`` into a :class:`DataSource` (the preprocessing from the config and the data
    kind; :func:`fit_to_model` adds the model's own specification and class count).

    Args:
        cfg: run configuration.
        split: embedded split (``train``/``val``/``eval``); default ``cfg.data.split``.
        limit: keep the first N images; default ``cfg.run.limit`` (0 = all).
    """
    check_inputs(cfg)  # before the data is listed (or the embedded benchmark generated)
    d = cfg.data
    limit = cfg.run.limit if limit is None else limit
    if d.kind == "embedded":
        root = ensure_embedded(cfg)
        split = split or d.split
        class_names = tuple(read_utf8(root / "classes.txt", "class list").split())
        records = read_list_csv(_resolve(root, d.list_csv or f"{split}.csv"), root, len(class_names))
        ann = _resolve(root, d.annotations or f"annotations/{split}")
        masks = _resolve(root, d.masks or f"masks/{split}")
        name, names_from = "embedded", "embedded benchmark (classes.txt)"
    elif d.kind == "imagenet":
        if not d.root:
            raise DataError("data.root is required for data.kind=imagenet (the ILSVRC2012 validation folder)")
        if not d.list_csv:
            raise DataError(
                "data.list_csv is required for data.kind=imagenet ('relative/path.JPEG,label' lines)"
            )
        root = Path(d.root)
        class_names = imagenet_class_names()
        records = read_list_csv(_resolve(root, d.list_csv), root, len(class_names))
        ann = _resolve(root, d.annotations) if d.annotations else None
        masks = _resolve(root, d.masks) if d.masks else None
        name, names_from = "imagenet", "ImageNet (torchvision's class order)"
    else:
        root = Path(d.root)
        records, class_names, names_from = _folder_classes(root, d.class_index)
        ann = _resolve(root, d.annotations) if d.annotations else None
        masks = _resolve(root, d.masks) if d.masks else None
        name = root.name
    if ann is not None and not ann.is_dir():
        raise DataError(f"annotations folder {str(ann)!r} does not exist")
    preprocess, origin, sides = resolve_preprocess(cfg, None, lambda: kind_sides(cfg, lambda: records))
    if limit and limit > 0:
        records = records[:limit]
    return DataSource(
        name, root, tuple(records), class_names, preprocess, ann, masks, names_from, origin, sides
    )


def _folder_classes(root: Path, class_index: str) -> tuple[list[ImageRecord], tuple[str, ...], str]:
    """An image folder's records, class names (index -> name) and where they came from."""
    if not class_index:
        records, folders = scan_image_folder(root)
        return records, tuple(folders), "class folders in sorted order"
    index = read_class_index(class_index)
    records, _ = scan_image_folder(root, {k: v[0] for k, v in index.items()}, class_index)
    named = {i: name for i, name in index.values()}
    names = tuple(named.get(i, str(i)) for i in range(max(r.label for r in records) + 1))
    return records, names, f"class index {class_index}"


def fit_to_model(source: DataSource, cfg: Config, spec: InputSpec, model: str) -> DataSource:
    """The data as model ``model`` sees it: labels meaning its outputs, one class name per output, and
    the preprocessing resolved with its ``spec`` (config > model > data kind, see :func:`resolve_preprocess`).

    Class folders map to the model's outputs by ``data.class_index``, by ImageNet wnids when the model
    has 1000 outputs, or by sorted position when there are exactly as many folders as outputs.

    Raises:
        DataError: folders that cannot be matched to the outputs, a class index naming an output the
            model lacks (one line naming the folder or file).
        ConfigError: the resolved input does not fit together (:func:`resolve_preprocess`).
    """
    n = spec.num_classes or source.num_classes
    records, names, names_from = _fit_classes(source, cfg, n, model)
    kind = source.default_sides

    def defaults() -> tuple[int, int, str]:
        return kind if kind is not None else kind_sides(cfg, lambda: source.records)

    preprocess, origin, _ = resolve_preprocess(cfg, spec, defaults)
    return dataclasses.replace(
        source,
        records=records,
        class_names=names,
        class_names_source=names_from,
        preprocess=preprocess,
        input_from=origin,
    )


def _fit_classes(
    source: DataSource, cfg: Config, n: int, model: str
) -> tuple[tuple[ImageRecord, ...], tuple[str, ...], str]:
    records, names, names_from = source.records, source.class_names, source.class_names_source
    d = cfg.data
    if d.kind == "imagefolder" and d.class_index:
        bad = next((r for r in records if r.label >= n), None)
        if bad is not None:
            folder = PurePosixPath(bad.image_id).parts[0]
            raise DataError(
                f"class index {d.class_index!r} maps class folder {folder!r} to {bad.label}, not an output "
                f"of model {model!r} ({n} outputs)"
            )
    elif d.kind == "imagefolder" and len(names) != n:
        if n == 1000 and all(WNID.fullmatch(f) for f in names):
            wnid = {w: i for i, w in enumerate(imagenet_wnids())}
            unknown = next((f for f in names if f not in wnid), None)
            if unknown is not None:
                raise DataError(
                    f"class folder {unknown!r} of image folder {str(source.root)!r} is not an ImageNet-1k "
                    f"wnid; give {key_name('data.class_index')}"
                )
            records = tuple(
                dataclasses.replace(r, label=wnid[PurePosixPath(r.image_id).parts[0]]) for r in records
            )
            return records, imagenet_class_names(), "ImageNet wnids (torchvision's class order)"
        raise DataError(
            f"image folder {str(source.root)!r} has {len(names)} class folders but model {model!r} has {n} "
            f"outputs: give {key_name('data.class_index')} ('folder,index' lines) to say which output "
            "each folder is"
        )
    if len(names) != n and d.kind == "imagenet":
        names, names_from = tuple(str(i) for i in range(n)), f"class indices (a {n}-output model)"
    elif len(names) != n:
        names = tuple(names[i] if i < len(names) else str(i) for i in range(n))
    return records, names, names_from


def load_image(source: DataSource, record: ImageRecord) -> torch.Tensor:
    """Load and preprocess one image -> (C,H,W) normalised; a one-line DataError if unreadable/truncated."""
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
    """Yield ``(rows, images (B,C,H,W), labels (B,))`` in list order (optionally only ``rows``)."""
    idx = np.arange(len(source.records)) if rows is None else np.asarray(rows, dtype=np.int64)
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        recs = [source.records[i] for i in chunk]
        images = torch.stack([load_image(source, r) for r in recs])
        labels = torch.tensor([r.label for r in recs], dtype=torch.long)
        yield chunk, images, labels
