"""Image sources: what the stages iterate over (files of a data set, or materialised augmented tensors).

Stages only need ids, labels, the input size and ``load(rows)``; the evaluation crop of a data set and
the transformed images of an augmentation variant are both :class:`ImageSource` s, so diagnostics,
generation and evaluation run unchanged on either. :func:`stream` feeds a device: batches decoded by a
``DataLoader``'s worker processes ahead of the model, in pinned memory, copied without blocking.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from salbench.data.sources import DataSource, load_image
from salbench.errors import DataError, SalbenchError
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


MAX_AUTO_WORKERS = 8
"""Most decoding processes ``workers=-1`` starts per GPU process."""


def loader_workers(requested: int, device: str | torch.device) -> int:
    """Decoding processes of :func:`stream`: ``requested`` when >= 0; for -1 none on CPU (decoding
    would take cores from the model) and on CUDA up to :data:`MAX_AUTO_WORKERS`, sharing the node's
    CPUs with the other local processes (``LOCAL_WORLD_SIZE`` under torchrun)."""
    if requested >= 0:
        return requested
    if torch.device(device).type != "cuda":
        return 0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) // local - 1))


class _RowBatches(Dataset):
    """Item ``i``: the images of ``batches[i]``; an error is returned, not raised, so that it reaches
    the caller as its own one-line error rather than as a worker's traceback."""

    def __init__(self, source: ImageSource, batches: Sequence[np.ndarray]) -> None:
        self.source, self.batches = source, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor | SalbenchError:
        try:
            return self.source.load(self.batches[i])
        except SalbenchError as exc:
            return exc


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


def stream(
    source: ImageSource, batches: Sequence[np.ndarray], device: str | torch.device, workers: int = 0
) -> Iterator[torch.Tensor]:
    """The images of each row array of ``batches``, in order, on ``device``.

    With ``workers`` > 0 a ``DataLoader`` decodes up to two batches per worker ahead of the model (one
    thread each); on CUDA batches are staged in pinned memory and copied with ``non_blocking=True``, so
    decoding and the copy overlap the model's work. The images are the same whatever ``workers`` is.

    Raises:
        SalbenchError: an image cannot be read (raised where the batch is consumed).
    """
    dev = torch.device(device)
    pin = dev.type == "cuda"
    if workers <= 0 and not pin:
        for rows in batches:
            yield source.load(rows).to(dev)
        return
    loader = DataLoader(
        _RowBatches(source, batches),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=_one_thread if workers > 0 else None,
    )
    for images in loader:
        if isinstance(images, SalbenchError):
            raise images
        yield images.to(dev, non_blocking=pin)
