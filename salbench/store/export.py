"""Export of a map store to one ``<image id>.npy`` per image (the original study's layout).

Ids with ``/`` become nested folders; every file is written atomically and never outside the output
folder; arrays are saved without pickling (``allow_pickle=False``).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path, PurePosixPath

import numpy as np

from salbench.errors import DataError
from salbench.store.maps import MapStore

logger = logging.getLogger(__name__)


def _export_path(out_dir: Path, image_id: str, store_path: Path) -> Path:
    """``out_dir/<id>.npy`` for a normalised relative POSIX id; anything else raises :class:`DataError`."""
    rel = PurePosixPath(image_id)
    if rel.is_absolute() or str(rel) != image_id or any(p in ("", ".", "..") for p in rel.parts):
        raise DataError(
            f"map store {store_path}: image id {image_id!r} is not a normalised relative path (no '..', "
            "'.', leading '/' or empty parts); cannot export it"
        )
    return out_dir.joinpath(*rel.parent.parts, rel.name + ".npy")


def _save_npy(dest: Path, array: np.ndarray, root: Path) -> None:
    """Write ``array`` to ``dest`` atomically (temporary name + rename), inside ``root``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(root):
        raise DataError(f"export: {dest} would be written outside {root} (symbolic link?)")
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def export_npy(store_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> int:
    """Write one ``<out_dir>/<id>.npy`` ``(H, W)`` float32 per image (the original study's layout).

    Ids with ``/`` become nested folders. Existing files are kept unless ``overwrite``. Returns the
    number of files written.

    Raises:
        DataError: the store is missing, incomplete or damaged, or an id is not a safe relative path.
    """
    store = MapStore.read_only(store_path)
    if not store.complete:
        missing = store.pending().size
        raise DataError(f"map store {store.path}: {missing} of {len(store.ids)} maps missing; finish the run")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"export: {str(out)!r} exists and is not a folder")
    dests = [_export_path(out, i, store.path) for i in store.ids]
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    written = 0
    for start in range(0, len(dests), store.chunk_rows):
        block = range(start, min(start + store.chunk_rows, len(dests)))
        rows = np.array([r for r in block if overwrite or not dests[r].exists()], dtype=np.int64)
        for r, m in zip(rows, store.read(rows)):
            _save_npy(dests[r], m, root)
            written += 1
    logger.info("exported %d of %d maps from %s to %s", written, len(dests), store.path, out)
    return written
