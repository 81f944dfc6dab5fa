"""Subprocess used by tests/test_store.py: fills a map store batch by batch, like a generation stage.

Each computed row is appended to a log (one line per batch, flushed before the write) so the test can
count recomputations. ``--die-before-mark K`` SIGKILLs this process after the data of the K-th batch is
written but before its rows are marked complete.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salbench.store.maps import MapStore, shard_rows

SHAPE = (8, 12)


def image_ids(n: int) -> list[str]:
    """Ids of ``n`` images, some in sub-folders like ImageNet's ``class/file`` paths."""
    return [f"c{i % 3}/img_{i:04d}" for i in range(n)]


def expected_map(row: int) -> np.ndarray:
    """The map of ``row`` ``(8, 12)`` float32: a function of the row only, as a deterministic method's."""
    return np.random.default_rng(1000 + row).standard_normal(SHAPE).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("log")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--chunk-rows", type=int, default=4)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--shard", type=int, nargs=2, default=None, metavar=("INDEX", "COUNT"))
    parser.add_argument("--die-before-mark", type=int, default=-1)
    args = parser.parse_args(argv)
    shard = None if args.shard is None else shard_rows(args.n, *args.shard, chunk_rows=args.chunk_rows)
    cls = MapStore
    if args.die_before_mark >= 0:

        class DyingStore(MapStore):
            marks = 0

            def _mark_done(self, rows: np.ndarray) -> None:
                DyingStore.marks += 1
                if DyingStore.marks > args.die_before_mark:
                    os.kill(os.getpid(), signal.SIGKILL)
                super()._mark_done(rows)

        cls = DyingStore
    store = cls.open(
        args.path, image_ids(args.n), SHAPE, chunk_rows=args.chunk_rows, attrs={"method": "test"}, shard=shard
    )
    todo = store.pending(shard)
    with open(args.log, "a") as log:
        for k in range(0, todo.size, args.batch):
            rows = todo[k : k + args.batch]
            maps = np.stack([expected_map(int(r)) for r in rows])
            log.write(" ".join(str(int(r)) for r in rows) + "\n")
            log.flush()
            time.sleep(args.sleep)
            store.write(rows, maps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
