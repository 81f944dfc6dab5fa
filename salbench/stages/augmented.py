"""Stage 4: maps and recognition metrics on transformed images (SPEC section 7).

Each variant's transformed images are materialised once under
``<root>/<model>/augmented/<augmentation>/<variant>/images/`` (tensors, labels, per-image parameters and
a content hash), so every method explains byte-identical inputs. The variant then gets its own
workspace (same model, config and results file; its own diagnostics, map stores and evaluation under
that folder), and the ordinary stages run on it: base probabilities are recomputed on the transformed
images by the diagnostics stage, maps are generated for the ground-truth targets, and recognition rows
land in ``results.csv`` with ``augmentation`` and ``variant`` filled.

Under ``torchrun`` rank 0 materialises each variant's images while the others wait and then read them;
the variant's diagnostics and maps are then shared out over the ranks by those stages (each rank its
contiguous, chunk-aligned shard of rows), and rank 0 alone writes the summary and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from salbench.data.augmentations import (
    AUGMENTATIONS,
    PartnerPool,
    Variant,
    apply_variant,
    content_hash,
    study_variants,
)
from salbench.data.images import ArrayImages, save_array_images
from salbench.errors import ConfigError
from salbench.progress import progress as progress_bar
from salbench.runtime import distributed, rank_zero_first, world_info
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.diagnostics import run_diagnostics
from salbench.stages.evaluate import evaluate
from salbench.stages.generate import generate
from salbench.stages.kinds import RECOGNITION_KIND
from salbench.stages.workspace import Workspace, open_workspace
from salbench.store.layout import RunLayout
from salbench.store.outputs import write_csv
from salbench.store.results import read_results

log = logging.getLogger(__name__)

# The ten methods of the study's Table 4.
STUDY_METHODS = (
    "fakecam",
    "gradient",
    "integrated_gradients",
    "guided_backprop",
    "gradcam",
    "gradcampp",
    "scorecam",
    "rise",
    "lime",
    "iba",
)
DEFAULTS: dict[str, Any] = {"n_images": 0, "augmentations": [], "methods": list(STUDY_METHODS)}


def settings(ws: Workspace) -> dict[str, Any]:
    """The ``augmentations`` config section over its defaults (unknown keys rejected)."""
    given = dict(ws.cfg.augmentations)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key 'augmentations.{unknown[0]}'; allowed: {', '.join(DEFAULTS)}")
    return {**DEFAULTS, **given}


def select_variants(ws: Workspace, augmentations: list[str] | None, names: list[str] | None) -> list[Variant]:
    """The study's variants for this input size, filtered by augmentation ids and variant names."""
    side = ws.images.size[0]
    out = [v for v in study_variants(side) if not augmentations or v.augmentation in augmentations]
    if names:
        unknown = sorted(set(names) - {v.name for v in out})
        if unknown:
            raise ConfigError(
                f"--variant {unknown[0]!r} unknown; choose from: {', '.join(v.name for v in out)}"
            )
        out = [v for v in out if v.name in names]
    return out


def materialise(ws: Workspace, variant: Variant, n_images: int, progress: bool = True) -> ArrayImages:
    """Transform the first ``n_images`` images (0 = all) once; reuse them when already on disk."""
    folder = ws.layout.model_dir / "augmented" / variant.augmentation / variant.name / "images"
    n = len(ws.images) if n_images <= 0 else min(n_images, len(ws.images))
    if (folder / "index.json").is_file():
        existing = ArrayImages(folder)
        if existing.ids == ws.images.ids[:n] and existing.meta.get("variant") == dataclasses.asdict(variant):
            return existing
    pool = PartnerPool.from_source(ws.data)
    chunks, params = [], []
    rows = np.arange(n)
    for idx, images, labels in progress_bar(
        ws.images.batches(ws.cfg.run.batch_size, rows), f"materialise {variant.name}", enabled=progress
    ):
        out = apply_variant(variant, images, labels, [ws.images.ids[i] for i in idx], partner_pool=pool)
        chunks.append(out.images.float())
        params += out.params
    tensor = torch.cat(chunks)
    extra = {"variant": dataclasses.asdict(variant), "params": params, "content_hash": content_hash(tensor)}
    return save_array_images(folder, tensor.numpy(), ws.images.ids[:n], ws.images.labels[:n], extra)


def variant_workspace(
    ws: Workspace, variant: Variant, images: ArrayImages, label_sets: tuple[str, ...]
) -> Workspace:
    """A workspace whose images are the variant's and whose outputs live under the variant folder."""
    sub = f"{ws.layout.model}/augmented/{variant.augmentation}/{variant.name}"
    run = dataclasses.replace(ws.cfg.run, label_sets=label_sets)
    return dataclasses.replace(
        ws,
        cfg=dataclasses.replace(ws.cfg, run=run),
        layout=RunLayout(ws.layout.root, sub),
        images=images,
        augmentation=variant.augmentation,
        variant=variant.name,
    )


def run_generate(
    ws: Workspace, variants: list[Variant], methods: list[str], n_images: int, progress: bool = True
) -> list:
    """Materialise, run diagnostics and generate maps for every variant; returns generation records.

    Inside a process group every rank must call it; each returns the same records."""
    records = []
    for variant in variants:
        with rank_zero_first():  # rank 0 transforms and saves the images; the others read them
            images = materialise(ws, variant, n_images, progress and world_info()[0] == 0)
        vws = variant_workspace(ws, variant, images, ws.cfg.run.label_sets)
        run_diagnostics(vws, progress)
        for rec in generate(vws, methods, progress=progress):
            records.append((variant.name, rec))
    return records


def run_evaluate(
    ws: Workspace, variants: list[Variant], methods: list[str] | None, progress: bool = True
) -> pd.DataFrame:
    """Recognition metrics for every materialised variant; writes and returns a per-variant summary."""
    for variant in variants:
        folder = ws.layout.model_dir / "augmented" / variant.augmentation / variant.name / "images"
        if not (folder / "index.json").is_file():
            log.warning("%s: not materialised; run augmented/generate.py first", variant.name)
            continue
        vws = variant_workspace(ws, variant, ArrayImages(folder), ws.cfg.run.label_sets)
        evaluate(vws, RECOGNITION_KIND, methods, progress)
    return write_summary(ws) if world_info()[0] == 0 else pd.DataFrame()


def write_summary(ws: Workspace) -> pd.DataFrame:
    """Per variant and mean over the variants of each augmentation, from results.csv."""
    res = read_results(ws.layout.results_csv)
    res = res[(res["augmentation"] != "none") & (res["model"] == ws.cfg.model.name)]
    if res.empty:
        return res
    keys = ["label_set", "method", "augmentation", "metric"]
    mean = res.groupby(keys, as_index=False).agg(value=("value", "mean"), n_variants=("variant", "nunique"))
    mean["variant"] = "mean"
    per = res[[*keys, "variant", "value"]].assign(n_variants=1)
    out = pd.concat([per, mean], ignore_index=True).sort_values([*keys, "variant"], kind="stable")
    write_csv(ws.layout.model_dir / "augmented" / "summary.csv", out)
    return out


STEPS = ("generate", "evaluate")


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    if "step" not in options:
        p.add_argument("--step", choices=[*STEPS, "all"], default="all", help="transform + maps, or evaluate")
    p.add_argument(
        "--augmentation", nargs="+", choices=AUGMENTATIONS.names(), help="augmentations (default all)"
    )
    p.add_argument("--variant", nargs="+", help="variant names, e.g. mixup_32 resize_64 (default all)")
    p.add_argument("--method", nargs="+", help="methods (default: the study's ten of its Table 4)")
    p.add_argument("--n-images", type=int, help="images transformed per variant (0 = all listed images)")


def _run(args: argparse.Namespace, options: Options) -> int:
    """Base workspace (label sets default to ground truth) -> variants -> generate and/or evaluate; under
    ``torchrun`` on every rank, rank 0 printing."""
    extra = {} if args.label_set else {"run": {"label_sets": ["groundtruth"]}}
    cfg = config_from_args(args, extra)
    with distributed(cfg.run.device) as (rank, _world):
        configure_logging(args.verbose, rank)
        with rank_zero_first():
            ws = open_workspace(cfg)
        return _steps(ws, args, options, rank)


def _steps(ws: Workspace, args: argparse.Namespace, options: Options, rank: int) -> int:
    """The generate and/or evaluate steps of :func:`_run` on the opened workspace."""
    read_results(ws.layout.results_csv)  # a damaged results.csv stops the stage before any work
    opts = settings(ws)
    if args.n_images is not None:
        if args.n_images < 0:
            raise ConfigError(f"--n-images must be >= 0, got {args.n_images}")
        opts["n_images"] = args.n_images
    opts["methods"] = args.method or opts["methods"]
    opts["augmentations"] = args.augmentation or opts["augmentations"]
    variants = select_variants(ws, opts["augmentations"], args.variant)
    step = options.get("step") or args.step
    if step in ("generate", "all"):
        records = run_generate(ws, variants, opts["methods"], opts["n_images"])
        for name, rec in records if rank == 0 else []:
            state = (
                f"{rec.n_computed} maps, {rec.seconds_per_image * 1000:.1f} ms/image"
                if rec.n_computed
                else "complete"
            )
            print(f"{name:14s} {rec.label_set:12s} {rec.method:32s} {state}")
        if rank == 0:
            print(f"augmented outputs under {ws.layout.model_dir / 'augmented'}")
    if step in ("evaluate", "all"):
        summary = run_evaluate(ws, variants, None)
        if rank == 0:
            print(f"{len(summary)} summary rows in {ws.layout.model_dir / 'augmented' / 'summary.csv'}")
    return 0


HELP = "stage 4: MixUp, CutMix, Resize, Rotation, Crop variants: maps and recognition metrics"
COMMAND = register(Command("augment", HELP, _arguments, _run))
