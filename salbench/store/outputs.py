"""Atomic, self-describing outputs: temp-name-then-rename writes, file locks, digests, configs, manifests.

Files are written under a temporary name and renamed into place, with the permissions a plain write
would give them (``0o666`` less the user's umask). :func:`file_lock` serialises read-modify-write
cycles between processes (``fcntl.flock`` on a sidecar lock file). :func:`digest` is the short identity
of whatever decides an output, recorded beside it so that a changed input is never mistaken for a
completed output.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from salbench.config import Config, dump_config
from salbench.runtime import Runtime, git_commit, versions


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, else removed.

    The temporary file gets the mode a plain ``open(path, "w")`` would create (``0o666 & ~umask``),
    not ``mkstemp``'s private ``0o600``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block, across processes.

    Blocks until the lock is free; released on exit, even on error or when the process dies.
    """
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def digest(obj: Any, length: int = 16) -> str:
    """Short SHA-256 (hex) of a JSON-serialisable object with sorted keys: the identity of its content."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Atomically write a DataFrame as CSV (no index): ``pd.read_csv(path)`` loads it back."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_run_record(
    out_dir: str | Path,
    cfg: Config,
    runtime: Runtime | None,
    stage: str,
    extra: dict[str, Any] | None = None,
    manifest_name: str = "manifest.json",
) -> None:
    """Write ``config.yaml`` (the resolved configuration) and a manifest beside a stage's outputs."""
    out = Path(out_dir)
    write_text(out / "config.yaml", dump_config(cfg))
    manifest = {
        "stage": stage,
        "protocol": cfg.run.protocol,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": versions(),
        "runtime": None if runtime is None else runtime.__dict__,
        **(extra or {}),
    }
    write_json(out / manifest_name, manifest)
