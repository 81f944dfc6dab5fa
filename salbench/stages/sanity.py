"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps").

Model-parameter randomisation (paper Sec. 3): the model's parameterised top-level blocks are
re-initialised from the output layer down, either *cascading* (every block above and including the
level) or *independent* (that block alone), always on a copy of the model. Data randomisation (paper
Sec. 4): the same architecture trained on the training split with shuffled labels. Each method's maps
on the randomised model are compared with its maps on the original model, per image:

- ``sanity_spearman_abs``: Spearman rank correlation of the maps as the benchmark stores them (already
  absolute-valued or non-negative for every registered method; the paper's "absolute value" variant);
- ``sanity_spearman``: Spearman rank correlation of signed maps: the channel sum of the raw attributions
  for the gradient family, the stored map for every other method (non-negative: then equal to the above);
- ``sanity_ssim``: ``skimage.metrics.structural_similarity`` (``data_range=1``, 7x7 uniform window,
  sample covariance) of the stored maps clipped to [0, 1];
- ``sanity_hog``: Pearson correlation of the ``skimage.feature.hog`` vectors (:data:`HOG_PARAMS`) of
  the stored maps clipped to [0, 1].

A correlation is undefined when a map is constant; it is then 1 when the two maps are identical and 0
otherwise (a constant map shares no ranking). Lower similarity is better: a method whose mean
``flag_metric`` at the deepest cascading level (every block randomised) stays above ``threshold``
(default 0.5) *fails* the check. The model-free controls (``fakecam``, ``edge``, ``random`` with the same
generator) are identical under randomisation, score exactly 1 and must be flagged, or the check is void.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from salbench.config import Config, TrainConfig
from salbench.errors import ConfigError
from salbench.methods import METHODS
from salbench.metrics.similarity import HOG_PARAMS, METRIC_IDS
from salbench.models.randomisation import LayerBlock, randomisation_blocks
from salbench.report.sanity import figure_cascade
from salbench.runtime import distributed, rank_zero_first, world_info
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.diagnostics import read_targets
from salbench.stages.sanity_models import (
    compare_methods,
    gathered,
    label_shuffled_model,
    model_variants,
    variant_names,
)
from salbench.stages.workspace import MethodExplainer, Workspace, open_workspace
from salbench.stats import Bootstrap, summarise_means
from salbench.store.outputs import write_csv, write_run_record
from salbench.store.results import read_results, upsert_results

log = logging.getLogger(__name__)

VARIANTS = ("cascading", "independent", "data")
DEFAULT_METHODS = ("fakecam", "edge", "random", "gradient", "gradcam", "integrated_gradients", "rise")
CONTROL_FAMILIES = ("Uninformed", "Control")
SPREAD = ("std", "ci_low", "ci_high", "ci_level")
"""Columns of a mean's spread carried from the summary into ``results.csv``."""
DEFAULT_LIMIT = 16
QUICK_EPOCHS = 2


@dataclasses.dataclass(frozen=True)
class SanitySettings:
    """What :func:`run_sanity` computes.

    Attributes:
        methods: registry ids of the methods checked.
        variants: subset of :data:`VARIANTS`; None = all that apply (``data`` needs the embedded benchmark).
        threshold: a method fails when its mean ``flag_metric`` at full cascading randomisation exceeds it.
        flag_metric: one of :data:`METRIC_IDS`.
        train: training recipe of the label-shuffled model (None: the run's ``train`` section).
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    variants: tuple[str, ...] | None = None
    threshold: float = 0.5
    flag_metric: str = "sanity_spearman_abs"
    train: TrainConfig | None = None


def _per_method_csv(ws: Workspace, label_set: str, store_id: str) -> Path:
    return ws.layout.model_dir / "sanity" / label_set / f"{store_id}.csv"


def _complete_rows(path: Path, ids: list[str]) -> pd.DataFrame:
    """Rows of a per-method CSV whose variant covers exactly ``ids`` in order (empty when none/missing)."""
    if not path.is_file():
        return pd.DataFrame(columns=["image_id", "variant", "level", *METRIC_IDS])
    frame = pd.read_csv(path, dtype={"image_id": str, "variant": str})
    ok = [v for v, part in frame.groupby("variant", sort=False) if part["image_id"].tolist() == ids]
    return frame[frame["variant"].isin(ok)]


def _write_merged(path: Path, ids: list[str], frame: pd.DataFrame) -> None:
    """Write ``frame`` plus the complete rows already in ``path`` for variants it does not hold."""
    old = _complete_rows(path, ids)
    merged = pd.concat([old[~old["variant"].isin(set(frame["variant"]))], frame], ignore_index=True)
    kind = merged["variant"].str.split(":").str[0].map({v: i for i, v in enumerate(VARIANTS)})
    write_csv(path, merged.assign(_k=kind).sort_values(["_k", "level"], kind="stable").drop(columns="_k"))


def summarise(per_image: pd.DataFrame, intervals: Bootstrap | None = None) -> pd.DataFrame:
    """Per variant: ``variant, level, n_images`` and the mean of each of :data:`METRIC_IDS`; with
    ``intervals`` also ``<metric>_std``, ``_ci_low``, ``_ci_high``, ``_ci_level`` (:mod:`salbench.stats`)."""
    grouped = per_image.groupby("variant", sort=False)
    out = grouped[list(METRIC_IDS)].mean()
    out.insert(0, "n_images", grouped.size())
    out.insert(0, "level", grouped["level"].first())
    for m in METRIC_IDS if intervals is not None else ():
        spread = [s.columns() for s in summarise_means([g[m] for _, g in grouped], intervals)]
        for column in SPREAD:
            out[f"{m}_{column}"] = [s[column] for s in spread]
    return out.reset_index()


def flag_row(method: str, family: str, summary: pd.DataFrame, deepest: str, settings: SanitySettings) -> dict:
    """Flags of one method: similarity at full cascading randomisation and under data randomisation."""
    by_variant = summary.set_index("variant")[settings.flag_metric]
    full = float(by_variant.get(deepest, np.nan))
    data = float(by_variant.get("data", np.nan))
    return {
        "method": method,
        "family": family,
        "control": family in CONTROL_FAMILIES,
        "flag_metric": settings.flag_metric,
        "threshold": settings.threshold,
        "similarity_full_randomisation": full,
        "similarity_data_randomisation": data,
        "fails_model_randomisation": bool(full > settings.threshold) if np.isfinite(full) else None,
        "fails_data_randomisation": bool(data > settings.threshold) if np.isfinite(data) else None,
    }


def result_rows(
    ws: Workspace, label_set: str, method: str, summary: pd.DataFrame, flags: dict, deepest: str
) -> list[dict]:
    """Tidy ``results.csv`` rows: mean similarity per variant x metric (with its block ``level``), 0/1
    ``sanity_fails`` and the ``sanity_threshold`` it was judged against.

    ``sanity_fails`` is recorded under the deepest cascading variant and under ``data``, the threshold
    under the deepest cascading variant. The similarities are finite by construction (finite maps;
    constant maps handled), so ``n_skipped`` is 0.
    """
    base = {"model": ws.cfg.model.name, "dataset": ws.data.name, "label_set": label_set, "method": method}
    base |= {"family": flags["family"], "augmentation": ws.augmentation, "higher_is_better": False}
    base |= {"protocol": ws.cfg.run.protocol, "n_skipped": 0, "checkpoint": ws.checkpoint_id}
    keys = ("variant", "level", "metric", "value", "n_images")
    rows = [
        {**base, **dict(zip(keys, (r["variant"], int(r["level"]), m, float(r[m]), int(r["n_images"]))))}
        | {c: float(r[f"{m}_{c}"]) for c in SPREAD if f"{m}_{c}" in r}
        for r in summary.to_dict("records")
        for m in METRIC_IDS
    ]
    by_variant = summary.set_index("variant")
    judged = [
        (v, "sanity_fails", flags[f"fails_{k}_randomisation"])
        for v, k in ((deepest, "model"), ("data", "data"))
    ]
    judged.append((deepest, "sanity_threshold", flags["threshold"] if deepest in by_variant.index else None))
    for variant, metric, value in judged:
        if value is not None:
            row = by_variant.loc[variant]
            values = (variant, int(row["level"]), metric, float(value), int(row["n_images"]))
            rows.append({**base, **dict(zip(keys, values))})
    return rows


def cascade_figure(
    rows: list[dict], blocks: Sequence[LayerBlock], model: str, label_set: str, path: Path
) -> Path:
    """The report's cascade figure (:func:`salbench.report.extras.figure_cascade`) of one label set's rows."""
    title = f"Model-parameter randomisation, {model}, {label_set} targets"
    return figure_cascade(pd.DataFrame(rows), [b.name for b in blocks], path, title)


def resolve_variants(ws: Workspace, requested: Sequence[str] | None) -> tuple[str, ...]:
    """The variants to run: ``requested`` (validated) or every variant that applies to the data."""
    embedded = ws.cfg.data.kind == "embedded"
    if requested is None:
        return tuple(v for v in VARIANTS if v != "data" or embedded)
    unknown = sorted(set(requested) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"--variant {unknown[0]!r} is not one of {', '.join(VARIANTS)}")
    if "data" in requested and not embedded:
        raise ConfigError("--variant data needs data.kind embedded (it retrains on the training split)")
    return tuple(v for v in VARIANTS if v in requested)


def _check(settings: SanitySettings) -> None:
    if not -1.0 <= settings.threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [-1, 1], got {settings.threshold}")
    if settings.flag_metric not in METRIC_IDS:
        raise ConfigError(f"flag metric {settings.flag_metric!r} is not one of {', '.join(METRIC_IDS)}")
    for m in settings.methods:
        METHODS.get(m)


def _layers_frame(blocks: Sequence[LayerBlock]) -> pd.DataFrame:
    rows = [{"level": i + 1, "block": b.name, "modules": " ".join(b.modules)} for i, b in enumerate(blocks)]
    return pd.DataFrame(rows)


def _check_label_set(
    ws: Workspace,
    label_set: str,
    settings: SanitySettings,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    blocks: Sequence[LayerBlock],
    models: Callable[[tuple[int, int]], Iterator[tuple[str, int, nn.Module]]],
    expected: set[str],
) -> tuple[dict[str, pd.DataFrame], list[dict], list[dict]]:
    """One label set: compute the pending per-method CSVs, then ``(summaries, flags, results rows)``.

    Inside a process group each rank builds and explains every world-th model variant; rank 0 gathers
    the rows, writes them and summarises (the other ranks return nothing)."""
    ids = ws.images.ids
    explainers = {
        e.store_id: e
        for e in (MethodExplainer(ws, m, batches, ws.state_dir) for m in dict.fromkeys(settings.methods))
    }
    todo = [
        e
        for s, e in explainers.items()
        if ws.cfg.run.overwrite
        or not expected <= set(_complete_rows(_per_method_csv(ws, label_set, s), ids)["variant"])
    ]
    rank, world = world_info()
    if todo:
        frames = compare_methods(todo, ids, models((rank, world)))
        if world > 1:
            frames = gathered(frames, [v for v, _ in variant_names(blocks, settings.variants)])
        for store_id, frame in frames.items() if rank == 0 else ():
            _write_merged(_per_method_csv(ws, label_set, store_id), ids, frame)
    if rank != 0:
        return {}, [], []
    deepest = f"cascading:{blocks[-1].name}"  # every block randomised
    summaries, flags, rows = {}, [], []
    for store_id, e in explainers.items():
        per_image = _complete_rows(_per_method_csv(ws, label_set, store_id), ids)
        per_image = per_image[per_image["variant"].isin(expected)]
        summaries[store_id] = summarise(per_image, Bootstrap.from_run(ws.cfg.run))
        flags.append(flag_row(store_id, e.cls.family, summaries[store_id], deepest, settings))
        rows += result_rows(ws, label_set, store_id, summaries[store_id], flags[-1], deepest)
    return summaries, flags, rows


def run_sanity(ws: Workspace, settings: SanitySettings, progress: bool = True) -> pd.DataFrame:
    """Run the checks for every label set of the run; write CSVs, figure, results rows; return the flags.

    Writes under ``<output_root>/<model>/sanity/``: ``layers.csv``; per label set ``<method>.csv``
    (one row per image x variant; a complete one is reused unless ``overwrite``), ``summary.csv``,
    ``flags.csv`` and ``cascade.png``; ``config.yaml`` and ``manifest.json``. Results rows go to
    ``results.csv`` (metrics :data:`METRIC_IDS` and ``sanity_fails``).
    """
    read_results(ws.layout.results_csv)  # a damaged results.csv stops the stage before any work
    _check(settings)
    variants = resolve_variants(ws, settings.variants)
    settings = dataclasses.replace(settings, variants=variants)
    blocks = randomisation_blocks(ws.model)
    out = ws.layout.model_dir / "sanity"
    rank = world_info()[0]
    if rank == 0:
        write_csv(out / "layers.csv", _layers_frame(blocks))
    expected = {v for v, _ in variant_names(blocks, variants)}
    dev = ws.runtime.torch_device
    loaded = [(idx, x.to(dev)) for idx, x, _ in ws.images.batches(ws.cfg.run.batch_size)]
    cache: dict[str, nn.Module] = {}

    def data_model() -> nn.Module:
        if "model" not in cache:
            cache["model"] = label_shuffled_model(ws, settings.train or ws.cfg.train, progress)
        return cache["model"]

    all_flags, rows = [], []
    for label_set in ws.cfg.run.label_sets:
        targets, _ = read_targets(ws.layout.diagnostics_csv, label_set, ws.images.ids)
        batches = [(x, torch.as_tensor(targets[idx], device=dev)) for idx, x in loaded]
        summaries, flags, new_rows = _check_label_set(
            ws,
            label_set,
            settings,
            batches,
            blocks,
            lambda part: model_variants(ws, blocks, variants, data_model, part),
            expected,
        )
        if rank != 0:
            continue
        frame = pd.concat([s.assign(method=m) for m, s in summaries.items()], ignore_index=True)
        write_csv(out / label_set / "summary.csv", frame[["method", *frame.columns[:-1]]])
        write_csv(out / label_set / "flags.csv", pd.DataFrame(flags))
        if expected - {"data"}:
            cascade_figure(new_rows, blocks, ws.cfg.model.name, label_set, out / label_set / "cascade.png")
        all_flags.append(pd.DataFrame(flags).assign(label_set=label_set))
        rows += new_rows
    if rank != 0:
        return pd.DataFrame()
    upsert_results(ws.layout.results_csv, rows)
    extra = {"settings": dataclasses.asdict(settings), "hog": HOG_PARAMS}
    extra |= {"blocks": [b.name for b in blocks]}
    write_run_record(out, ws.cfg, ws.runtime, "sanity", {**extra, **ws.describe()})
    return pd.concat(all_flags, ignore_index=True)


def with_image_limit(cfg: Config, limit: int | None) -> Config:
    """``cfg`` limited to the first ``limit`` images (0 = all); None: the first :data:`DEFAULT_LIMIT`."""
    if limit is None:
        limit = DEFAULT_LIMIT if cfg.run.limit == 0 else min(DEFAULT_LIMIT, cfg.run.limit)
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, limit=limit))


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument(
        "--method", nargs="+", choices=METHODS.names(), help=f"default: {' '.join(DEFAULT_METHODS)}"
    )
    p.add_argument("--variant", nargs="+", choices=VARIANTS, help="default: every variant that applies")
    p.add_argument("--threshold", type=float, default=0.5, help="fails when similarity stays above it")
    p.add_argument("--flag-metric", choices=METRIC_IDS, default="sanity_spearman_abs")
    p.add_argument(
        "--quick", action="store_true", help=f"train the shuffled-label model for {QUICK_EPOCHS} epochs"
    )
    p.epilog = f"--limit defaults to the first {DEFAULT_LIMIT} images of the run."


def _run(args: argparse.Namespace, options: Options) -> int:
    configure_logging(args.verbose)
    cfg = with_image_limit(config_from_args(args), args.limit)
    train = dataclasses.replace(cfg.train, epochs=QUICK_EPOCHS) if args.quick else cfg.train
    variants = tuple(args.variant) if args.variant else None
    settings = SanitySettings(
        tuple(args.method or DEFAULT_METHODS), variants, args.threshold, args.flag_metric, train
    )
    with distributed(cfg.run.device) as (rank, _world):
        configure_logging(args.verbose, rank)
        with rank_zero_first():
            ws = open_workspace(cfg)
        flags = run_sanity(ws, settings, progress=rank == 0)
    if rank:
        return 0
    verdict = {True: "FAILS", False: "passes"}
    for r in flags.itertuples():
        model = verdict.get(r.fails_model_randomisation, "-")
        data = verdict.get(r.fails_data_randomisation, "-")
        print(
            f"{r.label_set:12s} {r.method:32s} {r.flag_metric} (fails above {r.threshold:g}): "
            f"model {r.similarity_full_randomisation:6.3f} {model:6s} "
            f"data {r.similarity_data_randomisation:6.3f} {data:6s}{'  [control]' if r.control else ''}"
        )
    passed = flags.fails_model_randomisation.eq(False) | flags.fails_data_randomisation.eq(False)
    missed = flags[flags.control & passed]
    if len(missed):
        print(f"warning: controls not flagged ({', '.join(missed.method)}): the check is not trustworthy")
    for key in ("model", "data"):
        like = flags[~flags.control & flags[f"fails_{key}_randomisation"].eq(True)]
        print(f"fail {key} randomisation like the controls: {', '.join(sorted(set(like.method))) or 'none'}")
    print(f"wrote {ws.layout.model_dir / 'sanity'}")
    return 0


HELP = "sanity checks (Adebayo et al. 2018): model and data randomisation of each method's maps"
COMMAND = register(Command("sanity", HELP, _arguments, _run))
