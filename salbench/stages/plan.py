"""``salbench plan``: what ``salbench run`` would still compute for a config, without computing anything.

It reads only the run folder (no model is built, no image decoded): the trained checkpoints, the
diagnostics, every map store the pipeline's generation steps write (rows done of rows listed) and every
per-image evaluation file, then prints one line per step with what is done and what is missing. Whether
a completed output still matches its inputs (model, maps, parameters) is checked by the stage itself
when it runs: ``plan`` reports what is on disk.

``salbench plan --costs [--n-images N]`` prints instead what the whole run costs from scratch: the model
passes per stage and per method x metric group (:mod:`salbench.stages.costs`) and their estimated time
on the run's device, measured with the run's model on a few calibration batches
(:mod:`salbench.stages.calibration`), alone and divided over 8 and 64 such devices; the rows go to
``<output_root>/plan_costs.csv`` too (``--no-write``: printed only).
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from salbench.config import CONFIG_DIR, Config
from salbench.errors import ConfigError, DataError
from salbench.runtime import setup_runtime
from salbench.stages import costs
from salbench.stages.calibration import PlannedModel, Timing, calibrate, listed_images, plan_model
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.costs import BACKWARD_COST, CostRow, Passes, cost_rows
from salbench.stages.pipeline import Step, steps
from salbench.store.layout import RunLayout, embedded_checkpoint, model_folder
from salbench.store.maps import MapStore
from salbench.store.outputs import write_csv

_EVALUATED = {"recognition": None, "complexity": ("groundtruth",), "localization": ("groundtruth",)}
"""Evaluation kinds of the pipeline and the label sets each is run on (None: the run's label sets)."""


@dataclasses.dataclass(frozen=True)
class StoreStatus:
    """One expected map store: ``done`` rows of ``total`` (``total`` 0: the store does not exist)."""

    label_set: str
    store_id: str
    done: int
    total: int

    @property
    def state(self) -> str:
        if not self.total:
            return "missing"
        return "done" if self.done == self.total else f"{self.done}/{self.total} rows"


def _argv_value(argv: tuple[str, ...], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def expected_stores(cfg: Config, step: Step) -> Iterator[tuple[str, str]]:
    """``(label_set, store id)`` of every map store a generation step writes."""
    methods = [
        costs.store_id(m, costs.method_params(cfg, m, overrides))
        for m, overrides in costs.step_methods(cfg, step)
    ]
    for label_set in costs.step_label_sets(cfg, step):
        for method in methods:
            yield label_set, method


def store_status(layout: RunLayout, label_set: str, store_id: str) -> StoreStatus:
    path = layout.maps(label_set, store_id)
    if not path.exists():
        return StoreStatus(label_set, store_id, 0, 0)
    try:
        store = MapStore.read_only(path)
    except DataError:
        return StoreStatus(label_set, store_id, 0, 0)
    total = len(store.ids)
    return StoreStatus(label_set, store_id, total - len(store.pending()), total)


def evaluation_done(layout: RunLayout, label_set: str, store_id: str, kind: str) -> bool:
    """The per-image file of ``kind`` and its record of inputs exist."""
    final = layout.evaluation_dir(label_set) / f"{store_id}_{kind}.csv"
    return final.is_file() and final.with_suffix(".json").is_file()


def _details(todo: list[StoreStatus]) -> Iterator[str]:
    """One line per label set: the stores to compute, with their rows done where they are partial."""
    for label_set in dict.fromkeys(s.label_set for s in todo):
        names = [
            s.store_id + ("" if s.state == "missing" else f" ({s.state})")
            for s in todo
            if s.label_set == label_set
        ]
        yield f"      {label_set}: {', '.join(names)}"


def _with_model(cfg: Config, name: str) -> Config:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=name))


def plan_lines(cfg: Config, casme_checkpoint: str | None = None) -> list[str]:
    """The plan as printed lines: one per step, then a count of what remains."""
    layout = RunLayout.from_config(cfg)
    lines = [f"run folder {layout.root} (model {cfg.model.name}, protocol {cfg.run.protocol})"]
    stores: list[StoreStatus] = []
    missing = 0
    detail: list[str] = []
    for step in steps(cfg.data.kind, casme_checkpoint):
        if step.command == "train":
            names = [a for a in step.argv if not a.startswith("--")]
            paths = [embedded_checkpoint(_with_model(cfg, n)) for n in names]
            state = "done" if all(p.is_file() for p in paths) else "to train"
        elif step.command == "diagnostics":
            model = _argv_value(step.argv, "--model") or cfg.model.name
            state = (
                "done"
                if (layout.root / model_folder(model) / "diagnostics" / "diagnostics.csv").is_file()
                else "to run"
            )
        elif step.command == "train-casme":
            from casme_utils.checkpoint import resolve_checkpoint

            state = "done" if Path(resolve_checkpoint(cfg)).is_file() else "to train"
        elif step.command == "generate":
            found = [store_status(layout, ls, s) for ls, s in expected_stores(cfg, step)]
            stores += found
            todo = [s for s in found if s.state != "done"]
            state = "done" if not todo else f"{len(todo)} of {len(found)} stores to compute"
            detail = list(_details(todo))
        elif step.command == "evaluate":
            kind = step.options["kind"]
            label_sets = _EVALUATED.get(kind) or cfg.run.label_sets
            pairs = [(s.label_set, s.store_id) for s in stores if s.label_set in label_sets]
            todo = [p for p in pairs if not evaluation_done(layout, *p, kind)]
            state = (
                "done" if pairs and not todo else f"{len(todo)} of {len(pairs)} (label set, method) to score"
            )
        elif step.command == "report":
            state = "written" if (layout.report_dir / "REPORT.md").is_file() else "to write"
        else:
            state = "checked when it runs"
        missing += state not in ("done", "written", "checked when it runs")
        lines += [f"  {step.title:44s} {state}", *detail]
        detail = []
    lines.append("nothing left to compute" if not missing else f"{missing} step(s) with work left")
    return lines


COSTS_CSV = "plan_costs.csv"
"""The cost plan's rows, written under the run's output root."""
DEVICES = (1, 8, 64)
"""Numbers of devices the estimated time is divided over."""


def duration(seconds: float) -> str:
    """``seconds`` as a reader sizes it: s, min, h or days."""
    if seconds < 90:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    days = seconds / 86400
    return f"{days:.1f} days" if days < 100 else f"{days:,.0f} days"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


@dataclasses.dataclass(frozen=True)
class Line:
    """One (stage, method, group) of the cost plan: its rows summed (the variants of an augmentation).

    Attributes:
        units: explained images: images x label sets (x variants).
        total: passes over all units.
        seconds: estimated time on the calibrated device.
    """

    stage: str
    method: str
    group: str
    units: int
    total: Passes
    seconds: float
    note: str = ""

    def per_unit(self, value: int) -> float:
        return value / self.units if self.units else 0.0


def summed(rows: list[CostRow], timing: Timing) -> list[Line]:
    """Rows of the same (stage, method, group) summed, in first-seen order, each timed by ``timing``."""
    keys: dict[tuple[str, str, str], list[CostRow]] = {}
    for r in rows:
        keys.setdefault((r.stage, r.method, r.group), []).append(r)
    out = []
    for (stage, method, group), same in keys.items():
        total = Passes()
        for r in same:
            total = total + r.total
        seconds = sum(timing.seconds(r.total, r.scale) for r in same)
        out.append(Line(stage, method, group, sum(r.units for r in same), total, seconds, same[0].note))
    return out


@dataclasses.dataclass(frozen=True)
class CostReport:
    """The cost plan of a run: its lines, the calibration and what the numbers rest on."""

    cfg: Config
    n_images: int
    planned: PlannedModel
    timing: Timing
    lines: list[Line]

    def frame(self) -> pd.DataFrame:
        """One CSV row per line: passes per unit and in total, forward-equivalents, seconds."""
        records = []
        for ln in self.lines:
            t = ln.total
            records.append(
                {
                    "stage": ln.stage,
                    "method": ln.method,
                    "group": ln.group,
                    "units": ln.units,
                    "forward_per_unit": ln.per_unit(t.forward),
                    "backward_per_unit": ln.per_unit(t.backward),
                    "passes_per_unit": ln.per_unit(t.total),
                    "forward_equivalents_per_unit": ln.per_unit(t.equivalents),
                    "forward": t.forward,
                    "backward": t.backward,
                    "forward_equivalents": t.equivalents,
                    "seconds": ln.seconds,
                    "note": ln.note,
                }
            )
        return pd.DataFrame.from_records(records)

    def text(self) -> list[str]:
        """The printed plan: a line per (stage, method, group), the stages with 1/8/64 devices, notes."""
        p = self.planned
        layer = f"{p.layer} ({p.shape.layer_channels} channels)" if p.layer else f"none ({p.shape.no_layer})"
        h, w = p.shape.size
        head = (
            f"cost plan of salbench run: {self.cfg.model.name}, protocol {self.cfg.run.protocol}, "
            f"{self.n_images:,} images x label sets {', '.join(self.cfg.run.label_sets)}; input "
            f"{p.shape.channels}x{h}x{w}, target layer {layer}"
        )
        return [head, "", *self.table(), "", *self.stages(), *self.notes()]

    def table(self) -> list[str]:
        """One line per (stage, method, group): passes per unit, forward-equivalents in all, time."""
        out = [
            f"{'stage':44s} {'method':32s} {'group':13s} {'units':>9s} {'fwd':>7s} {'bwd':>6s} "
            f"{'fwd-eq':>7s} {'total fwd-eq':>15s} {'time':>9s}"
        ]
        for ln in self.lines:
            tot = ln.total
            out.append(
                f"{ln.stage[:44]:44s} {ln.method[:32]:32s} {ln.group:13s} {ln.units:9,d} "
                f"{_number(ln.per_unit(tot.forward)):>7s} {_number(ln.per_unit(tot.backward)):>6s} "
                f"{_number(ln.per_unit(tot.equivalents)):>7s} {tot.equivalents:15,d} "
                f"{duration(ln.seconds):>9s}" + (f"  {ln.note}" if ln.note else "")
            )
        return out

    def stages(self) -> list[str]:
        """One line per pipeline step (the variants of the augmented stage together) and the total:
        forward-equivalents and the time on 1, 8 and 64 devices."""
        steps: dict[str, list[Line]] = {}
        for ln in self.lines:
            steps.setdefault(ln.stage.split(" (")[0], []).append(ln)
        totals = [
            (name, sum(x.total.equivalents for x in ls), sum(x.seconds for x in ls))
            for name, ls in steps.items()
        ]
        totals.append(("total", sum(x[1] for x in totals), sum(x[2] for x in totals)))
        out = [f"{'stage':44s} {'total fwd-eq':>16s} " + " ".join(f"{self.devices(k):>12s}" for k in DEVICES)]
        for name, eq, seconds in totals:
            out.append(f"{name:44s} {eq:16,d} " + " ".join(f"{duration(seconds / k):>12s}" for k in DEVICES))
        return out

    def devices(self, k: int) -> str:
        """``1 GPU``, ``8 GPUs`` (``CPU`` when calibrated on the CPU)."""
        unit = {"cuda": "GPU", "cpu": "CPU"}.get(self.timing.device.split()[0].split(":")[0], "device")
        return f"{k} {unit}" + ("s" if k > 1 else "")

    def notes(self) -> list[str]:
        """What the numbers rest on, wrapped at 110 characters."""
        t = self.timing
        model = self.planned.stand_in or f"{self.cfg.model.name} with its weights"
        where = f"batch {t.batch_size} (best of {t.batches} after a warm-up), {model}"
        notes = [
            f"calibration on {t.device}, {where if t.batches else 'not measured here'}: forward "
            f"{t.forward_s * 1000:.3g} ms/image, forward+backward {t.forward_backward_s * 1000:.3g} ms/image",
            "units: images x label sets (x variants). fwd, bwd: forward and backward rows per unit as "
            "salbench.scoped.count_passes counts them (generation prints fwd + bwd as 'model passes/image'); "
            f"fwd-eq = fwd + {BACKWARD_COST} x bwd (a backward costs about two forwards)",
            "time: a fwd paired with a bwd at the forward+backward time, other fwd at the forward time, "
            "resized variants by their pixel count; K GPUs (CPUs): the time / K, every stage sharded over "
            "torchrun processes. Not included: data loading, non-model work (LIME's surrogates, IBA's "
            "feature statistics, RISE's masks), training (embedded classifiers, CASME), the embedded VGG's "
            "diagnostics",
        ]
        return ["", *(line for note in notes for line in textwrap.wrap(note, 110, subsequent_indent="  "))]


def cost_report(
    cfg: Config,
    n_images: int | None = None,
    *,
    casme_checkpoint: str | None = None,
    augment_label_sets: tuple[str, ...] = ("groundtruth",),
    batches: int = 2,
    per_image_ms: tuple[float, float] | None = None,
) -> CostReport:
    """The cost plan of ``salbench run`` with ``cfg`` on ``n_images`` images (None: the run's list);
    ``per_image_ms``: (forward, forward+backward) milliseconds per image measured elsewhere (on the GPU
    the run will use) instead of a calibration here.

    Raises:
        DataError: ``n_images`` is None and the run's images cannot be listed.
    """
    if n_images is None:
        try:
            n_images = listed_images(cfg)
        except DataError as exc:
            raise DataError(f"cannot count the run's images ({exc}); give --n-images N") from None
    runtime = setup_runtime(cfg.run)
    planned = plan_model(cfg, runtime.device)
    if per_image_ms is None:
        timing = calibrate(planned.model, planned.shape, runtime.device, cfg.run.batch_size, batches)
    else:
        forward, both = (v / 1000 for v in per_image_ms)
        timing = Timing("the given times (--per-image-ms)", cfg.run.batch_size, 0, forward, both)
    rows = cost_rows(cfg, planned.shape, n_images, casme_checkpoint, augment_label_sets)
    return CostReport(cfg, n_images, planned, timing, summed(rows, timing))


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("--casme-checkpoint", help="CASME masker for non-embedded data (as for salbench run)")
    c = p.add_argument_group("costs")
    c.add_argument(
        "--costs",
        action="store_true",
        help="model passes and estimated time of the whole run, per stage and method x metric group",
    )
    c.add_argument("--n-images", type=int, help="plan for N images instead of the run's image list")
    c.add_argument(
        "--calibration-batches", type=int, default=2, help="timed batches per measurement (after a warm-up)"
    )
    c.add_argument("--no-write", action="store_true", help="print only (no <output_root>/plan_costs.csv)")
    c.add_argument(
        "--per-image-ms",
        type=float,
        nargs=2,
        metavar=("FORWARD", "FORWARD_BACKWARD"),
        help="ms per image of a forward and of a forward+backward measured on the target device, "
        "instead of calibrating here",
    )


def _run(args: argparse.Namespace, options: Options) -> int:
    if args.config is None:
        args.config = str(CONFIG_DIR / "embedded.yaml")
    given = [f for f, v in (("--n-images", args.n_images), ("--no-write", args.no_write)) if v]
    if given and not args.costs:
        raise ConfigError(f"{given[0]} goes with --costs")
    if args.n_images is not None and args.n_images < 1:
        raise ConfigError(f"--n-images must be >= 1, got {args.n_images}")
    if args.calibration_batches < 1:
        raise ConfigError(f"--calibration-batches must be >= 1, got {args.calibration_batches}")
    if args.per_image_ms and not (args.costs and 0 < args.per_image_ms[0] <= args.per_image_ms[1]):
        raise ConfigError("--per-image-ms F FB goes with --costs, with 0 < F <= FB (milliseconds)")
    cfg = config_from_args(args)
    if not args.costs:
        print("\n".join(plan_lines(cfg, args.casme_checkpoint)))
        return 0
    configure_logging(args.verbose)
    report = cost_report(
        cfg,
        args.n_images,
        casme_checkpoint=args.casme_checkpoint,
        augment_label_sets=tuple(cfg.run.label_sets) if args.label_set else ("groundtruth",),
        batches=args.calibration_batches,
        per_image_ms=args.per_image_ms,
    )
    print("\n".join(report.text()))
    if not args.no_write:
        path = Path(cfg.run.output_root) / COSTS_CSV
        write_csv(path, report.frame())
        print(f"written: {path}")
    return 0


COMMAND = register(
    Command(
        "plan",
        "what `salbench run` would still compute (reads the run folder only); --costs: passes and time",
        _arguments,
        _run,
    )
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)
