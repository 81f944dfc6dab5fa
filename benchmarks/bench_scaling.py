"""Images per second of generation and evaluation with 1, 2, ... processes under torchrun.

Each process count gets a fresh output root whose benchmark and trained models are linked from an
existing run (``--from-run``, e.g. the output root of ``salbench run``), so only the timed stages
compute: diagnostics (untimed, it feeds the targets), then ``salbench generate`` and ``salbench
evaluate recognition`` launched by ``python -m torch.distributed.run --standalone --nproc_per_node P``
with ``--threads T`` per process. The maps and results of every process count are the same (tested in
tests/test_distributed_*.py); this script checks the results.csv values agree and reports wall time,
images per second and the speed-up over one process.

CPU (what the README's numbers come from)::

    python benchmarks/bench_scaling.py --from-run runs/embedded --processes 1 2 --threads 1 --limit 64

GPU (one process per GPU)::

    python benchmarks/bench_scaling.py --from-run runs/acml2024_resnet50 \\
        --config configs/acml2024_resnet50.yaml --device cuda --processes 1 2 8 --limit 512
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def _launch(processes: int, argv: list[str], threads: int) -> float:
    """Seconds of one torchrun launch of ``salbench argv``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += ["-m", "salbench", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SALBENCH_PROGRESS": "0"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from-run", required=True, type=Path, help="output root holding benchmark/ and models/")
    p.add_argument("--config", default=None, help="salbench config (default: the embedded one)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--limit", type=int, default=64, help="images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", nargs="+", default=["gradcam", "integrated_gradients", "rise"])
    p.add_argument("--precision", default="fp32", help="--precision of the stages (fp32, bf16, fp16)")
    p.add_argument("--workers", type=int, default=-1, help="--workers of the stages (-1: automatic)")
    p.add_argument("--out", type=Path, default=None, help="CSV of the table (default: print only)")
    p.add_argument("--results-out", type=Path, default=None, help="copy of the first run's results.csv")
    args = p.parse_args(argv)
    common = ["--limit", str(args.limit), "--threads", str(args.threads), "--device", args.device]
    common += ["--progress", "off", "--precision", args.precision, "--workers", str(args.workers)]
    targets = ["--label-set", "groundtruth"]
    if args.config:
        common += ["--config", args.config]
    rows, values = [], {}
    with tempfile.TemporaryDirectory(prefix="salbench_scaling_") as tmp:
        for procs in args.processes:
            root = Path(tmp) / f"p{procs}"
            root.mkdir()
            for shared in ("benchmark", "models"):
                if (args.from_run / shared).is_dir():
                    (root / shared).symlink_to((args.from_run / shared).resolve(), target_is_directory=True)
            flags = [*common, "--output-root", str(root)]
            _launch(1, ["diagnostics", *flags], args.threads)
            gen = _launch(procs, ["generate", "--method", *args.methods, *targets, *flags], args.threads)
            ev = _launch(procs, ["evaluate", "recognition", *targets, *flags], args.threads)
            results = pd.read_csv(root / "results.csv")
            if args.results_out and procs == args.processes[0]:
                results.to_csv(args.results_out, index=False)
            values[procs] = results.sort_values(["method", "metric"])["value"].to_numpy()
            for stage, seconds in (("generate", gen), ("evaluate recognition", ev)):
                rows.append({"stage": stage, "processes": procs, "threads": args.threads, "seconds": seconds})
                rows[-1] |= {"precision": args.precision, "workers": args.workers}
    table = pd.DataFrame(rows)
    table["images_per_s"] = args.limit / table["seconds"]
    base = table[table["processes"] == min(args.processes)].set_index("stage")["seconds"]
    table["speedup"] = [base[s] / t for s, t in zip(table["stage"], table["seconds"])]
    same = all((v == values[min(values)]).all() for v in values.values())
    print(
        f"{args.limit} images, methods {', '.join(args.methods)}, device {args.device}, precision "
        f"{args.precision}, workers {args.workers}, load {os.getloadavg()[0]:.2f}"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("results.csv values identical across process counts:", same)
    if args.out:
        table.to_csv(args.out, index=False)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
