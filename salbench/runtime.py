"""The one place that sets seeds, determinism, threads, the device and the process group.

:func:`setup_runtime` seeds, requests deterministic kernels and resolves the device, and its
:class:`Runtime` is recorded in every manifest; :func:`keyed_generator` gives every random draw its own
stable seed. Under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set), :func:`distributed` joins
the process group (nccl on CUDA, one GPU per process; gloo on CPU) and leaves it on exit; outside it
everything is a no-op for a single process (rank 0 of 1).

How the stages use the group: every rank opens the same workspace (rank 0 first,
:func:`rank_zero_first`, so that it alone generates or trains what is missing), splits the image rows
into contiguous, chunk-aligned shards (:func:`salbench.store.maps.shard_rows`), computes and writes only
its own, then exchanges small summaries (:func:`all_gather_objects`, which waits for every rank) before
rank 0 alone writes tables, manifests and ``results.csv`` and prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import platform
import random
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from salbench.config import REPO_ROOT, RunConfig
from salbench.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What :func:`setup_runtime` set; recorded in every manifest."""

    device: str
    seed: int
    threads: int
    deterministic: bool
    torch_version: str
    cuda_device: str | None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def generator(self, key: str, index: int = 0) -> torch.Generator:
        """The generator of one keyed random draw of this run (see :func:`keyed_generator`)."""
        return keyed_generator(self.seed, key, index, self.device)


def keyed_generator(seed: int, key: str, index: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded by a stable function of (run ``seed``, ``key``, ``index``).

    Every random draw of a run takes its own: ``key`` names what is drawn (a map store id, or
    ``"monotonicity:<method>"``), ``index`` which part (an aligned batch). The seed does not depend on
    the process, the batch composition or the order of the draws, so a resumed or sharded run draws
    exactly what an uninterrupted one does.
    """
    mixed = (seed * 1_000_003 + zlib.crc32(key.encode()) * 7919 + index) % 2**63
    g = torch.Generator(device=device)
    g.manual_seed(mixed)
    return g


def resolve_device(requested: str) -> str:
    """``cpu``, ``cuda`` (error if no GPU) or ``auto`` (cuda when available)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available on this machine; use --device cpu")
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"--device {requested!r}: choose cpu, cuda or auto")
    return requested


def setup_runtime(run: RunConfig) -> Runtime:
    """Seed python/numpy/torch, request deterministic kernels, set threads, resolve the device."""
    device = resolve_device(run.device)
    random.seed(run.seed)
    np.random.seed(run.seed % 2**32)
    torch.manual_seed(run.seed)
    if run.threads > 0:
        torch.set_num_threads(run.threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Denormal floats make CPU kernels tens of times slower on some (e.g. untrained) models.
    torch.set_flush_denormal(True)
    if device == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return Runtime(
        device=device,
        seed=run.seed,
        threads=torch.get_num_threads(),
        deterministic=True,
        torch_version=torch.__version__,
        cuda_device=torch.cuda.get_device_name(0) if device == "cuda" else None,
    )


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The repository's HEAD commit (with ``-dirty`` when the tree has changes), or None."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, Any]:
    """Versions of python and the libraries whose numbers we report."""
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in (
        "salbench",
        "torch",
        "torchvision",
        "numpy",
        "grad-cam",
        "captum",
        "lime",
        "scikit-image",
        "zarr",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group, ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if world_info()[1] > 1:
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` outside a process group.

    A collective: every rank must call it, in the same order of calls, and it returns once all have
    (so it also orders what the ranks did before it, like :func:`barrier`).
    """
    world = world_info()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def from_rank_zero(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank of the process group (``obj`` itself outside one);
    returns once rank 0 has sent it, so it also orders the ranks after rank 0's work."""
    if world_info()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def distributed(device: str) -> Iterator[tuple[int, int]]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``; yield ``(rank, world_size)``.

    nccl on CUDA (one GPU per process, ``LOCAL_RANK``), gloo on CPU; the group is destroyed on exit.
    Outside ``torchrun`` (or inside an existing group) nothing is set up.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield world_info()
        return
    cuda = resolve_device(device) == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # rank 0 may work alone for long while the others wait (ROAR's maps, a method's preparation, a
    # variant's images), and ranks finishing their shards early wait for the others: allow for it
    dist.init_process_group("nccl" if cuda else "gloo", timeout=dt.timedelta(hours=4))
    try:
        yield world_info()
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread inside the block (restored on exit).

    Training sums weight gradients over a batch in an order that depends on the thread count, so the
    embedded models train on one thread: their checkpoints do not depend on how many cores a machine
    has, or on whether the pipeline trains them beside other stages (:mod:`salbench.stages.overlap`).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Run the body on rank 0 first (e.g. generating the benchmark), then on the other ranks."""
    rank, world = world_info()
    if world > 1 and rank != 0:
        dist.barrier()
    yield
    if world > 1 and rank == 0:
        dist.barrier()
