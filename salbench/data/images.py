"""Image sources: what the stages iterate over (files of a data set, or materialised augmented tensors).

Stages only need ids, labels, the input size and ``load(rows)``; the evaluation crop of a data set and
the transformed images of an augmentation variant are both :class:`ImageSource` s, so diagnostics,
generation and evaluation run unchanged on either.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from salbench.data.sources import DataSource, load_image
from salbench.errors import DataError
from salbench.store.outputs import atomic_path, write_json


class ImageSource(abc.ABC):
    """Normalised images (N,C,H,W) addressed by row, with ids and labels in list order."""

    ids: list[str]
    labels: np.ndarray
    size: tuple[int, int]

    @abc.abstractmethod
    def load(self, rows: np.ndarray) -> torch.Tensor:
        """Images of ``rows`` as a (B,C,H,W) float32 tensor."""

    def __len__(self) -> int:
        return len(self.ids)

    def batches(
        self, batch_size: int, rows: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Yield ``(rows, images, labels)`` in order (optionally only ``rows``)."""
        idx = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            yield chunk, self.load(chunk), torch.as_tensor(self.labels[chunk], dtype=torch.long)


class FileImages(ImageSource):
    """The listed image files of a :class:`DataSource`, preprocessed on load."""

    def __init__(self, source: DataSource) -> None:
        self.source = source
        self.ids = source.ids
        self.labels = np.array([r.label for r in source.records], dtype=np.int64)
        side = source.preprocess.crop or source.preprocess.resize
        self.size = (side, side)

    def load(self, rows: np.ndarray) -> torch.Tensor:
        return torch.stack([load_image(self.source, self.source.records[int(i)]) for i in rows])


class ArrayImages(ImageSource):
    """Materialised tensors in a folder: ``images.npy`` (N,C,H,W) float32, ``index.json`` (ids, labels).

    Written once by :func:`save_array_images` (atomic), read memory-mapped, never unpickled.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "index.json"
        if not index.is_file():
            raise DataError(f"{str(index)!r} not found: materialise the images first")
        meta = json.loads(index.read_text())
        self.ids = list(meta["ids"])
        self.labels = np.asarray(meta["labels"], dtype=np.int64)
        self._array = np.load(self.folder / "images.npy", mmap_mode="r", allow_pickle=False)
        self.size = (int(self._array.shape[2]), int(self._array.shape[3]))
        self.meta = meta

    def load(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._array[np.asarray(rows, dtype=np.int64)]))


def save_array_images(
    folder: str | Path, images: np.ndarray, ids: list[str], labels: np.ndarray, extra: dict
) -> ArrayImages:
    """Write ``images.npy`` then ``index.json`` (its presence marks the folder complete)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "images.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(images, dtype=np.float32), allow_pickle=False)
    write_json(out / "index.json", {"ids": list(ids), "labels": [int(v) for v in labels], **extra})
    return ArrayImages(out)
