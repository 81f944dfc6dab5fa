"""Pipeline steps that run beside the others: the embedded default's VGG-style classifier.

The VGG-style classifier of the embedded default is trained and diagnosed for the diagnostics table
only; nothing else depends on it. On a CPU run in one process with two or more torch threads (and no
``--threads`` given), :func:`salbench.stages.pipeline.run_pipeline` therefore runs the steps marked
:attr:`~salbench.stages.pipeline.Step.background` one after the other in a child process on one thread
while its own steps go on with the other threads, and takes every thread back once the child is done.
Small convolutional networks use a second CPU thread poorly (training the VGG-style model: 7.7 s per
epoch on 2 threads, 10.1 s on 1, on 2 CPU cores), so two one-thread jobs side by side finish sooner
than the same jobs one after the other on two threads.

The child's output goes to ``<output_root>/logs/background.log`` (its printed summary is repeated when
it is done); the report step waits for it, and a failed child fails the pipeline with its exit code
and log. Elsewhere (GPU, ``torchrun``, one thread, ``--threads``) the steps run in order as written.
Thread counts change only how fast the same kernels run: on CPU the embedded model's maps came out
bit-identical on 1 and 2 threads (forward, gradient, integrated gradients, RISE, SmoothGrad).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("pipeline")


class Background:
    """The background steps of a pipeline run, one after the other in a child process on one thread.

    Args:
        steps: the steps to run, in order (commands without fixed options).
        argv: the common flags of every step.
        folder: where ``background.log`` and ``background.out`` go.
    """

    def __init__(self, steps: list[Any], argv: list[str], folder: Path) -> None:
        self.steps = list(steps)
        self.argv = list(argv)
        self.folder = folder
        self.log_path = folder / "background.log"
        self.out_path = folder / "background.out"
        self.process: subprocess.Popen | None = None
        self.rc = 0
        self.started = 0.0
        self.seconds = 0.0
        self.threads = torch.get_num_threads()
        self._handles: list[Any] = []

    @staticmethod
    def wanted(steps: list[Any], device: str, threads_flag: int, world: int) -> bool:
        """Whether background steps should run beside the others (see the module docstring)."""
        has = any(getattr(s, "background", False) for s in steps)
        return has and device == "cpu" and threads_flag == 0 and world == 1 and torch.get_num_threads() >= 2

    def describe(self) -> str:
        """The steps as ``salbench`` commands."""
        return "; ".join(" ".join(("salbench", s.command, *s.argv)) for s in self.steps)

    def command(self) -> list[str]:
        """One shell-free command line per step, joined so that a failed step stops the rest."""
        return [sys.executable, "-c", _CHILD, repr([[s.command, *self.argv, *s.argv] for s in self.steps])]

    def start(self) -> None:
        """Start the child on one thread; this process keeps the other threads until it is done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log_file, out_file = open(self.log_path, "w"), open(self.out_path, "w")  # noqa: SIM115
        self._handles = [log_file, out_file]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command(), stdout=out_file, stderr=log_file, env=env)
        torch.set_num_threads(max(1, self.threads - 1))
        titles = ", ".join(s.title.split(" ", 1)[-1] for s in self.steps)
        print(f"background, on one thread: {titles} (log: {self.log_path})", flush=True)

    def poll(self) -> bool:
        """True once the child has ended (every thread is then given back to this process)."""
        if self.process is None:
            return True
        rc = self.process.poll()
        if rc is None:
            return False
        self._finish(rc)
        return True

    def wait(self) -> int:
        """Wait for the child; its exit code (its summary is printed, its log tail on failure)."""
        if self.process is not None:
            self._finish(self.process.wait())
        return self.rc

    def _finish(self, rc: int) -> None:
        self.process, self.rc = None, rc
        self.seconds = time.perf_counter() - self.started
        for handle in self._handles:
            handle.close()
        torch.set_num_threads(self.threads)
        print(f"\n=== background steps {'done' if rc == 0 else 'FAILED'} in {self.seconds:.0f} s ===")
        print(self.out_path.read_text().rstrip())
        if rc != 0:
            tail = self.log_path.read_text().splitlines()[-5:]
            print("\n".join(tail))
            print(f"background steps failed with exit code {rc}: see {self.log_path}")
        sys.stdout.flush()


_CHILD = """
import ast, sys, torch
torch.set_num_threads(1)
from salbench.stages.cli import load_commands
for argv in ast.literal_eval(sys.argv[1]):
    rc = load_commands().get(argv[0]).main(argv[1:])
    if rc:
        sys.exit(rc)
"""
"""The child: each step's registered command, as ``salbench <command> <flags>`` would run it."""
