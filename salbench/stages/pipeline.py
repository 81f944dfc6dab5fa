"""Every stage in order in one process: ``salbench run`` (what ``sh_scripts/run_all.sh`` calls).

Each step runs a registered command (:data:`salbench.stages.cli.COMMANDS`) with the options of the
study's stage script, exactly as ``salbench <command>`` or the script would from the command line;
running them in one process pays the library imports once. Completed work is skipped by every stage,
so a rerun is a quick no-op.

Under ``torchrun`` the pipeline joins the process group once (:func:`salbench.runtime.distributed`;
the stages find it joined): the steps that must run once (:data:`ONCE`: training, the report) run on
rank 0 while the other ranks wait for its exit code, every other stage runs on every rank and shares
its work out itself. A rank whose step fails returns its exit code, and ``torchrun`` stops the others.

Usage: ``salbench run [--config FILE] [common flags...]`` or ``python -m salbench.stages.pipeline``;
``torchrun --nproc_per_node N -m salbench.stages.pipeline [flags...]`` on N processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from salbench.config import CONFIG_DIR, PROTOCOLS
from salbench.data.sources import ensure_embedded
from salbench.runtime import distributed, from_rank_zero, resolve_device, world_info
from salbench.stages.cli import COMMANDS, Command, Options, config_from_args, entry, load_commands, register
from salbench.stages.generate import methods_of_family
from salbench.stages.overlap import Background
from salbench.stages.report import PROTOCOLS_DIR

log = logging.getLogger("pipeline")
GT = ["--label-set", "groundtruth"]
DIAG = "1/5 diagnostics"
ONCE = frozenset({"train", "train-casme", "report"})
"""Commands run by rank 0 alone under ``torchrun`` (one benchmark, one set of trained models, one
report); every other command shares its work out over the ranks."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: a command with the options of one stage script and extra flags."""

    title: str
    command: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    argv: tuple[str, ...] = ()
    background: bool = False
    """Needed by no step but the report: may run beside the others (see :mod:`.overlap`)."""
    after: str = ""
    """Title of the step it needs (run beside the others, it starts once that step is done)."""

    @property
    def once(self) -> bool:
        """Run by rank 0 alone under ``torchrun`` (see :data:`ONCE`)."""
        return self.command in ONCE

    def describe(self) -> str:
        fixed = " ".join(f"{k}={v}" for k, v in self.options.items() if k != "methods")
        return " ".join(p for p in (f"salbench {self.command}", fixed, *self.argv) if p)


def steps(kind: str, casme_checkpoint: str | None) -> list[Step]:
    """The steps in order for a data kind (the embedded default trains its models first)."""
    out: list[Step] = []
    if kind == "embedded":
        vgg = ("--model", "embedded_vgg")
        out += [
            Step("0/5 VGG-style classifier", "train", argv=("--models", "embedded_vgg"), background=True),
            Step("0/5 diagnostics of the VGG-style model", "diagnostics", argv=vgg, background=True),
            Step("0/5 embedded classifier", "train", argv=("--models", "embedded_resnet")),
            Step("0/5 CASME masker", "train-casme"),
        ]
    gradient = methods_of_family("Gradient")
    out += [
        Step(DIAG, "diagnostics"),
        Step("2/5 maps: controls", "generate", {"methods": methods_of_family("Uninformed", "Control")}),
        Step("2/5 maps: gradients", "generate", {"methods": gradient}, ("--deprocess", "smoothgrad")),
        Step(
            "2/5 maps: gradients, jacobgil deprocessing",
            "generate",
            {"methods": gradient},
            (
                *GT,
                "--deprocess",
                "jacobgil",
                "--method",
                "gradient",
                "guided_backprop",
                "integrated_gradients",
            ),
        ),
        Step("2/5 maps: CAMs", "generate", {"methods": methods_of_family("CAM")}),
        Step("2/5 maps: RISE", "generate", {"methods": ["rise"]}),
        Step("2/5 maps: LIME", "generate", {"methods": ["lime"]}),
        Step("2/5 maps: IBA", "generate", {"methods": ["iba"]}),
    ]
    if kind == "embedded":
        out.append(Step("2/5 maps: CASME", "generate", {"methods": ["casme"]}))
    elif casme_checkpoint:
        out.append(
            Step("2/5 maps: CASME", "generate", {"methods": ["casme"]}, ("--masker", casme_checkpoint))
        )
    out += [
        Step("3/5 interpretable recognition", "evaluate", {"kind": "recognition"}),
        Step("3/5 fidelity / complexity", "evaluate", {"kind": "complexity"}, tuple(GT)),
        Step("3/5 localization", "evaluate", {"kind": "localization"}, tuple(GT)),
        Step("4/5 augmented: transform + maps", "augment", {"step": "generate"}, background=True, after=DIAG),
        Step("4/5 augmented: evaluation", "augment", {"step": "evaluate"}, background=True, after=DIAG),
        Step("5/5 report", "report"),
    ]
    return out


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` minus ``option VALUE`` / ``option=VALUE`` (flags the stage commands do not take)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def _without_values(argv: list[str], option: str) -> list[str]:
    """``argv`` minus ``option V1 V2 ...`` (every value up to the next flag) / ``option=V``."""
    out, skipping = [], False
    for a in argv:
        if skipping and not a.startswith("-"):
            continue
        skipping = a == option
        if not skipping and not a.startswith(option + "="):
            out.append(a)
    return out


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("--casme-checkpoint", help="CASME masker for non-embedded data (skipped without it)")


def run_step(step: Step, argv: list[str]) -> int:
    """Run ``step``'s command with the common flags ``argv``; its exit code on this rank.

    A :attr:`Step.once` step runs on rank 0 alone inside a process group; the others wait for its exit
    code, so no rank starts the next step before it is done.
    """
    command = load_commands().get(step.command)
    rank, world = world_info()
    if world == 1 or not step.once:
        return command.main([*argv, *step.argv], step.options)
    rc = command.main([*argv, *step.argv], step.options) if rank == 0 else 0
    return int(from_rank_zero(rc))


def run_pipeline(argv: list[str]) -> int:
    """Run every step with the common flags ``argv`` (default config: the embedded benchmark); on every
    rank under ``torchrun``."""
    parser = COMMANDS.get("run").parser()
    args = parser.parse_args(argv)
    if args.config is None:
        argv = ["--config", str(CONFIG_DIR / "embedded.yaml"), *argv]
        args = parser.parse_args(argv)
    cfg = config_from_args(args)
    common = _without_option(argv, "--casme-checkpoint")
    with distributed(cfg.run.device) as (rank, world):
        start, timings = time.perf_counter(), []
        todo = steps(cfg.data.kind, args.casme_checkpoint)
        side = None
        if Background.wanted(todo, resolve_device(cfg.run.device), cfg.run.threads, world):
            ensure_embedded(cfg)  # the benchmark both processes read, generated once
            side = Background([s for s in todo if s.background], common, Path(cfg.run.output_root) / "logs")
            todo = [s for s in todo if not s.background]
            side.start()
        for step in todo:
            if side is not None and (step.command == "report" or side.poll()):
                rc = side.wait()
                timings.append((side.seconds, f"background, one thread: {side.describe()}"))
                side = None
                if rc != 0:
                    return rc
            if rank == 0:
                print(f"\n=== {step.title}: {step.describe()} ===", flush=True)
            t0 = time.perf_counter()
            rc = run_step(step, common)
            timings.append((time.perf_counter() - t0, f"{step.title} ({step.describe()})"))
            if rc != 0:
                print(
                    f"stage {step.command} failed with exit code {rc} (rank {rank} of {world}); completed "
                    "work is kept, rerun to resume"
                )
                if side is not None:
                    side.cancel()
                    side.wait()
                return rc
            if side is not None:
                side.mark_done(step.title)
    if rank:
        return 0
    root = Path(cfg.run.output_root)
    print(f"\nstage timings (s){f', {world} processes' if world > 1 else ''}:")
    for seconds, what in timings:
        print(f"  {seconds:8.1f}  {what}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    print(f"results: {root / 'results.csv'}")
    print(f"tables:  {root / 'report' / 'tables'}")
    print(f"report:  {root / 'report' / 'REPORT.md'}")
    return 0


def _run(args: argparse.Namespace, options: Options) -> int:
    return run_pipeline(list(options["argv"]))


class _Pipeline(Command):
    """``run`` re-parses its own argv (the steps take the same common flags)."""

    def main(
        self, argv: list[str] | None = None, options: Options | None = None, prog: str | None = None
    ) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        return entry(run_pipeline)(argv)


COMMAND = _Pipeline("run", "every stage in order (the embedded default without --config)", _arguments, _run)


def _compare_arguments(p: argparse.ArgumentParser, options: Options) -> None:
    _arguments(p, options)
    p.add_argument(
        "--protocols",
        nargs="+",
        choices=PROTOCOLS,
        default=list(PROTOCOLS),
        help="protocols to run; the first is the run's own (output root), the others go under "
        "<output_root>/protocols/<protocol>/",
    )


def run_comparison(argv: list[str]) -> int:
    """The pipeline under several protocols; the report of the first compares them.

    The first protocol runs in the output root as ``salbench run`` would; each other one in
    ``<output_root>/protocols/<protocol>/`` with the benchmark and trained models of the first linked
    in (computed once). The first run's report is rebuilt last: it reads the other folders and gets an
    ``<a> vs <b>`` section per configuration.
    """
    parser = COMMANDS.get("compare").parser()
    args = parser.parse_args(argv)
    protocols = list(dict.fromkeys(args.protocols))
    if len(protocols) < 2:
        parser.error("--protocols needs two different protocols to compare")
    common = _without_option(_without_values(argv, "--protocols"), "--protocol")
    if args.config is None:
        common = ["--config", str(CONFIG_DIR / "embedded.yaml"), *common]
    first = [*common, "--protocol", protocols[0]]
    cfg = config_from_args(parser.parse_args(first))
    with distributed(cfg.run.device) as (rank, _world):
        rc = run_pipeline(first)
        if rc != 0:
            return rc
        root = Path(cfg.run.output_root)
        for protocol in protocols[1:]:
            sub = root / PROTOCOLS_DIR / protocol
            if rank == 0:
                _link_shared(root, sub)
                print(f"\n##### protocol {protocol}: {sub} #####", flush=True)
            from_rank_zero(None)  # the links exist before any rank reads through them
            rc = run_pipeline([*common, "--protocol", protocol, "--output-root", str(sub)])
            if rc != 0:
                return rc
        if rank == 0:
            print(f"\n=== report comparing {', '.join(protocols)} ===", flush=True)
        rc = run_step(Step("report", "report"), _without_option(first, "--casme-checkpoint"))
    if rank == 0:
        print(f"report:  {root / 'report' / 'REPORT.md'}")
    return rc


def _link_shared(root: Path, sub: Path) -> None:
    """The benchmark and trained models of the first protocol's run, linked into ``sub``."""
    sub.mkdir(parents=True, exist_ok=True)
    for shared in ("benchmark", "models"):
        target, link = root / shared, sub / shared
        if target.is_dir() and not link.exists() and not link.is_symlink():
            link.symlink_to(target.resolve(), target_is_directory=True)


class _Comparison(Command):
    """``compare`` re-parses its own argv, as ``run`` does."""

    def main(
        self, argv: list[str] | None = None, options: Options | None = None, prog: str | None = None
    ) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        return entry(run_comparison)(argv)


COMPARE = _Comparison(
    "compare",
    "the pipeline under two protocols (shared data and models), the report side by side",
    _compare_arguments,
    _run,
)
if __name__ != "__main__":
    # ``python -m salbench.stages.pipeline`` runs a second copy of this file as __main__; the commands
    # are registered by the imported module alone (registering them twice is an error)
    register(COMMAND)
    register(COMPARE)


def main(argv: list[str] | None = None) -> int:
    """``python -m salbench.stages.pipeline [flags]`` (and ``torchrun ... -m salbench.stages.pipeline``):
    the registered ``run`` command."""
    return load_commands().get("run").main(argv)


if __name__ == "__main__":
    sys.exit(main())
