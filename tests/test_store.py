"""Tests of salbench/store/maps.py: bookkeeping, validation, kill-resume, concurrent shards, export."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from salbench.errors import ConfigError, DataError
from salbench.stages.cli import main as salbench_main
from salbench.store import maps as store_module
from salbench.store.export import export_npy
from salbench.store.maps import MapStore, shard_rows

WRITER = Path(__file__).with_name("_store_writer.py")
_spec = importlib.util.spec_from_file_location("_store_writer", WRITER)
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)

N, CHUNK = 40, 4
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def expected_all(n: int = N) -> np.ndarray:
    return np.stack([writer.expected_map(i) for i in range(n)])


def new_store(path: Path, n: int = 10, shape: tuple[int, int] = (3, 5), **kw) -> MapStore:
    return MapStore.open(path, [f"im{i}" for i in range(n)], shape, chunk_rows=4, **kw)


def run_writer(path: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(WRITER), str(path), str(log), "--n", str(N), "--chunk-rows", str(CHUNK)]
    return subprocess.Popen([*cmd, *extra], env=ENV)


def logged_rows(log: Path) -> list[int]:
    return [int(r) for line in log.read_text().splitlines() for r in line.split()]


def test_round_trip_and_attrs(tmp_path):
    path = tmp_path / "m" / "gradcam"
    maps = np.arange(10 * 15, dtype=np.float32).reshape(10, 3, 5) / 7
    store = new_store(path, attrs={"method": "gradcam", "params": {"k": (1, 2)}})
    store.write(np.array([9, 2, 5]), maps[[9, 2, 5]])
    store.write(np.array([0, 1, 3, 4, 6, 7, 8]), maps[[0, 1, 3, 4, 6, 7, 8]])
    store.update_attrs({"seconds": 1.5})
    back = MapStore.read_only(path)
    assert back.read_all().dtype == np.float32
    assert np.array_equal(back.read_all(), maps)
    assert np.array_equal(back.read([7, 0, 3]), maps[[7, 0, 3]])
    assert back.ids == [f"im{i}" for i in range(10)]
    assert back.attrs == {"method": "gradcam", "params": {"k": [1, 2]}, "seconds": 1.5}
    assert back.shape == (3, 5) and back.chunk_rows == 4
    meta = zarr.open_group(zarr.storage.LocalStore(path, read_only=True), mode="r").attrs["salbench_store"]
    assert meta == {"format_version": 1, "shape": [3, 5], "chunk_rows": 4}
    assert zarr.open_array(zarr.storage.LocalStore(path / "maps", read_only=True), mode="r").chunks == (
        4,
        3,
        5,
    )
    with pytest.raises(DataError, match="read-only"):
        back.write(np.array([0]), maps[:1])


def test_pending_and_complete(tmp_path):
    store = new_store(tmp_path / "s")
    assert np.array_equal(store.pending(), np.arange(10))
    assert not store.complete
    store.write(np.array([1, 5, 6]), np.ones((3, 3, 5), np.float32))
    assert np.array_equal(store.pending(), [0, 2, 3, 4, 7, 8, 9])
    assert np.array_equal(store.pending(range(4, 8)), [4, 7])
    assert np.array_equal(store.pending(range(1, 2)), np.zeros(0))
    with pytest.raises(DataError, match="2 requested rows are not complete"):
        store.read([1, 2, 3])
    with pytest.raises(ValueError, match="range within"):
        store.pending(range(5, 11))
    store.write(store.pending(), np.zeros((7, 3, 5), np.float32))
    assert store.complete and store.pending().size == 0
    assert np.array_equal(
        MapStore.read_only(tmp_path / "s").read_all().sum(axis=(1, 2)), [0, 15, 0, 0, 0, 15, 15, 0, 0, 0]
    )


def test_reopen_checks_and_overwrite(tmp_path):
    path = tmp_path / "s"
    new_store(path, attrs={"method": "rise"}).write([0], np.ones((1, 3, 5), np.float32))
    again = new_store(path, attrs={"method": "rise"})  # resuming keeps what was written
    assert np.array_equal(again.pending(), np.arange(1, 10))
    ids = [f"im{i}" for i in range(10)]
    bad = {
        "image ids differ": dict(ids=[*ids[:3], "x", *ids[4:]], shape=(3, 5)),
        "9 given": dict(ids=ids[:9], shape=(3, 5)),
        "map shape \\(5, 3\\)": dict(ids=ids, shape=(5, 3)),
        "chunk_rows 8 != stored": dict(ids=ids, shape=(3, 5), chunk_rows=8),
        "attrs differ .* \\['method'\\]": dict(ids=ids, shape=(3, 5), attrs={"method": "lime"}),
    }
    for message, kw in bad.items():
        kw = {"chunk_rows": 4, "attrs": {"method": "rise"}, **kw}
        with pytest.raises(DataError, match=message) as err:
            MapStore.open(path, **kw)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    fresh = MapStore.open(path, ids[:9], (5, 3), chunk_rows=8, overwrite=True)
    assert np.array_equal(fresh.pending(), np.arange(9)) and fresh.attrs == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary or trash folders left
    with pytest.raises(DataError, match="not found"):
        MapStore.read_only(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="not a map store"):
        new_store(tmp_path / "junk")
    with pytest.raises(DataError, match="more than once"):
        MapStore.open(tmp_path / "d", ["a", "b", "a"], (2, 2))
    with pytest.raises(ConfigError, match="JSON"):
        new_store(tmp_path / "j", attrs={"f": float("nan")})


def test_losing_the_creation_race_keeps_the_winner(tmp_path):
    path = tmp_path / "s"
    winner = new_store(path, attrs={"run": 1})
    winner.write([2], np.full((1, 3, 5), 2.0, np.float32))
    # What a second process does when the winner's rename lands between its existence check and its own.
    store_module._create(path, ["x", "y"], (2, 2), 4, {"run": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    kept = MapStore.read_only(path)
    assert kept.ids == [f"im{i}" for i in range(10)] and kept.attrs == {"run": 1}
    assert np.array_equal(kept.read([2]), np.full((1, 3, 5), 2.0, np.float32))
    with pytest.raises(DataError, match="image ids differ"):
        MapStore.open(path, ["x", "y"], (2, 2), chunk_rows=4, attrs={"run": 2})


def test_write_validation(tmp_path):
    store = new_store(tmp_path / "s")
    good = np.ones((2, 3, 5), np.float32)
    cases = [
        (
            [0, 1],
            np.where(np.eye(3, 5, dtype=bool), np.nan, 1).astype(np.float32)[None].repeat(2, 0),
            "NaN or inf",
        ),
        ([0, 1], np.full((2, 3, 5), np.inf, np.float32), "NaN or inf"),
        ([0, 1], good.astype(np.float64), "float32"),
        ([0, 1], good[:, :, :4], "shape"),
        ([0, 1, 2], good, "shape"),
        ([0, 10], good, r"\[0, 10\)"),
        ([3, 3], good, "repeat"),
        ([0.0, 1.0], good, "integer"),
    ]
    for rows, maps, message in cases:
        with pytest.raises(ValueError, match=message):
            store.write(rows, maps)
    assert store.pending().size == 10  # nothing was written by a rejected call


def test_shard_rows_and_shard_guard(tmp_path):
    assert [shard_rows(100, i, 3, 32) for i in range(3)] == [range(0, 32), range(32, 64), range(64, 100)]
    assert [shard_rows(10, i, 4, 4) for i in range(4)] == [
        range(0, 0),
        range(0, 4),
        range(4, 8),
        range(8, 10),
    ]
    for args in [(10, 2, 2, 4), (10, -1, 2, 4), (0, 0, 1, 4), (10, 0, 1, 0)]:
        with pytest.raises(ConfigError):
            shard_rows(*args)
    store = new_store(tmp_path / "s", shard=range(4, 8))
    store.write([4, 7], np.ones((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="outside this writer's shard"):
        store.write([8], np.ones((1, 3, 5), np.float32))
    for shard in (range(2, 8), range(0, 6), range(0, 12)):
        with pytest.raises(ConfigError, match="multiples of chunk_rows=4"):
            new_store(tmp_path / "s", shard=shard)
    assert new_store(tmp_path / "s", shard=range(8, 10)).shard == range(8, 10)
    # a rank with no rows gets an empty shard, wherever it lies (10 rows: range(10, 10) or range(9, 9))
    for empty in (range(10, 10), range(9, 9), range(0, 0)):
        assert len(new_store(tmp_path / "s", shard=empty).shard) == 0
    with pytest.raises(ConfigError, match="step-1 range within"):
        new_store(tmp_path / "s", shard=range(11, 11))


def test_damaged_chunk_detected_and_reset(tmp_path):
    path = tmp_path / "s"
    store = new_store(path)
    maps = np.arange(150, dtype=np.float32).reshape(10, 3, 5)
    store.write(np.arange(10), maps)
    (path / "maps" / "c" / "1" / "0" / "0.deadbeef.partial").write_bytes(b"left by a killed write")
    assert np.array_equal(MapStore.read_only(path).read_all(), maps)  # stale .partial files are never read
    chunk = path / "maps" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])  # a truncated chunk, as after a power loss
    with pytest.raises(DataError, match="damaged chunk"):
        store.read([5])
    assert store.verify() == 4
    assert np.array_equal(store.pending(), [4, 5, 6, 7])
    store.write([5, 6], maps[[5, 6]])  # a partial write of the reset block works again
    store.write([4, 7], maps[[4, 7]])
    assert store.verify() == 0
    assert np.array_equal(store.read_all(), maps)


def test_resume_after_sigkill(tmp_path):
    ref_path, path = tmp_path / "ref", tmp_path / "run"
    assert run_writer(ref_path, tmp_path / "ref.log").wait(30) == 0
    reference = MapStore.read_only(ref_path).read_all()
    assert np.array_equal(reference, expected_all())

    # Run 1: SIGKILL at an arbitrary moment once at least 3 batches are complete.
    proc = run_writer(path, tmp_path / "1.log", "--sleep", "0.1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (path / "zarr.json").exists() and N - MapStore.read_only(path).pending().size >= 9:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    pending1 = MapStore.read_only(path).pending()
    assert 0 < pending1.size <= N - 9

    # Run 2: SIGKILL exactly between writing the data of its third batch and marking it complete.
    assert run_writer(path, tmp_path / "2.log", "--die-before-mark", "2").wait(30) == -signal.SIGKILL
    log2 = logged_rows(tmp_path / "2.log")
    assert log2 == pending1[:9].tolist()  # three batches of 3, all pending before; none recomputed
    pending2 = MapStore.read_only(path).pending()
    assert np.array_equal(pending2, pending1[6:])
    unmarked = pending1[6:9]
    raw = zarr.open_array(zarr.storage.LocalStore(path / "maps", read_only=True), mode="r")
    assert np.array_equal(raw.oindex[unmarked], expected_all()[unmarked])  # data written, not yet marked

    # Run 3: finishes, computing exactly the rows still pending.
    assert run_writer(path, tmp_path / "3.log").wait(30) == 0
    assert logged_rows(tmp_path / "3.log") == pending2.tolist()
    done_at_kill = sorted(set(range(N)) - set(pending1.tolist()))
    assert not set(done_at_kill) & set(log2 + logged_rows(tmp_path / "3.log"))
    final = MapStore.read_only(path)
    assert final.complete and np.array_equal(final.read_all(), reference)


def test_concurrent_disjoint_shards_and_creation_race(tmp_path):
    path = tmp_path / "shared"
    procs = [
        run_writer(path, tmp_path / f"{i}.log", "--shard", str(i), "3", "--sleep", "0.02") for i in range(3)
    ]
    assert [p.wait(40) for p in procs] == [0, 0, 0]
    for i in range(3):
        assert logged_rows(tmp_path / f"{i}.log") == list(shard_rows(N, i, 3, CHUNK))
    store = MapStore.read_only(path)
    assert store.complete and np.array_equal(store.read_all(), expected_all())
    assert store.ids == writer.image_ids(N)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".log")) == ["shared"]


def test_export_npy(tmp_path, caplog):
    path, out = tmp_path / "s", tmp_path / "out"
    ids = ["a", "sub/b.JPEG", "sub/deep/c", "d"]
    maps = np.arange(4 * 6, dtype=np.float32).reshape(4, 2, 3) - 5.5
    store = MapStore.open(path, ids, (2, 3), chunk_rows=2)
    store.write([0, 1, 2], maps[:3])
    with pytest.raises(DataError, match="1 of 4 maps missing"):
        export_npy(path, out)
    store.write([3], maps[3:])
    assert export_npy(path, out) == 4
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["a.npy", "d.npy", "sub/b.JPEG.npy", "sub/deep/c.npy"]
    for i, name in enumerate(ids):
        loaded = np.load(out / f"{name}.npy", allow_pickle=False)
        assert loaded.dtype == np.float32 and np.array_equal(loaded, maps[i])
    np.save(out / "a.npy", np.zeros((2, 3), np.float32))
    assert export_npy(path, out) == 0  # existing files are kept
    assert np.load(out / "a.npy").sum() == 0
    assert salbench_main(["export", str(path), str(out), "--overwrite"]) == 0
    assert np.array_equal(np.load(out / "a.npy"), maps[0])
    assert salbench_main(["export", str(tmp_path / "missing"), str(out)]) == 2
    for bad in ("../escape", "x/../y", "/abs", "x//y", "./x", "x/"):
        bad_path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        MapStore.open(bad_path, ["ok", bad], (2, 3)).write([0, 1], maps[:2])
        with pytest.raises(DataError, match="not a normalised relative path"):
            export_npy(bad_path, tmp_path / "bad_out")
    assert not (tmp_path / "bad_out").exists() and not (tmp_path / "escape.npy").exists()
