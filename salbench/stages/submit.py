"""``salbench submit``: run the pipeline or one stage as a SLURM job over nodes x GPUs with submitit.

``salbench submit --nodes 2 --gpus-per-node 8 --partition gpu --time 1440 -- run --config FILE --device
cuda`` submits one job of ``nodes x gpus_per_node`` tasks (one process per GPU; ``--tasks-per-node`` on
CPU nodes). Each task exports what ``torchrun`` would (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``; :class:`submitit.helpers.TorchDistributedEnvironment`) and runs the
salbench command, which splits its work over the ranks as under ``torchrun``. Logs and submitit's
pickled job description go to ``<output_root>/slurm/<job id>/`` (one ``<job>_<rank>_log.out/.err`` per
task). On preemption or time-out submitit requeues the job (``checkpoint``); every stage resumes from
what is on disk, so the requeued job computes only what is missing.

submitit is imported only here, and only when a job is built: a user without SLURM never needs it.
``--cluster local`` runs the same job as local processes and ``--cluster debug`` in this process
(submitit's own executors), e.g. to try a job specification; ``--dry-run`` prints it and submits nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from salbench.errors import ConfigError
from salbench.stages.cli import COMMANDS, Command, Options, config_from_args, entry, load_commands, register

CLUSTERS = ("slurm", "local", "debug")


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    """One submitted salbench command.

    Attributes:
        argv: the salbench command and its flags (``("run", "--config", "c.yaml")``).
        folder: submitit's folder (``<output_root>/slurm/%j``).
        nodes: nodes of the job.
        gpus_per_node: GPUs per node (0: a CPU job); one task per GPU.
        tasks_per_node: processes per node of a CPU job (a GPU job has one per GPU).
        partition: SLURM partition ("" = the cluster's default).
        time_min: wall-time limit in minutes.
        job_name: SLURM job name.
        cpus_per_task: CPU cores per task (data-loading workers and torch threads).
        mem_gb: memory per node in GB (0 = the partition's default).
        account: SLURM account ("" = none).
    """

    argv: tuple[str, ...]
    folder: str
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    partition: str = ""
    time_min: int = 60
    job_name: str = "salbench"
    cpus_per_task: int = 8
    mem_gb: int = 0
    account: str = ""

    def __post_init__(self) -> None:
        for name in ("nodes", "tasks_per_node", "time_min", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_node", "mem_gb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.argv:
            raise ConfigError(
                "salbench submit: give the command to run after '--', e.g. -- run --config FILE"
            )

    @property
    def tasks(self) -> int:
        """Processes per node: one per GPU, else ``tasks_per_node``."""
        return self.gpus_per_node or self.tasks_per_node

    def parameters(self) -> dict[str, Any]:
        """Keyword arguments of ``submitit.AutoExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "name": self.job_name,
            "nodes": self.nodes,
            "tasks_per_node": self.tasks,
            "cpus_per_task": self.cpus_per_task,
            "timeout_min": self.time_min,
            # one task failing ends the step: the other ranks would otherwise wait in a collective
            # until the process group's timeout (torchrun's agent does the same on one machine)
            "slurm_srun_args": ["--kill-on-bad-exit=1"],
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            params["slurm_account"] = self.account
        return params

    def describe(self) -> dict[str, Any]:
        """What ``--dry-run`` prints: the executor parameters, the command and where logs go."""
        return {
            "command": ["salbench", *self.argv],
            "world_size": self.nodes * self.tasks,
            "folder": self.folder,
            "executor": self.parameters(),
        }


class SalbenchTask:
    """What every task of the job runs: the torchrun environment, then the salbench command.

    A callable with ``checkpoint`` (submitit's requeue protocol): on preemption or time-out the same
    command is resubmitted, and it resumes from the run folder.
    """

    def __init__(self, argv: tuple[str, ...]) -> None:
        self.argv = tuple(argv)

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one process: nothing to join, as without torchrun
            # every visible GPU stays visible: the rank picks its own with LOCAL_RANK
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        from salbench.stages.cli import main

        code = main(list(self.argv))
        if code:
            raise RuntimeError(f"salbench {' '.join(self.argv)} exited with code {code}; see the task's log")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SalbenchTask(self.argv))


def output_root(argv: tuple[str, ...]) -> Path:
    """The run folder the wrapped command writes to (its ``--config`` and flags resolved)."""
    name = argv[0]
    if name not in COMMANDS:
        raise ConfigError(
            f"salbench submit: unknown command {name!r}; choose from {', '.join(COMMANDS.names())}"
        )
    command = COMMANDS.get(name)
    if not command.common:
        raise ConfigError(f"salbench submit: {name!r} does not run on a run folder")
    args, _ = command.parser().parse_known_args(list(argv[1:]))
    return Path(config_from_args(args).run.output_root)


def executor(job: SlurmJob, cluster: str = "slurm") -> Any:
    """The submitit executor of ``job`` (``slurm``, ``local`` or ``debug``)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("salbench submit needs the submitit package (pip install submitit)") from None
    try:
        ex = submitit.AutoExecutor(folder=job.folder, cluster=cluster)
    except RuntimeError as exc:  # no srun on this machine
        raise ConfigError(f"salbench submit: {exc} (use --cluster local to run here)") from None
    params = job.parameters()
    if cluster != "slurm":  # the local executors know no SLURM-only keys
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    ex.update_parameters(**params)
    return ex


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("--nodes", type=int, default=1, help="nodes of the job")
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node, one process each (0: CPU)")
    p.add_argument("--tasks-per-node", type=int, default=1, help="processes per node of a CPU job")
    p.add_argument("--partition", default="", help="SLURM partition")
    p.add_argument("--time", type=int, default=60, dest="time_min", help="wall-time limit in minutes")
    p.add_argument("--job-name", default="salbench", help="SLURM job name")
    p.add_argument("--cpus-per-task", type=int, default=8, help="CPU cores per process")
    p.add_argument("--mem-gb", type=int, default=0, help="memory per node in GB (0: the partition's default)")
    p.add_argument("--account", default="", help="SLURM account")
    p.add_argument("--cluster", choices=CLUSTERS, default="slurm", help="slurm, or submitit's local/debug")
    p.add_argument("--dry-run", action="store_true", help="print the job and submit nothing")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its exit")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the salbench command and its flags")


def submit(argv: list[str]) -> int:
    args = COMMANDS.get("submit").parser().parse_args(argv)
    wrapped = (
        tuple(a for a in args.command if a != "--") if args.command[:1] == ["--"] else tuple(args.command)
    )
    if not wrapped:
        raise ConfigError("salbench submit: give the command to run after '--', e.g. -- run --config FILE")
    load_commands()
    folder = output_root(wrapped) / "slurm" / "%j"
    fields = {f.name for f in dataclasses.fields(SlurmJob)} - {"argv", "folder"}
    job = SlurmJob(wrapped, str(folder), **{k: getattr(args, k) for k in fields})
    if args.dry_run:
        print(json.dumps(job.describe(), indent=2))
        return 0
    ex = executor(job, args.cluster)
    submitted = ex.submit(SalbenchTask(job.argv))
    print(f"submitted job {submitted.job_id}: salbench {' '.join(job.argv)}")
    print(f"logs: {str(folder).replace('%j', str(submitted.job_id))}")
    if args.wait:
        submitted.result()
        print(f"job {submitted.job_id} finished")
    return 0


class _Submit(Command):
    """``submit`` keeps everything after ``--`` for the wrapped command."""

    def main(
        self, argv: list[str] | None = None, options: Options | None = None, prog: str | None = None
    ) -> int:
        return entry(submit)(list(sys.argv[1:] if argv is None else argv))


COMMAND = register(
    _Submit(
        "submit",
        "run the pipeline or one stage as a SLURM job (nodes x GPUs) with submitit",
        _arguments,
        lambda args, options: 0,
        common=False,
        label_sets=False,
    )
)
