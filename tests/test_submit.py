"""``salbench submit``: the SLURM job a command becomes (submitit), checked without a cluster."""

from __future__ import annotations

import json
import shutil

import pytest

from salbench.stages.cli import main as salbench
from salbench.stages.submit import SalbenchTask, SlurmJob, executor


def test_dry_run_prints_the_job_of_two_nodes_of_eight_gpus(tmp_path, capsys):
    argv = ["submit", "--dry-run", "--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu"]
    argv += ["--time", "1440", "--job-name", "study", "--mem-gb", "256", "--account", "lab"]
    argv += ["--", "run", "--output-root", str(tmp_path / "run"), "--device", "cuda"]
    assert salbench(argv) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["command"] == ["salbench", "run", "--output-root", str(tmp_path / "run"), "--device", "cuda"]
    assert job["world_size"] == 16 and job["folder"] == str(tmp_path / "run" / "slurm" / "%j")
    assert job["executor"] == {
        "name": "study",
        "nodes": 2,
        "tasks_per_node": 8,  # one process per GPU
        "cpus_per_task": 8,
        "timeout_min": 1440,
        "slurm_srun_args": ["--kill-on-bad-exit=1"],  # a failing rank ends the step, not a 4 h wait
        "gpus_per_node": 8,
        "mem_gb": 256,
        "slurm_partition": "gpu",
        "slurm_account": "lab",
    }
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_a_cpu_job_has_tasks_per_node_processes():
    job = SlurmJob(("generate",), "/x/%j", nodes=3, tasks_per_node=4)
    assert job.tasks == 4 and job.describe()["world_size"] == 12
    assert "gpus_per_node" not in job.parameters() and "slurm_partition" not in job.parameters()


def test_the_debug_executor_runs_the_command_in_this_process(tmp_path, capsys):
    """submitit's debug executor runs the task here: the wrapped command runs and its output shows."""
    root = tmp_path / "run"
    argv = ["submit", "--cluster", "debug", "--wait", "--", "plan", "--output-root", str(root)]
    assert salbench(argv) == 0
    out = capsys.readouterr().out
    assert "submitted job DEBUG_" in out and "finished" in out and "train" in out  # plan's listing
    assert (root / "slurm").is_dir()


def test_a_preempted_task_is_requeued_with_the_same_command():
    task = SalbenchTask(("generate", "--method", "gradcam"))
    again = task.checkpoint()
    assert isinstance(again.function, SalbenchTask) and again.function.argv == task.argv


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit"], "give the command to run after '--'"),
        (["submit", "--", "explode"], "unknown command 'explode'"),
        (["submit", "--nodes", "0", "--", "plan"], "--nodes must be >= 1, got 0"),
        (["submit", "--gpus-per-node", "-1", "--", "plan"], "--gpus-per-node must be >= 0, got -1"),
    ],
)
def test_bad_submissions_are_one_line(argv, message, capsys):
    assert salbench(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine is a SLURM node")
def test_slurm_without_srun_is_a_one_line_error(tmp_path):
    from salbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"srun.*--cluster local"):
        executor(SlurmJob(("plan",), str(tmp_path / "%j")), "slurm")
