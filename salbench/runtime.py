"""The one place that sets seeds, determinism, threads and the device, and records what it set."""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

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

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh generator on the run device seeded with ``seed + offset`` (one per stochastic use)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed + offset)
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
