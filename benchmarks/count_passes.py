"""Model passes a finished run made, counted from its own records (not estimated).

Every map store records the rows its last generation pushed through the model (``last_run``:
``forward_rows``, ``backward_rows``, maps computed and maps copied from an earlier label set), and every
evaluation manifest the rows of its evaluation (``model_passes``, ``reused_rows``). This script sums
them per stage and label set for each run folder given, and per image of the run, so a run with label-set
reuse and one without (``--no-reuse``) can be compared::

    python benchmarks/count_passes.py runs/embedded runs/embedded_no_reuse [--model embedded_resnet]

Counts cover one complete run of every store and evaluation (the records of the last run of each); a
folder resumed in several runs counts only the last part. Diagnostics (one forward pass per image) and
training are not counted.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import pandas as pd

from salbench.store.maps import MapStore


def count(model_dir: Path) -> pd.DataFrame:
    """One row per (stage, label set): passes (forward + backward rows), maps/scores computed and copied."""
    rows: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for path in sorted(model_dir.rglob("*.zarr")):
        last = MapStore.read_only(path).attrs.get("last_run") or {}
        stage = "augmented maps" if "augmented" in path.relative_to(model_dir).parts else "maps"
        r = rows[(stage, path.parent.name)]
        r["passes"] += int(last.get("forward_rows", 0)) + int(last.get("backward_rows", 0))
        r["computed"] += int(last.get("n_computed", 0))
        r["copied"] += int(last.get("n_reused", 0))
    for path in sorted(model_dir.rglob("*_manifest.json")):
        record = json.loads(path.read_text())
        if "model_passes" not in record:
            continue
        stage = "augmented scores" if "augmented" in path.relative_to(model_dir).parts else "scores"
        kind = path.name.removesuffix("_manifest.json")
        r = rows[(f"{stage}: {kind}", path.parent.name)]
        r["passes"] += sum(record["model_passes"].values())
        copied = sum(record.get("reused_rows", {}).values())
        r["copied"] += copied
        r["computed"] += len(record.get("reused_rows", {})) * record.get("n_images", 0) - copied
    return pd.DataFrame([{"stage": s, "label_set": ls, **v} for (s, ls), v in sorted(rows.items())])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="run output roots")
    p.add_argument("--model", default="embedded_resnet", help="model folder under each root")
    p.add_argument("--n-images", type=int, default=64, help="images of the run (per-image totals)")
    args = p.parse_args(argv)
    for root in args.roots:
        frame = count(root / args.model)
        print(
            f"\n{root}: {frame['passes'].sum():,.0f} model passes, "
            f"{frame['passes'].sum() / args.n_images:,.0f} per image of the run"
        )
        print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
