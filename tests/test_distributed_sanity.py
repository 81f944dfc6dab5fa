"""The sanity checks on two processes (gloo on CPU) write exactly what one process writes.

Each rank builds and explains every second randomised model (cascading and independent, 6 blocks each
for the embedded ResNet: 12 variants), rank 0 gathers the rows, puts them in the single-process order
and writes every CSV; a variant's maps are computed by one rank on the same batches as one process
computes them, so every file is compared byte for byte.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from salbench.stages.cli import main as salbench
from tests.conftest import make_imagenet, write_stage_config

SANITY = ["sanity", "--limit", "4", "--method", "gradcam", "fakecam", "random"]
SANITY += ["--variant", "cascading", "independent"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, argvs: list[list[str]]) -> None:
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1"}
    os.environ.update({k: str(v) for k, v in {**env, "MASTER_PORT": port}.items()})
    torch.set_num_threads(1)
    for argv in argvs:
        if salbench(argv) != 0:
            raise RuntimeError(f"rank {rank}: salbench {' '.join(argv)} failed")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dist_sanity")
    return write_stage_config(tmp, make_imagenet(tmp, 6), "groundtruth")


def test_two_processes_write_what_one_process_writes(config, tmp_path, capfd):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        assert salbench(["diagnostics", "--config", str(config), "--output-root", str(root)]) == 0
    assert salbench([*SANITY, "--config", str(config), "--output-root", str(one)]) == 0
    capfd.readouterr()
    argv = [*SANITY, "--config", str(config), "--output-root", str(two)]
    mp.spawn(_worker, args=(2, _free_port(), [argv]), nprocs=2, join=True)
    assert capfd.readouterr().out.count("fail model randomisation like the controls") == 1  # rank 0 prints
    folder = Path("embedded_resnet") / "sanity"
    written = sorted(p.relative_to(one) for p in (one / folder).rglob("*.csv"))
    assert len(written) == 1 + 3 + 2  # layers, one CSV per method, summary and flags
    assert written == sorted(p.relative_to(two) for p in (two / folder).rglob("*.csv"))
    per_image = (one / folder / "groundtruth" / "gradcam.csv").read_text().splitlines()
    assert len(per_image) == 1 + 4 * 12  # header, 4 images x 12 variants
    for name in [*written, Path("results.csv")]:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
