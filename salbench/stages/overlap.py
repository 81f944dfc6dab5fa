"""Pipeline steps that run beside the others on a CPU: a second stream of work on its own thread.

Small convolutional networks use a second CPU thread poorly (training the embedded VGG-style model:
7.7 s per epoch on 2 threads, 10.1 s on 1, on 2 CPU cores), so two one-thread jobs side by side finish
sooner than the same jobs one after the other on two threads. On a CPU run in one process with two or
more torch threads (and no ``--threads`` given), :func:`salbench.stages.pipeline.run_pipeline` therefore
hands the steps marked :attr:`~salbench.stages.pipeline.Step.background` to :class:`Background`: they
run in order, each group of consecutive steps with the same :attr:`~salbench.stages.pipeline.Step.after`
in one child process on one thread, a group starting once the pipeline has finished the step it names
(the embedded default: the VGG-style classifier's training and diagnostics at once; the augmented-image
stages once the run's diagnostics exist). The pipeline's own steps use the other threads meanwhile and
get every thread back when the children are done; the report step waits for them.

Each step runs its registered command as ``salbench <command>`` would. The children's output goes to
``<output_root>/logs/background.log`` (their printed summaries are repeated when they are done), and a
failed child fails the pipeline with its exit code and log. Elsewhere (GPU, ``torchrun``, one thread,
``--threads``) the steps run in order as written. Thread counts change only how fast the same kernels
run: on CPU the embedded model's maps came out bit-identical on 1 and 2 threads (forward, gradient,
integrated gradients, RISE, SmoothGrad), and concurrent stages share ``results.csv`` under its lock.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("pipeline")


class Background:
    """The background steps of a pipeline run, in order, in one-thread child processes.

    Args:
        steps: the steps to run, in order (:class:`~salbench.stages.pipeline.Step`).
        argv: the common flags of every step.
        folder: where ``background.log`` and ``background.out`` go.
    """

    def __init__(self, steps: list[Any], argv: list[str], folder: Path) -> None:
        self.steps = list(steps)
        self.argv = list(argv)
        self.folder = folder
        self.log_path = folder / "background.log"
        self.out_path = folder / "background.out"
        self.rc = 0
        self.started = 0.0
        self.seconds = 0.0
        self.threads = torch.get_num_threads()
        self._done: set[str] = set()
        self._changed = threading.Condition()
        self._cancelled = False
        self._worker: threading.Thread | None = None
        self._finished = False

    @staticmethod
    def wanted(steps: list[Any], device: str, threads_flag: int, world: int) -> bool:
        """Whether background steps should run beside the others (see the module docstring)."""
        has = any(getattr(s, "background", False) for s in steps)
        return has and device == "cpu" and threads_flag == 0 and world == 1 and torch.get_num_threads() >= 2

    def describe(self) -> str:
        """The steps as ``salbench`` commands."""
        return "; ".join(s.describe() for s in self.steps)

    def groups(self) -> list[tuple[str, list[Any]]]:
        """Consecutive steps with the same :attr:`after`, each group one child process."""
        return [(after, list(g)) for after, g in itertools.groupby(self.steps, key=lambda s: s.after)]

    def command(self, steps: list[Any]) -> list[str]:
        """The child's command line: every step's command, flags and fixed options, in order."""
        payload = [[s.command, [*self.argv, *s.argv], dict(s.options)] for s in steps]
        return [sys.executable, "-c", _CHILD, json.dumps(payload)]

    def start(self) -> None:
        """Start the worker; this process keeps all threads but one until the children are done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        self.out_path.write_text("")
        self.started = time.perf_counter()
        torch.set_num_threads(max(1, self.threads - 1))
        self._worker = threading.Thread(target=self._run, name="salbench-background", daemon=True)
        self._worker.start()
        titles = ", ".join(s.title.split(" ", 1)[-1] for s in self.steps)
        print(f"background, on one thread: {titles} (log: {self.log_path})", flush=True)

    def mark_done(self, title: str) -> None:
        """The pipeline finished its step ``title``: a group waiting for it may start."""
        with self._changed:
            self._done.add(title)
            self._changed.notify_all()

    def cancel(self) -> None:
        """Start no further group (the pipeline failed); a running child finishes its step."""
        with self._changed:
            self._cancelled = True
            self._changed.notify_all()

    def _run(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for after, steps in self.groups():
            with self._changed:
                self._changed.wait_for(lambda a=after: self._cancelled or not a or a in self._done)
                if self._cancelled:
                    return
            with open(self.out_path, "a") as out, open(self.log_path, "a") as err:
                self.rc = subprocess.run(self.command(steps), stdout=out, stderr=err, env=env).returncode
            if self.rc != 0:
                return

    def poll(self) -> bool:
        """True once the children have ended (every thread is then given back to this process)."""
        if self._worker is None or self._worker.is_alive():
            return self._worker is None
        self._finish()
        return True

    def wait(self) -> int:
        """Wait for the children; their exit code (their summary is printed, their log tail on failure)."""
        if self._worker is not None:
            self._worker.join()
            self._finish()
        return self.rc

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.seconds = time.perf_counter() - self.started
        torch.set_num_threads(self.threads)
        print(f"\n=== background steps {'done' if self.rc == 0 else 'FAILED'} in {self.seconds:.0f} s ===")
        print(self.out_path.read_text().rstrip())
        if self.rc != 0:
            print("\n".join(self.log_path.read_text().splitlines()[-5:]))
            print(f"background steps failed with exit code {self.rc}: see {self.log_path}")
        sys.stdout.flush()


_CHILD = """
import json, sys, torch
torch.set_num_threads(1)
from salbench.stages.cli import load_commands
for command, argv, options in json.loads(sys.argv[1]):
    print(f"=== salbench {command} {' '.join(argv)} ===", flush=True)
    rc = load_commands().get(command).main(argv, options or None)
    if rc:
        sys.exit(rc)
"""
"""The child: each step's registered command, as ``salbench <command> <flags>`` would run it."""
