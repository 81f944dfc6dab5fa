"""Progress bars that move: on stderr, counting images (or steps) with an ETA, and the model passes made
inside a long batch.

Bars are shown on an interactive terminal and stay silent in logs and pipes; ``SALBENCH_PROGRESS=1``
forces them on, ``SALBENCH_PROGRESS=0`` off (the ``--progress on|off`` flag of every command sets it).
:func:`counting_passes` keeps a bar alive while one batch runs for minutes (integrated gradients in
training mode, Score-CAM, RISE with thousands of masks): every forward pass of the model adds its rows to
the bar's ``passes`` field, refreshed at most every :data:`REFRESH_S` seconds.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from torch import nn
from tqdm.auto import tqdm

T = TypeVar("T")
REFRESH_S = 2.0
"""Longest time between two refreshes of a bar while a batch is running."""


def _disabled(enabled: bool) -> bool | None:
    """tqdm's ``disable``: None = only on a terminal; the environment variable and ``enabled`` win."""
    env = os.environ.get("SALBENCH_PROGRESS", "")
    if not enabled or env == "0":
        return True
    return False if env == "1" else None


def progress(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr (``enabled=False`` or a non-terminal stderr: no bar)."""
    return iter(
        tqdm(iterable, desc=desc, total=total, disable=_disabled(enabled), leave=False, dynamic_ncols=True)
    )


def bar(total: int, desc: str, unit: str = "img", enabled: bool = True) -> tqdm:
    """A bar of ``total`` units (images by default) with an ETA; advance it with ``bar.update(n)``."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=_disabled(enabled),
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )


@contextlib.contextmanager
def counting_passes(progress_bar: tqdm, model: nn.Module) -> Iterator[None]:
    """Show the rows pushed through ``model`` in ``progress_bar``'s ``passes`` field while the block runs.

    The forward hook is removed on exit, even on error.
    """
    count, last = [0], [time.monotonic()]

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        shape = getattr(output, "shape", None)
        count[0] += int(shape[0]) if shape else 1
        now = time.monotonic()
        if now - last[0] >= REFRESH_S:
            last[0] = now
            progress_bar.set_postfix(passes=count[0], refresh=True)

    handle = model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
        progress_bar.set_postfix(passes=count[0], refresh=False)
