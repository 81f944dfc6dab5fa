"""Run every stage in order in one process (what ``sh_scripts/run_all.sh`` calls).

Each step calls a stage script's ``main(argv)`` exactly as the command line would, so the scripts stay
the single definition of each stage; running them in one process pays the library imports once.
Completed work is skipped by every stage, so a rerun is a quick no-op.

Usage: ``python -m salbench.stages.pipeline [--config FILE] [common flags...]``
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from salbench.config import REPO_ROOT
from salbench.stages.cli import common_parser, config_from_args, entry

log = logging.getLogger("pipeline")
GT = ["--label-set", "groundtruth"]


def _script(relpath: str) -> Callable[[list[str] | None], int]:
    """The ``main`` of a stage script given by its path relative to the repository."""
    path = REPO_ROOT / relpath
    spec = importlib.util.spec_from_file_location(f"_stage_{Path(relpath).stem}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.main


def steps(kind: str, casme_checkpoint: str | None) -> list[tuple[str, str, list[str]]]:
    """``(stage title, script, extra args)`` in order, for a data kind."""
    out: list[tuple[str, str, list[str]]] = []
    if kind == "embedded":
        out += [
            (
                "0/5 embedded classifiers",
                "main/train_embedded.py",
                ["--models", "embedded_resnet", "embedded_vgg"],
            ),
            ("0/5 CASME masker", "main/train_casme.py", []),
            ("0/5 diagnostics of the VGG-style model", "main/diagnostics.py", ["--model", "embedded_vgg"]),
        ]
    out += [
        ("1/5 diagnostics", "main/diagnostics.py", []),
        ("2/5 maps: controls", "generation/baselines.py", []),
        ("2/5 maps: gradients", "generation/gradients.py", ["--deprocess", "smoothgrad"]),
        (
            "2/5 maps: gradients, jacobgil deprocessing",
            "generation/gradients.py",
            [
                *GT,
                "--deprocess",
                "jacobgil",
                "--method",
                "gradient",
                "guided_backprop",
                "integrated_gradients",
            ],
        ),
        ("2/5 maps: CAMs", "generation/cams.py", []),
        ("2/5 maps: RISE", "generation/rise.py", []),
        ("2/5 maps: LIME", "generation/lime.py", []),
        ("2/5 maps: IBA", "generation/iba.py", []),
    ]
    if kind == "embedded":
        out.append(("2/5 maps: CASME", "generation/casme.py", []))
    elif casme_checkpoint:
        out.append(("2/5 maps: CASME", "generation/casme.py", ["--masker", casme_checkpoint]))
    out += [
        ("3/5 interpretable recognition", "evaluation/interpretable_recognition.py", []),
        ("3/5 fidelity / complexity", "evaluation/complexity_analysis.py", GT),
        ("3/5 localization", "evaluation/localization.py", GT),
        ("4/5 augmented: transform + maps", "augmented/generate.py", []),
        ("4/5 augmented: evaluation", "augmented/evaluate.py", []),
        ("5/5 report", "evaluation/report.py", []),
    ]
    return out


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` minus ``option VALUE`` / ``option=VALUE`` (flags the stage scripts do not take)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = common_parser("Run every stage on one configuration (default: the embedded benchmark).")
    p.add_argument("--casme-checkpoint", help="CASME masker for non-embedded data (skipped without it)")
    return p


@entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        argv = ["--config", str(REPO_ROOT / "configs" / "embedded.yaml"), *argv]
        args = parser.parse_args(argv)
    cfg = config_from_args(args)
    common = _without_option(argv, "--casme-checkpoint")
    start = time.perf_counter()
    timings = []
    for title, script, extra in steps(cfg.data.kind, args.casme_checkpoint):
        print(f"\n=== {title}: python {script} {' '.join(extra)} ===", flush=True)
        t0 = time.perf_counter()
        rc = _script(script)([*common, *extra])
        timings.append((title, script, time.perf_counter() - t0))
        if rc != 0:
            print(f"stage {script} failed with exit code {rc}; completed work is kept, rerun to resume")
            return rc
    root = Path(cfg.run.output_root)
    print("\nstage timings (s):")
    for title, script, seconds in timings:
        print(f"  {seconds:8.1f}  {title} ({script})")
    print(f"done in {time.perf_counter() - start:.0f} s")
    print(f"results: {root / 'results.csv'}")
    print(f"tables:  {root / 'report' / 'tables'}")
    print(f"report:  {root / 'report' / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
