"""Generation on two processes (gloo on CPU) writes exactly what one process writes, and resumes at any
scale: a store left part-written by two processes is completed by one, and one left by one process is
completed by two.

The workspace is the stage tests' (a random embedded ResNet at 64x64) on 13 images in batches of 4,
with map stores of 2-row chunks (:data:`CHUNK_ROWS`, set in every process), so shards are whole
batches (lcm(2, 4) rows): rank 0 writes rows 0-7 and rank 1 rows 8-12 of every store (of the 10 rows
of the augmented variant: 0-3 and 4-9), and rank 0 alone runs the diagnostics' batches 0-1. One
process's outputs (a module fixture) are the reference; every comparison of maps is bit for bit.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from salbench.stages import generate as generate_stage
from salbench.stages.cli import main as salbench
from salbench.store.maps import MapStore
from tests.conftest import make_imagenet, write_stage_config

N_IMAGES = 13
CHUNK_ROWS = 2
METHODS = ("gradcam", "rise")  # deterministic; seeded per aligned batch
GENERATE = ["generate", "--method", *METHODS]
AUGMENT = ["augment", "--step", "generate", "--variant", "rotation_45", "--method", *METHODS]
AUGMENT += ["--n-images", "10"]
MODEL = "embedded_resnet"


@pytest.fixture(scope="module", autouse=True)
def small_chunks():
    """Map stores of :data:`CHUNK_ROWS` rows in this process (the workers set it themselves)."""
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(generate_stage, "CHUNK_ROWS", CHUNK_ROWS)
        yield


@pytest.fixture(scope="module")
def prepared(small_chunks, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(config, output root holding the diagnostics only, output root of one process's full run)."""
    tmp = tmp_path_factory.mktemp("dist_gen")
    cfg = write_stage_config(
        tmp, make_imagenet(tmp, N_IMAGES), "groundtruth", "methods: {rise: {n_masks: 8}}\n"
    )
    reference = tmp / "out"
    c = ["--config", str(cfg), "--output-root", str(reference)]
    assert salbench(["diagnostics", *c]) == 0
    diagnostics_only = tmp / "diagnostics_only"
    shutil.copytree(reference, diagnostics_only)
    assert salbench([*GENERATE, *c]) == 0
    assert salbench([*AUGMENT, *c]) == 0
    return cfg, diagnostics_only, reference


def _stores(root: Path, under: str) -> dict[str, MapStore]:
    found = sorted((root / under).rglob("*.zarr"))
    return {str(p.relative_to(root)): MapStore.read_only(p) for p in found}


def _assert_same(root: Path, reference: Path, files: tuple[str, ...] = (), under: str = MODEL) -> None:
    """Every map store of ``reference`` (under the folder ``under``) is in ``root``, complete, with the
    same maps (bit for bit) and attributes (but ``last_run``: timings); the ``files`` are the same bytes."""
    got, want = _stores(root, under), _stores(reference, under)
    assert sorted(got) == sorted(want) and want
    for key, store in want.items():
        assert got[key].complete, key
        assert got[key].read_all().tobytes() == store.read_all().tobytes(), key
        attrs = [{k: v for k, v in s.attrs.items() if k != "last_run"} for s in (got[key], store)]
        assert attrs[0] == attrs[1], key
    for name in files:
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _killed_after(writes: int):
    """``MapStore.write`` that raises KeyboardInterrupt (as a kill would stop it) on call ``writes + 1``."""
    real, calls = MapStore.write, []

    def write(self, rows, maps):
        calls.append(1)
        if len(calls) > writes:
            raise KeyboardInterrupt
        real(self, rows, maps)

    return write


def _worker(rank: int, world: int, port: int, jobs: list[tuple[list[str], int | None]]) -> None:
    """One rank of a ``torchrun``-like launch: its environment, then ``salbench`` commands; a job's
    second item, when given, kills the command after that many map writes of this rank."""
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1"}
    os.environ.update({k: str(v) for k, v in {**env, "MASTER_PORT": port}.items()})
    torch.set_num_threads(1)
    generate_stage.CHUNK_ROWS = CHUNK_ROWS
    real = MapStore.write
    for argv, kill_after in jobs:
        MapStore.write = real if kill_after is None else _killed_after(kill_after)
        rc = salbench(argv)
        if rc != (0 if kill_after is None else 130):
            raise RuntimeError(f"rank {rank}: salbench {' '.join(argv)} exited {rc}")
    MapStore.write = real


def _launch(jobs: list[tuple[list[str], int | None]]) -> None:
    mp.spawn(_worker, args=(2, _free_port(), jobs), nprocs=2, join=True)


def _args(cfg: Path, root: Path) -> list[str]:
    return ["--config", str(cfg), "--output-root", str(root)]


def test_two_processes_write_what_one_process_writes(prepared, tmp_path, capfd):
    cfg, _, reference = prepared
    root = tmp_path / "two"
    c = _args(cfg, root)
    _launch(
        [
            (["diagnostics", *c], None),
            ([*GENERATE, *c], None),
            ([*AUGMENT, *c], None),
            ([*GENERATE, *c], None),
        ]
    )
    variant = f"{MODEL}/augmented/rotation/rotation_45"
    files = [
        f"{d}/diagnostics/{f}" for d in (MODEL, variant) for f in ("diagnostics.csv", "complete_info.json")
    ]
    files += ["results.csv", f"{variant}/images/images.npy"]
    files += [str(p.relative_to(reference)) for p in reference.rglob("rise_masks_*.npy")]
    _assert_same(root, reference, tuple(files))
    store = MapStore.read_only(root / MODEL / "maps" / "groundtruth" / "rise.zarr")
    assert store.attrs["last_run"]["processes"] == 2 and store.attrs["last_run"]["n_computed"] == N_IMAGES
    # rank 0 alone prints; the rerun finds every store complete
    out = capfd.readouterr().out
    assert out.count("top-1 accuracy") == 1
    assert out.count(f"{N_IMAGES:6d} maps") == 2 and out.count("complete, skipped") == 2
    assert out.count("rotation_45    groundtruth  gradcam") == 1


def test_resume_at_another_scale(prepared, tmp_path):
    cfg, diagnostics_only, reference = prepared
    by_two, by_one = tmp_path / "by_two", tmp_path / "by_one"
    for root in (by_two, by_one):
        shutil.copytree(diagnostics_only, root)
    # one process killed after two batches (rows 0-7 of gradcam: rank 0 will find its shard complete) ...
    real = MapStore.write
    MapStore.write = _killed_after(2)
    try:
        assert salbench([*GENERATE, *_args(cfg, by_one)]) == 130
    finally:
        MapStore.write = real
    # ... completed by two; two processes killed after one batch each (rows 0-3 and 8-11) ...
    _launch([([*GENERATE, *_args(cfg, by_two)], 1), ([*GENERATE, *_args(cfg, by_one)], None)])
    gradcam = MapStore.read_only(by_two / MODEL / "maps" / "groundtruth" / "gradcam.zarr")
    left = np.array([4, 5, 6, 7, 12])
    np.testing.assert_array_equal(gradcam.pending(), left)
    assert not (by_two / MODEL / "maps" / "groundtruth" / "rise.zarr").exists()
    # ... completed by one
    assert salbench([*GENERATE, *_args(cfg, by_two)]) == 0
    for root in (by_two, by_one):
        _assert_same(root, reference, under=f"{MODEL}/maps")
