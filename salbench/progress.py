"""Progress bars for long loops: shown on an interactive terminal, silent in logs and pipes.

``SALBENCH_PROGRESS=1`` forces them on, ``SALBENCH_PROGRESS=0`` off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar (``enabled=False`` or a non-terminal stderr: no bar)."""
    env = os.environ.get("SALBENCH_PROGRESS", "")
    disable: bool | None = None  # tqdm: off when stderr is not a terminal
    if env in ("0", "1"):
        disable = env == "0"
    if not enabled:
        disable = True
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True))
