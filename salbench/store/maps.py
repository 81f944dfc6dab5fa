"""Resumable, shardable store of saliency maps (SPEC section 4); per-image export: :mod:`.export`.

One store = one model x label set x method: a zarr v3 group holding ``maps`` ``(n_images, H, W)``
float32 (chunks of ``chunk_rows`` rows, Blosc-zstd + CRC32C, NaN fill), ``done`` ``(n_images,)`` bool
(the completion record, chunked like ``maps``: one small object per row block), ``ids`` (UTF-8 strings,
image-list order) and JSON attributes: the caller's metadata plus, under ``salbench_store``, the format
version, map shape and ``chunk_rows``.

Guarantees:

- **Kill safety.** :meth:`MapStore.write` stores the maps, then marks their rows complete, so a process
  killed at any point (SIGKILL included) leaves every row complete with its final map or pending; a
  rerun recomputes only pending rows. Chunks are never torn by a kill: zarr 3.1.6's ``LocalStore``
  writes each chunk to ``<key>.<uuid>.partial`` and renames it over the key (``_atomic_write`` in
  ``zarr/storage/_local.py``). Killed writes may leave ``.partial`` files, or ``.<name>.tmp-*`` /
  ``.<name>.trash-*`` folders beside the store; they are never read. Nothing is fsync'ed: after a
  power loss a chunk may be truncated; CRC32C makes it fail to decode (reads raise
  :class:`DataError`) and :meth:`MapStore.verify` resets its rows to pending.
- **Sharding.** Processes may fill disjoint row ranges at once if no two write rows of the same
  ``chunk_rows`` block (zarr rewrites whole chunks: writers sharing one lose updates). :func:`shard_rows`
  gives aligned ranges; ``MapStore.open(..., shard=range)`` makes :meth:`~MapStore.write` refuse others.
- **Creation race.** A new store is built in a temporary sibling folder and renamed into place; a
  process losing the race discards its copy and opens (and checks) the winner's. ``overwrite=True``,
  :meth:`~MapStore.update_attrs` and :meth:`~MapStore.verify` are single-process operations.
- **No unpickling.** Only numeric and UTF-8 string arrays.

A resumed run ends with exactly the maps of an uninterrupted one when a row's map depends only on that
row (deterministic methods, or per-image seeds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from salbench.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_META_KEY = "salbench_store"


def _json_attrs(attrs: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Return ``attrs`` as plain JSON values (tuples become lists) or raise :class:`ConfigError`."""
    attrs = {} if attrs is None else attrs
    if not isinstance(attrs, dict):
        raise ConfigError(f"{where}: attrs must be a dict, got {type(attrs).__name__}")
    if _META_KEY in attrs:
        raise ConfigError(f"{where}: attrs key {_META_KEY!r} is reserved for the store format")
    try:
        return json.loads(json.dumps(attrs, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: attrs must be JSON-serialisable (finite numbers): {exc}") from None


def _check_ids(ids: Sequence[str], path: Path) -> list[str]:
    """Return ``ids`` as a list of unique non-empty strings or raise :class:`DataError`."""
    out = list(ids)
    if not out:
        raise DataError(f"map store {path}: the image id list is empty")
    bad = next((i for i in out if not isinstance(i, str) or not i or "\x00" in i), None)
    if bad is not None:
        raise DataError(f"map store {path}: image id {bad!r} is not a non-empty string")
    seen: set[str] = set()
    for i in out:
        if i in seen:
            raise DataError(f"map store {path}: image id {i!r} occurs more than once")
        seen.add(i)
    return out


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def shard_rows(n_images: int, shard_index: int, n_shards: int, chunk_rows: int = 32) -> range:
    """Rows of shard ``shard_index`` of ``n_shards``: whole ``chunk_rows`` blocks, split evenly.

    Shards are disjoint, cover ``range(n_images)`` and never share a chunk; some are empty when there
    are fewer blocks than shards.
    """
    n_images = _positive(n_images, "n_images")
    n_shards = _positive(n_shards, "n_shards")
    chunk_rows = _positive(chunk_rows, "chunk_rows")
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or not 0 <= shard_index < n_shards:
        raise ConfigError(f"shard_index must be in [0, {n_shards}), got {shard_index!r}")
    n_blocks = -(-n_images // chunk_rows)
    first = shard_index * n_blocks // n_shards
    last = (shard_index + 1) * n_blocks // n_shards
    return range(min(first * chunk_rows, n_images), min(last * chunk_rows, n_images))


def _create(path: Path, ids: list[str], shape: tuple[int, int], chunk_rows: int, attrs: dict) -> None:
    """Build the store in a temporary sibling folder and rename it to ``path``; losing a race is fine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        group = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w-")
        n, rows, crc = len(ids), min(chunk_rows, len(ids)), Crc32cCodec()
        blosc = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
        maps_kw = {"dtype": "float32", "fill_value": np.nan, "compressors": [blosc, crc]}
        group.create_array("maps", shape=(n, *shape), chunks=(rows, *shape), **maps_kw)
        group.create_array(
            "done", shape=(n,), chunks=(rows,), dtype="bool", fill_value=False, compressors=[crc]
        )
        id_array = group.create_array(
            "ids", shape=(n,), chunks=(n,), dtype=str, compressors=[ZstdCodec(), crc]
        )
        id_array[:] = np.array(ids, dtype=np.dtypes.StringDType())
        meta = {"format_version": FORMAT_VERSION, "shape": list(shape), "chunk_rows": chunk_rows}
        group.update_attributes({_META_KEY: meta, **attrs})
        try:
            os.rename(tmp, path)  # atomic; fails on a non-empty folder, i.e. when another process won
        except OSError:
            if not (path / "zarr.json").is_file():
                raise DataError(f"map store {path}: exists and is not a map store") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class MapStore:
    """Chunked, compressed, resumable array of saliency maps ``(n_images, H, W)`` float32.

    Create or resume with :meth:`open`, read with :meth:`read_only`; see the module docstring for the
    kill-safety, sharding and creation guarantees.
    """

    def __init__(self, path: Path, group: zarr.Group, read_only: bool) -> None:
        self.path = path
        self._group = group
        self._read_only = read_only
        self._maps = group["maps"]
        self._done = group["done"]
        self._ids = [str(i) for i in group["ids"][:]]
        meta = dict(group.attrs).get(_META_KEY, {})
        self.shape: tuple[int, int] = tuple(meta.get("shape", ()))  # type: ignore[assignment]
        self.chunk_rows: int = int(meta.get("chunk_rows", 0))
        self.shard: range | None = None
        if self._maps.shape != (len(self._ids), *self.shape) or self._done.shape != (len(self._ids),):
            raise DataError(f"map store {path}: arrays maps/done/ids have inconsistent shapes")

    @classmethod
    def _load(cls, path: str | os.PathLike, read_only: bool) -> MapStore:
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise DataError(f"map store {path}: not found (no zarr.json)")
        try:
            store = zarr.storage.LocalStore(path, read_only=read_only)
            group = zarr.open_group(store, mode="r" if read_only else "r+")
            meta = dict(group.attrs).get(_META_KEY)
            if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
                raise DataError(f"map store {path}: not a salbench map store of format {FORMAT_VERSION}")
            return cls(path, group, read_only)
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise DataError(f"map store {path}: unreadable ({type(exc).__name__}: {exc})") from None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        ids: Sequence[str],
        shape: tuple[int, int],
        chunk_rows: int = 32,
        attrs: dict[str, Any] | None = None,
        overwrite: bool = False,
        *,
        shard: range | None = None,
    ) -> MapStore:
        """Create the store at ``path``, or re-open it for resuming after checking it matches.

        Args:
            path: folder of the zarr group.
            ids: image ids in image-list order (unique strings); row ``i`` holds image ``ids[i]``.
            shape: map size ``(H, W)``.
            chunk_rows: rows per chunk; shard boundaries must be multiples of it.
            attrs: JSON metadata (method description, config, protocol). On re-open it must equal the
                stored metadata, so runs with different settings never mix; record volatile values
                (timings, hosts) with :meth:`update_attrs` instead.
            overwrite: delete an existing store first (single process only).
            shard: if given, a ``chunk_rows``-aligned range (see :func:`shard_rows`) that :meth:`write`
                is restricted to.

        Raises:
            DataError: the existing store differs in ids, shape, chunk_rows or attrs, or is unreadable.
            ConfigError: invalid shape, chunk_rows, attrs or shard.
        """
        path = Path(path)
        id_list = _check_ids(ids, path)
        if len(tuple(shape)) != 2:
            raise ConfigError(f"map store {path}: shape must be (H, W), got {shape!r}")
        hw = (_positive(shape[0], "shape[0]"), _positive(shape[1], "shape[1]"))
        chunk_rows = _positive(chunk_rows, "chunk_rows")
        attrs_json = _json_attrs(attrs, f"map store {path}")
        if overwrite and path.exists():  # move aside first: a kill never leaves a half-deleted store
            trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex}")
            os.rename(path, trash)
            shutil.rmtree(trash)
        if not (path / "zarr.json").is_file():
            _create(path, id_list, hw, chunk_rows, attrs_json)
        store = cls._load(path, read_only=False)
        store._check_matches(id_list, hw, chunk_rows, attrs_json)
        if shard is not None:
            store.shard = store._check_shard(shard)
        return store

    @classmethod
    def open_existing(cls, path: str | os.PathLike) -> MapStore:
        """Open an existing store for repair (:meth:`verify`) without checking it against a run."""
        return cls._load(path, read_only=False)

    @classmethod
    def read_only(cls, path: str | os.PathLike) -> MapStore:
        """Open an existing store for reading; writing methods raise :class:`DataError`."""
        return cls._load(path, read_only=True)

    def _check_matches(self, ids: list[str], shape: tuple[int, int], chunk_rows: int, attrs: dict) -> None:
        """Raise :class:`DataError` unless the store was made for these ids, shape, chunk_rows and attrs."""
        hint = "use another path or overwrite"
        if ids != self._ids:
            k = next(
                (k for k, (a, b) in enumerate(zip(ids, self._ids)) if a != b), min(len(ids), len(self._ids))
            )
            raise DataError(
                f"map store {self.path}: image ids differ from the stored ones ({len(ids)} given, "
                f"{len(self._ids)} stored, first difference at row {k}); {hint}"
            )
        if (shape, chunk_rows) != (self.shape, self.chunk_rows):
            raise DataError(
                f"map store {self.path}: map shape {shape} / chunk_rows {chunk_rows} != stored "
                f"{self.shape} / {self.chunk_rows}; {hint}"
            )
        # Only the keys the caller passes must match: keys added later with update_attrs()
        # (timings, last run) describe a run, not the store's identity.
        stored = self.attrs
        keys = sorted(k for k in attrs if attrs.get(k) != stored.get(k))
        if keys:
            raise DataError(f"map store {self.path}: attrs differ from the stored ones in {keys}; {hint}")

    def _check_shard(self, shard: range) -> range:
        n, c = len(self._ids), self.chunk_rows
        ok = isinstance(shard, range) and shard.step == 1 and 0 <= shard.start <= shard.stop <= n
        if ok and len(shard):  # an empty shard (a rank with no rows) writes nothing: any bounds do
            ok = not (shard.start % c or (shard.stop % c and shard.stop != n))
        if not ok:
            raise ConfigError(
                f"map store {self.path}: shard {shard!r} must be a step-1 range within [0, {n}] whose "
                f"bounds are multiples of chunk_rows={c} (or end at {n}); use shard_rows()"
            )
        return shard

    @property
    def ids(self) -> list[str]:
        """Image ids in row order."""
        return list(self._ids)

    @property
    def attrs(self) -> dict[str, Any]:
        """The caller's metadata (a copy, without the store's own format record)."""
        return {k: v for k, v in json.loads(json.dumps(dict(self._group.attrs))).items() if k != _META_KEY}

    def update_attrs(self, attrs: dict[str, Any]) -> None:
        """Merge JSON ``attrs`` into the stored metadata (single process; concurrent updates may be lost)."""
        self._writable()
        self._group.update_attributes(_json_attrs(attrs, f"map store {self.path}"))

    @property
    def complete(self) -> bool:
        """True when every row has been written."""
        return bool(np.all(self._read(self._done, slice(None))))

    def pending(self, rows: range | None = None) -> np.ndarray:
        """Indices (int64, ascending for a positive-step range) of rows in ``rows`` not yet complete."""
        n = len(self._ids)
        rows = range(n) if rows is None else rows
        if not isinstance(rows, range) or (len(rows) and (min(rows) < 0 or max(rows) >= n)):
            raise ValueError(f"rows must be a range within [0, {n}), got {rows!r}")
        idx = np.arange(rows.start, rows.stop, rows.step, dtype=np.int64)
        if idx.size == 0:
            return idx
        lo = int(idx.min())
        done = self._read(self._done, slice(lo, int(idx.max()) + 1))
        return idx[~done[idx - lo]]

    def _rows(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Validate ``rows`` (1-D, integer, unique, in range) and return them as int64."""
        arr = np.asarray(rows)
        n = len(self._ids)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"rows must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"rows must lie in [0, {n}), got min {arr.min()} max {arr.max()}")
        if np.unique(arr).size != arr.size:
            raise ValueError("rows must not repeat")
        return arr

    def _writable(self) -> None:
        if self._read_only:
            raise DataError(f"map store {self.path}: opened read-only")

    @contextlib.contextmanager
    def _damage_is_data_error(self, name: str) -> Iterator[None]:
        """Turn the ValueError of a chunk failing its checksum into a one-line :class:`DataError`."""
        try:
            yield
        except ValueError as exc:
            msg = f"map store {self.path}: damaged chunk in {name!r} ({exc}); run MapStore.verify()"
            raise DataError(msg) from None

    def _read(self, array: zarr.Array, selection: np.ndarray | slice) -> np.ndarray:
        with self._damage_is_data_error(array.basename):
            return array.oindex[selection] if isinstance(selection, np.ndarray) else array[selection]

    def write(self, rows: np.ndarray | Sequence[int], maps: np.ndarray) -> None:
        """Store ``maps[k]`` as row ``rows[k]``, then mark those rows complete.

        Args:
            rows: ``(B,)`` distinct row indices (inside ``shard`` when one was given).
            maps: ``(B, H, W)`` finite float32 maps.

        Raises:
            ValueError: bad rows, or maps of the wrong dtype/shape or with NaN/inf.
            DataError: the store is read-only or a chunk it must update is damaged.
        """
        self._writable()
        rows = self._rows(rows)
        if self.shard is not None and not np.isin(rows, self.shard).all():
            raise ValueError(f"rows outside this writer's shard {self.shard!r} of map store {self.path}")
        if not isinstance(maps, np.ndarray) or maps.dtype != np.float32:
            raise ValueError(f"maps must be a float32 numpy array, got {getattr(maps, 'dtype', type(maps))}")
        if maps.shape != (rows.size, *self.shape):
            raise ValueError(f"maps must have shape {(rows.size, *self.shape)}, got {maps.shape}")
        if not np.isfinite(maps).all():
            raise ValueError(f"maps contain NaN or inf ({int((~np.isfinite(maps)).sum())} values)")
        if rows.size == 0:
            return
        order = np.argsort(rows)
        with self._damage_is_data_error("maps"):
            self._maps.oindex[rows[order]] = maps[order]
        self._mark_done(rows[order])  # strictly after the data: a kill in between only causes a recompute

    def _mark_done(self, rows: np.ndarray) -> None:
        self._done.oindex[rows] = True

    def read(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Maps ``(len(rows), H, W)`` float32 of complete rows, in the order given.

        Raises:
            DataError: some rows are not complete, or a chunk is damaged.
        """
        rows = self._rows(rows)
        if rows.size == 0:
            return np.zeros((0, *self.shape), dtype=np.float32)
        done = self._read(self._done, rows)
        if not done.all():
            missing = rows[~done]
            raise DataError(
                f"map store {self.path}: {missing.size} requested rows are not complete (first: row "
                f"{missing[0]}, id {self._ids[missing[0]]!r})"
            )
        return self._read(self._maps, rows)

    def read_all(self) -> np.ndarray:
        """All maps ``(n_images, H, W)`` float32; the store must be complete."""
        return self.read(np.arange(len(self._ids)))

    def verify(self) -> int:
        """Decode every block; reset blocks whose chunks are damaged or missing to pending. Rows reset.

        A chunk that fails its checksum (an OS crash, a truncated file) or that is gone (deleted: it then
        reads as the NaN fill value although its rows are marked complete) makes its whole block pending,
        so the next generation run recomputes exactly those rows. Reads the whole store; single process,
        or only on blocks no other writer is filling.
        """
        self._writable()
        n, c = len(self._ids), self.chunk_rows
        reset = 0
        for start in range(0, n, c):
            block = slice(start, min(start + c, n))
            was_done = block.stop - block.start
            try:
                done = np.asarray(self._done[block], dtype=bool)
                was_done = int(done.sum())
                maps = self._maps[block]
                if np.isfinite(maps[done].reshape(was_done, -1)).all():
                    continue
                why = "missing"
            except ValueError:
                why = "damaged"
            logger.warning("map store %s: %s chunk at rows %d-%d reset", self.path, why, start, block.stop)
            # Writing a whole block never reads the damaged chunk; fill-valued chunks are deleted.
            self._done[block] = False
            self._maps[block] = np.nan
            reset += was_done
        return reset
