"""Shared harness of the speed benchmarks: workloads, timing, pass counting, bare model cost, CSV and table.

Every row times one implementation of one method or metric at one batch size on one model, after a
warm-up call on the same images, as the best (minimum) wall-clock time over ``repeats`` calls
(``time.perf_counter``, with ``torch.cuda.synchronize`` on GPU), and counts the rows pushed through the
model's forward and backward during the timed call (:func:`salbench.scoped.count_passes`). The ratio
column divides the measured time by the *bare* cost of those passes::

    bare = (forward rows - backward rows) * t_forward + backward rows * t_forward_backward

with ``t_forward`` the best per-row time of plain ``model(x)`` (inference mode) and ``t_forward_backward``
that of ``model(x).sum().backward()`` with frozen parameters (input gradient only, what saliency methods
need), each the fastest over a few batch sizes. A ratio near 1 means the implementation costs what its
model passes cost; above 1, the excess is Python overhead, small batches, extra work (segmentation,
weight gradients, numpy round trips) or a loaded machine.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import io
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from salbench.errors import ConfigError
from salbench.methods.base import MethodContext
from salbench.models.layers import resolve_target_layer
from salbench.saliency import minmax_per_image
from salbench.scoped import (
    PRECISIONS,
    PassCount,
    autocast_passes,
    count_passes,
    frozen_parameters,
    model_mode,
    pass_precision,
)
from salbench.stages.cli import configure_logging, entry

logger = logging.getLogger(__name__)

MODELS: tuple[str, ...] = ("embedded", "resnet50")
INPUT_SIZE: dict[str, int] = {"embedded": 112, "resnet50": 224}
DEFAULT_N_IMAGES: dict[str, int] = {"embedded": 16, "resnet50": 4}
DEFAULT_BATCH_SIZES: dict[str, tuple[int, ...]] = {"embedded": (16, 128), "resnet50": (16,)}
DEFAULT_BARE_BATCH_SIZES: dict[str, tuple[int, ...]] = {"embedded": (1, 8, 32, 128), "resnet50": (1, 4, 16)}
"""Per-model defaults, small for resnet50 so that a CPU run stays in minutes and in memory."""
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
"""Photographs bundled inside scikit-image (nothing is downloaded), cropped and resized as test inputs."""

COLUMNS: tuple[str, ...] = tuple(
    """model input_size implementation task batch_size n_images repeats seconds_per_image
    forward_rows_per_image backward_rows_per_image passes_per_image bare_seconds_per_image ratio_to_bare
    status note device threads torch_version machine date load_1m precision""".split()  # noqa: SIM905
)
"""CSV columns, in order; one row per (model, implementation, task, batch_size)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved command-line settings of one benchmark run (frozen; built by :func:`settings_from_args`)."""

    script: str
    models: tuple[str, ...]
    device: str
    n_images: int | None
    batch_sizes: tuple[int, ...] | None
    bare_batch_sizes: tuple[int, ...] | None
    repeats: int
    seed: int
    only: tuple[str, ...]
    out: Path
    quick: bool
    precision: str = "fp32"

    def images_for(self, model: str) -> int:
        return self.n_images if self.n_images is not None else DEFAULT_N_IMAGES[model]

    def batches_for(self, model: str) -> tuple[int, ...]:
        sizes = self.batch_sizes or DEFAULT_BATCH_SIZES[model]
        return sizes[-1:] if self.quick else sizes

    def bare_batches_for(self, model: str) -> tuple[int, ...]:
        if self.quick:
            return (1, 16)
        return self.bare_batch_sizes or DEFAULT_BARE_BATCH_SIZES[model]


@dataclasses.dataclass
class Workload:
    """One model with its inputs: ``images`` (N,3,S,S) normalised, ``targets`` (N,), ``maps`` (N,S,S)."""

    name: str
    model: nn.Module
    context: MethodContext
    size: int
    images: torch.Tensor
    targets: torch.Tensor
    maps: torch.Tensor
    alt_maps: torch.Tensor
    device: torch.device
    seed: int

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


@dataclasses.dataclass(frozen=True)
class Case:
    """One timed unit: ``run(n)`` explains / scores the first ``n`` images of the workload.

    Attributes:
        implementation: ``salbench``, a library id, or ``study_loop`` (the study's loop re-implemented).
        task: method or metric id.
        batch_size: the implementation's batching knob (see the script's docstring).
        run: does the work on the first ``n`` images.
        grad_free: run inside ``torch.inference_mode`` (no gradients needed).
        prepare: untimed set-up before every call, given ``n`` (fresh caches, ...).
        note: recorded in the CSV.
    """

    implementation: str
    task: str
    batch_size: int
    run: Callable[[int], object]
    grad_free: bool = True
    prepare: Callable[[int], None] | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class BareCost:
    """Best seconds per row of plain ``model(x)`` and of ``model(x).sum().backward()``."""

    forward: float
    forward_backward: float

    def seconds(self, forward_rows: float, backward_rows: float) -> float:
        """Bare cost of the given rows: a row with a backward pass costs a forward-backward row."""
        return max(forward_rows - backward_rows, 0.0) * self.forward + backward_rows * self.forward_backward


def lazy(factory: Callable[[], Callable[[int], object]]) -> Callable[[int], object]:
    """A ``run`` that builds the real runner (imports, library objects) on first use.

    The first use is the warm-up call inside :func:`run_case`'s error boundary, so a peer that fails to
    import becomes an error row instead of stopping the script.
    """
    built: list[Callable[[int], object]] = []

    def run(n: int) -> object:
        if not built:
            built.append(factory())
        return built[0](n)

    return run


def parse_ints(text: str, name: str) -> tuple[int, ...]:
    """``"16,128"`` -> (16, 128); raises :class:`ConfigError` naming ``name`` on bad input."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name}: expected positive integers, got {text!r}")
    return values


def base_parser(description: str) -> argparse.ArgumentParser:
    """Flags shared by both benchmark scripts."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--models", default="embedded", help=f"comma-separated, from: {', '.join(MODELS)} (embedded)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="compute device (cpu)")
    p.add_argument("--n-images", type=int, help="images per call (default: embedded 16, resnet50 4)")
    p.add_argument(
        "--batch-sizes", help="comma-separated, one row each (default: embedded 16,128; resnet50 16)"
    )
    p.add_argument(
        "--bare-batch-sizes", help="of the bare timing (default: embedded 1,8,32,128; resnet50 1,4,16)"
    )
    p.add_argument("--repeats", type=int, default=2, help="timed calls per row, the best is kept (2)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and random draws (0)")
    p.add_argument("--only", default="", help="comma-separated method/metric ids to run (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 half-size images, 1 repeat, no warm-up")
    p.add_argument("--out", help="CSV path (default runs/benchmarks/<script>.csv)")
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="salbench's pass precision (--precision of the stages), the bare forward's too (fp32)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def settings_from_args(args: argparse.Namespace, script: str, tasks: Sequence[str]) -> Settings:
    """Validate the flags (one-line errors naming the flag) and freeze them; ``tasks``: the script's ids."""
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = [m for m in models if m not in MODELS]
    if not models or unknown:
        raise ConfigError(f"--models: unknown {unknown or models!r}; choose from {', '.join(MODELS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available on this machine")
    if args.repeats < 1 or (args.n_images is not None and args.n_images < 1) or args.threads < 0:
        raise ConfigError("--repeats and --n-images must be >= 1, --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = parse_ints(args.batch_sizes, "--batch-sizes") if args.batch_sizes else None
    bare = parse_ints(args.bare_batch_sizes, "--bare-batch-sizes") if args.bare_batch_sizes else None
    n_images, repeats = (2, 1) if args.quick else (args.n_images, args.repeats)
    out = Path(args.out) if args.out else Path("runs") / "benchmarks" / f"{script}.csv"
    only = tuple(t.strip() for t in args.only.split(",") if t.strip())
    if set(only) - set(tasks):
        raise ConfigError(f"--only: unknown {sorted(set(only) - set(tasks))}; choose from {', '.join(tasks)}")
    return Settings(
        script,
        models,
        args.device,
        n_images,
        batch,
        bare,
        repeats,
        args.seed,
        only,
        out,
        args.quick,
        args.precision,
    )


def _photos() -> list[np.ndarray]:
    import skimage.data

    return [np.asarray(getattr(skimage.data, name)(), dtype=np.uint8) for name in PHOTOS]


def sample_images(n: int, size: int, context: MethodContext, seed: int) -> torch.Tensor:
    """(n,3,size,size) normalised random square crops of the bundled photographs (deterministic in seed)."""
    rng = np.random.default_rng(seed)
    photos, out = _photos(), []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = torch.from_numpy(img[y0 : y0 + side, x0 : x0 + side].copy()).permute(2, 0, 1).float() / 255
        out.append(F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True)[0])
    return context.normalize(torch.stack(out).clamp(0, 1))


def sample_maps(n: int, size: int, seed: int) -> torch.Tensor:
    """(n,size,size) smooth maps in [0, 1]: 7x7 uniform noise upsampled bilinearly, per-map min-max."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 1, 7, 7), generator=g, dtype=torch.float64)
    fine = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return minmax_per_image(fine)


def calibrate_batch_norm(model: nn.Module, images: torch.Tensor, passes: int = 10) -> None:
    """Move batch-norm running statistics towards those of ``images`` (train-mode forwards, no gradients).

    Speed does not depend on the weights, but with the initial (0, 1) statistics a random ResNet50's
    softmax saturates, every perturbation then leaves the target probability unchanged, and peers take
    degenerate paths (Quantus' Spearman fails on constant variations). Calibrated, the random model's
    probabilities are unsaturated, as a trained model's are.
    """
    with torch.no_grad(), model_mode(model, True):
        for _ in range(passes):
            model(images)


def build_workload(name: str, settings: Settings) -> Workload:
    """Randomly initialised model (batch norm calibrated on the inputs) and deterministic inputs."""
    import torchvision

    from salbench.models.embedded import EmbeddedResNet

    device = torch.device(settings.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = (
            EmbeddedResNet(num_classes=10)
            if name == "embedded"
            else torchvision.models.resnet50(weights=None)
        )
    model = model.to(device)
    classes = 10 if name == "embedded" else 1000
    context = MethodContext(target_layer=resolve_target_layer(model)[1], num_classes=classes)
    # --quick halves the input side (a smoke run: its numbers are not for reading).
    size, n = INPUT_SIZE[name] // (2 if settings.quick else 1), settings.images_for(name)
    rng = np.random.default_rng(settings.seed + 1)
    targets = torch.from_numpy(rng.integers(0, classes, size=n)).long()
    images = sample_images(n, size, context, settings.seed).to(device)
    calibrate_batch_norm(model, images)
    return Workload(
        name=name,
        model=model,
        context=context,
        size=size,
        images=images,
        targets=targets.to(device),
        maps=sample_maps(n, size, settings.seed + 2).to(device),
        alt_maps=sample_maps(n, size, settings.seed + 3).to(device),
        device=device,
        seed=settings.seed,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Warm up once, then the fastest of ``repeats`` timed calls."""
    fn()
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_bare(work: Workload, batch_sizes: Sequence[int], repeats: int) -> list[tuple]:
    """Per-row seconds of ``model(x)`` and ``model(x).sum().backward()`` at each batch size; the best wins.

    Bare passes are cheap, so each is timed ``max(repeats, 3)`` times: the minimum is what the hardware can
    do, which matters on a shared machine. Returns ``(task, batch_size, repeats, seconds per row, backward
    rows)`` per pass kind (``forward``, ``forward_backward``) and batch size.
    """
    repeats = max(repeats, 3)
    model, rows = work.model, []
    for b in batch_sizes:
        x = work.images[torch.arange(b, device=work.device) % work.n].clone()

        def forward(x: torch.Tensor = x) -> None:
            with torch.inference_mode(), autocast_passes(x.device):
                model(x)

        def forward_backward(x: torch.Tensor = x) -> None:
            xg = x.detach().clone().requires_grad_(True)
            model(xg).sum().backward()

        with model_mode(model, False):
            t_f = _best_seconds(forward, repeats, work.device) / b
            with frozen_parameters(model):
                t_fb = _best_seconds(forward_backward, repeats, work.device) / b
        rows += [("forward", b, repeats, t_f, 0), ("forward_backward", b, repeats, t_fb, 1)]
    return rows


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """Processor, CPU count and GPU name (no host name)."""
    cpu = _cpu_model()
    text = f"{platform.system()} {cpu}, {os.cpu_count()} CPUs"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return math.nan


def make_row(
    work: Workload, settings: Settings, fields: dict, seconds: float, fwd: float, bwd: float
) -> dict:
    """A CSV row: per-image time and passes and the run's metadata (bare cost added by :func:`add_bare`)."""
    return {
        "model": work.name,
        "input_size": work.size,
        "n_images": work.n,
        "repeats": settings.repeats,
        "seconds_per_image": seconds,
        "forward_rows_per_image": fwd,
        "backward_rows_per_image": bwd,
        "passes_per_image": fwd + bwd,
        "status": "ok",
        "note": "",
        "device": str(work.device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "machine": machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_1m": _load(),
        "precision": settings.precision,
        **fields,
    }


def add_bare(rows: list[dict], bare: BareCost) -> None:
    """Fill ``bare_seconds_per_image`` and ``ratio_to_bare`` of one model's rows in place."""
    for row in rows:
        bare_s = bare.seconds(row["forward_rows_per_image"], row["backward_rows_per_image"])
        ok = bare_s > 0 and math.isfinite(bare_s) and math.isfinite(row["seconds_per_image"])
        row["bare_seconds_per_image"] = bare_s
        row["ratio_to_bare"] = row["seconds_per_image"] / bare_s if ok else math.nan


def bare_rows(work: Workload, settings: Settings, raw: list[tuple]) -> list[dict]:
    """CSV rows of :func:`measure_bare`'s timings (implementation ``bare``, n_images = the batch size)."""
    rows = []
    for task, b, repeats, sec, bwd in raw:
        fields = {"implementation": "bare", "task": task, "batch_size": b, "n_images": b, "repeats": repeats}
        rows.append(make_row(work, settings, fields, sec, 1, bwd))
    return rows


def time_case(case: Case, work: Workload, repeats: int, warmup: bool = True) -> tuple[float, PassCount]:
    """One warm-up call, then the best of ``repeats`` calls on all images; passes of the last call.

    Anything the implementation writes on stderr during the calls (libraries' progress bars) is dropped.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        return _time_case(case, work, repeats, warmup)


def _time_case(case: Case, work: Workload, repeats: int, warmup: bool) -> tuple[float, PassCount]:
    mode = torch.inference_mode if case.grad_free else contextlib.nullcontext
    if warmup:  # same shapes as the timed calls: kernels and allocator caches are set up per shape
        if case.prepare is not None:
            case.prepare(work.n)
        with mode():
            case.run(work.n)
    best, last = math.inf, PassCount()
    for _ in range(repeats):
        if case.prepare is not None:
            case.prepare(work.n)
        synchronize(work.device)
        with count_passes(work.model) as count, mode():
            start = time.perf_counter()
            case.run(work.n)
            synchronize(work.device)
            best = min(best, time.perf_counter() - start)
        last = count
    return best, last


def run_case(case: Case, work: Workload, settings: Settings) -> dict:
    """Time one case; any exception becomes a row with status ``error: <one line>``."""
    fields = {"implementation": case.implementation, "task": case.task, "batch_size": case.batch_size}
    logger.info("%s: %s %s (batch %d)", work.name, case.implementation, case.task, case.batch_size)
    try:
        seconds, count = time_case(case, work, settings.repeats, warmup=not settings.quick)
    except Exception as exc:  # a peer that fails must not stop the benchmark
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        logger.warning("%s %s failed: %s", case.implementation, case.task, message)
        row = make_row(work, settings, fields, math.nan, math.nan, math.nan)
        return {**row, "status": f"error: {message}", "note": case.note}
    finally:
        for p in work.model.parameters():  # libraries that backpropagate into the weights leave .grad set
            p.grad = None
    n = work.n
    row = make_row(work, settings, fields, seconds / n, count.forward_rows / n, count.backward_rows / n)
    return {**row, "note": case.note}


def write_csv(rows: Sequence[dict], path: Path) -> None:
    """Write rows with :data:`COLUMNS` atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def format_table(rows: Sequence[dict]) -> str:
    """Fixed-width text table of the main columns (status shortened to 40 characters)."""
    keys = "model implementation task batch_size seconds_per_image forward_rows_per_image"
    keys += " backward_rows_per_image bare_seconds_per_image ratio_to_bare status"
    titles = "model implementation task batch s/image fwd/img bwd/img bare_s/img ratio status"
    cols = list(zip(keys.split(), titles.split()))
    cells = [[title for _, title in cols]]
    cells += [[_fmt(r.get(key))[:40] for key, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _merge_bare(first: list[tuple], second: list[tuple]) -> tuple[BareCost, list[tuple]]:
    """Per (pass kind, batch size) the faster of two timings; the cost is the fastest row of each kind."""
    merged = [a if a[3] <= b[3] else b for a, b in zip(first, second)]
    best = {kind: min(r[3] for r in merged if r[0] == kind) for kind in ("forward", "forward_backward")}
    return BareCost(best["forward"], best["forward_backward"]), merged


def run_model(
    name: str, settings: Settings, make_cases: Callable[[Workload, Settings], list[Case]]
) -> list[dict]:
    """One model's rows: bare cost measured before and after the cases (the faster counts), then ratios."""
    work = build_workload(name, settings)
    batches = settings.bare_batches_for(name)
    with model_mode(work.model, False):
        before = measure_bare(work, batches, settings.repeats)
        rows = [
            run_case(case, work, settings)
            for case in make_cases(work, settings)
            if not settings.only or case.task in settings.only
        ]
        bare, raw = _merge_bare(before, measure_bare(work, batches, settings.repeats))
    logger.info("%s: bare forward %.3g s/row, forward+backward %.3g s/row", name, *dataclasses.astuple(bare))
    rows = bare_rows(work, settings, raw) + rows
    add_bare(rows, bare)
    return rows


def run_benchmark(settings: Settings, make_cases: Callable[[Workload, Settings], list[Case]]) -> list[dict]:
    """Every model's rows (:func:`run_model`); writes the CSV and returns the rows."""
    rows = [row for name in settings.models for row in run_model(name, settings, make_cases)]
    write_csv(rows, settings.out)
    return rows


def benchmark_script(doc: str, script: str, task_ids, make_cases):
    """``(build_parser, main)`` of a benchmark script: parse, time every case, print and write the table."""

    def build_parser():
        return base_parser(doc.splitlines()[0])

    @entry
    def main(argv: list[str] | None = None) -> int:
        args = build_parser().parse_args(argv)
        configure_logging(args.verbose)
        settings = settings_from_args(args, script, task_ids)
        with pass_precision(settings.precision):
            rows = run_benchmark(settings, make_cases)
        print(format_table(rows))
        print(f"wrote {settings.out}")
        return 0

    return build_parser, main
