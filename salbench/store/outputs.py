"""Atomic, self-describing outputs: temp-name-then-rename writes, resolved configs and manifests."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from salbench.config import Config, dump_config
from salbench.runtime import Runtime, git_commit, versions


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, else removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
