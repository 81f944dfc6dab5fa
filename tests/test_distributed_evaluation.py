"""Evaluation on two processes (gloo on CPU) writes exactly what one process writes, and resumes at any
scale: parts left by two processes are completed by one, parts left by one are completed by three.

The maps are generated once by one process (a module fixture); every test evaluates a copy of them
with the three kinds of the pipeline (recognition, complexity, localization) in that order and
compares the per-image CSVs, their sidecars, the curves and results.csv with one process's, exactly.
The ranks are forked with the ``torchrun`` environment set and run ``salbench evaluate``, which joins
the process group itself. Last, the pipeline's steps: the ones that must run once run on rank 0 alone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from salbench.runtime import distributed, world_info
from salbench.stages import evaluate as evaluate_stage
from salbench.stages import pipeline
from salbench.stages.cli import main as salbench
from tests.conftest import make_imagenet, write_stage_config

KINDS = ("recognition", "complexity", "localization")
METHODS = ("fakecam", "gradcam", "rise")
ONE_THREAD = ("--threads", "1")  # two threads per process on two busy cores spin in OpenMP barriers


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, dict[str, object]]:
    """(config, output root with diagnostics and maps only, one process's evaluation outputs)."""
    tmp = tmp_path_factory.mktemp("dist_eval")
    # batch size 2: three batches of the six images, dealt 0, 2 to rank 0 and 1 to rank 1
    # sensitivity re-explains with the method under test: RISE draws from per-batch generators
    metrics = (
        "{monotonicity: {nr_samples: 2, features_in_step: 256}, "
        "sensitivity: {explainer: method, nr_samples: 2}}"
    )
    extra = f"methods: {{rise: {{n_masks: 8}}}}\nmetrics: {metrics}\n"
    cfg = write_stage_config(tmp, make_imagenet(tmp), "groundtruth, least", extra)
    cfg.write_text(cfg.read_text().replace("batch_size: 4", "batch_size: 2"))
    c = ["--config", str(cfg), *ONE_THREAD]
    assert salbench(["diagnostics", *c]) == 0
    assert salbench(["generate", *c, "--method", *METHODS]) == 0
    maps = tmp / "maps_only"
    shutil.copytree(tmp / "out", maps)
    reference = tmp / "reference"
    shutil.copytree(maps, reference)
    for kind in KINDS:
        assert salbench(["evaluate", kind, *c, "--output-root", str(reference)]) == 0
    return cfg, maps, _outputs(reference)


def _outputs(root: Path) -> dict[str, object]:
    """Every evaluation output under ``root`` (CSV and JSON bytes, npz arrays) and results.csv; not the
    run records (the manifests hold timings, config.yaml the output root) nor the lock files."""
    out: dict[str, object] = {"results.csv": (root / "results.csv").read_bytes()}
    for path in sorted((root / "embedded_resnet" / "evaluation").rglob("*")):
        record = path.name == "config.yaml" or path.name.endswith("_manifest.json")
        if not path.is_file() or ".locks" in path.parts or record:
            continue
        key = str(path.relative_to(root))
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                out[key] = {k: data[k] for k in data.files}
        else:
            out[key] = path.read_bytes()
    return out


def _assert_same(got: dict[str, object], want: dict[str, object]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(value, dict):
            assert sorted(got[key]) == sorted(value), key
            for name, array in value.items():
                np.testing.assert_array_equal(got[key][name], array, err_msg=f"{key}: {name}")
        else:
            assert got[key] == value, key


def _copy(maps: Path, dest: Path) -> Path:
    shutil.copytree(maps, dest)
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _killed_before_merge(real):
    """``_summed_over_ranks`` that returns on no rank: every part is written, none merged."""

    def killed(seconds):
        real(seconds)
        raise KeyboardInterrupt

    return killed


def _worker(rank: int, world: int, port: int, argvs: list[list[str]], interrupted: bool) -> None:
    """One rank of a ``torchrun``-like launch: the torchrun environment, then ``salbench`` commands."""
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1"}
    os.environ.update({k: str(v) for k, v in {**env, "MASTER_PORT": port}.items()})
    torch.set_num_threads(1)
    if interrupted:
        evaluate_stage._summed_over_ranks = _killed_before_merge(evaluate_stage._summed_over_ranks)
    for argv in argvs:
        rc = salbench(argv)
        if rc != (130 if interrupted else 0):
            raise RuntimeError(f"rank {rank}: salbench {' '.join(argv)} exited {rc}")


def _evaluate(cfg: Path, root: Path, world: int, interrupted: bool = False) -> None:
    argvs = [["evaluate", k, "--config", str(cfg), "--output-root", str(root), *ONE_THREAD] for k in KINDS]
    if world == 1:
        real = evaluate_stage._summed_over_ranks
        if interrupted:
            evaluate_stage._summed_over_ranks = _killed_before_merge(real)
        try:
            for argv in argvs:
                assert salbench(argv) == (130 if interrupted else 0)
        finally:
            evaluate_stage._summed_over_ranks = real
        return
    # forked, not spawned: the ranks start with the test's imports (spawning re-imports for ~10 s)
    args = (world, _free_port(), argvs, interrupted)
    mp.start_processes(_worker, args=args, nprocs=world, join=True, start_method="fork")


def _parts(root: Path, pattern: str) -> list[Path]:
    """Part files matching ``pattern``: ``<method>_<kind>/<batch>.<ext>`` (both label sets) or
    ``<label set>/.parts/<method>_<kind>/<batch>.<ext>``."""
    folder = root / "embedded_resnet" / "evaluation"
    return sorted(folder.glob(pattern if "/.parts/" in pattern else f"*/.parts/{pattern}"))


def test_two_processes_write_what_one_process_writes(prepared, tmp_path):
    cfg, maps, reference = prepared
    root = _copy(maps, tmp_path / "two")
    _evaluate(cfg, root, world=2)
    _assert_same(_outputs(root), reference)
    assert not _parts(root, "*/*.csv")
    for label_set in ("groundtruth", "least"):
        folder = root / "embedded_resnet" / "evaluation" / label_set
        manifest = json.loads((folder / "recognition_manifest.json").read_text())
        assert manifest["processes"] == 2 and set(manifest["seconds_per_method"]) == set(METHODS)
    # a rerun on two processes computes nothing and changes nothing
    before = {p: p.stat().st_mtime_ns for p in (root / "embedded_resnet" / "evaluation").rglob("*.csv")}
    _evaluate(cfg, root, world=2)
    after = {p: p.stat().st_mtime_ns for p in (root / "embedded_resnet" / "evaluation").rglob("*.csv")}
    assert before == after
    _assert_same(_outputs(root), reference)


def test_parts_of_two_processes_completed_by_one(prepared, tmp_path):
    cfg, maps, reference = prepared
    root = _copy(maps, tmp_path / "resume")
    _evaluate(cfg, root, world=2, interrupted=True)
    # each kind stopped before merging its first label set (groundtruth): three batches per method
    assert len(_parts(root, "groundtruth/.parts/*/0*.csv")) == len(KINDS) * len(METHODS) * 3
    assert not _parts(root, "least/.parts/*/0*.csv")
    assert (root / "results.csv").read_bytes() == (maps / "results.csv").read_bytes()  # no row yet
    # as if a rank was killed: batch 1 (rank 1's) lost for every method, batch 2 of one method
    for part in [*_parts(root, "*/000001.*"), *_parts(root, "gradcam_*/000002.*")]:
        part.unlink()
    _evaluate(cfg, root, world=1)
    _assert_same(_outputs(root), reference)


def test_parts_of_one_process_completed_by_three(prepared, tmp_path):
    cfg, maps, reference = prepared
    root = _copy(maps, tmp_path / "resume")
    _evaluate(cfg, root, world=1, interrupted=True)
    # batches 0 and 2 are missing: dealt to ranks 0 and 1, rank 2 has nothing to compute
    for part in [*_parts(root, "*/000000.*"), *_parts(root, "rise_*/000002.*")]:
        part.unlink()
    _evaluate(cfg, root, world=3)
    _assert_same(_outputs(root), reference)


class _Probe:
    """A command that records the ranks that ran it (``<name>.<rank>`` files) and exits ``rc``."""

    def __init__(self, folder: Path, name: str, rc: int) -> None:
        self.folder, self.name, self.rc = folder, name, rc

    def main(self, argv: list[str], options: object = None) -> int:
        (self.folder / f"{self.name}.{world_info()[0]}").write_text(" ".join(argv))
        return self.rc


def _pipeline_worker(rank: int, world: int, port: int, folder: str) -> None:
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1"}
    os.environ.update({k: str(v) for k, v in {**env, "MASTER_PORT": port}.items()})
    out = Path(folder)
    probes = {"report": _Probe(out, "report", 3), "evaluate": _Probe(out, "evaluate", 0)}
    pipeline.load_commands = lambda: probes
    with distributed("cpu"):
        once = pipeline.run_step(pipeline.Step("report", "report"), ["--limit", "2"])
        shared = pipeline.run_step(pipeline.Step("evaluate", "evaluate", argv=("--x",)), ["--limit", "2"])
    (out / f"codes.{rank}").write_text(f"{once} {shared}")


def test_pipeline_runs_a_once_step_on_rank_zero_and_shares_its_exit_code(tmp_path):
    mp.start_processes(
        _pipeline_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    assert (tmp_path / "report.0").read_text() == "--limit 2" and not (tmp_path / "report.1").exists()
    assert (tmp_path / "evaluate.0").read_text() == (tmp_path / "evaluate.1").read_text() == "--limit 2 --x"
    assert (tmp_path / "codes.0").read_text() == (tmp_path / "codes.1").read_text() == "3 0"
