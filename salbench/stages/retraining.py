"""The ROAR stage on a workspace: maps of both splits (cached), resumable scores, results rows, figure.

The metric itself (pixel removal, re-training, :func:`~salbench.metrics.retraining.roar_scores`) is in
:mod:`salbench.metrics.retraining`; ``evaluation/retraining.py`` is the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from salbench.config import Config, config_to_dict
from salbench.data.sources import open_data
from salbench.errors import ConfigError
from salbench.methods import METHODS
from salbench.metrics.retraining import (
    BASELINE,
    CONTROL,
    DEFAULT_KS,
    DEFAULT_METHODS,
    FILLS,
    MEAN_METRIC,
    METRIC,
    QUICK_BATCH_SIZE,
    QUICK_EPOCHS,
    QUICK_KS,
    QUICK_LR,
    QUICK_METHODS,
    QUICK_TRAIN_IMAGES,
    RoarSettings,
    retrained_accuracy,
    roar_scores,
)
from salbench.models.registry import EMBEDDED_MODELS
from salbench.models.training import load_split, train_embedded_model
from salbench.report.extras import figure_roar
from salbench.runtime import barrier, distributed, rank_zero_first, setup_runtime, world_info
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.workspace import MethodExplainer, Workspace, fresh_model, open_workspace
from salbench.store.outputs import atomic_path, digest, write_csv, write_run_record
from salbench.store.results import UNCERTAINTY_COLUMNS, read_results, upsert_results

log = logging.getLogger(__name__)


def check_data(cfg: Config) -> None:
    """ROAR re-trains on a training split: only the embedded benchmark provides one."""
    if cfg.data.kind != "embedded":
        raise ConfigError(
            f"ROAR re-trains the classifier on a training split: it needs data.kind embedded, not "
            f"{cfg.data.kind!r} (the other data kinds list evaluation images only)"
        )


def prepare_model(cfg: Config, progress: bool = True) -> None:
    """Train (or reuse) the embedded classifier the maps are computed with, when no checkpoint is given."""
    if cfg.model.name in EMBEDDED_MODELS and not cfg.model.checkpoint:
        train_embedded_model(cfg, setup_runtime(cfg.run).torch_device, progress)


def resolve_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated method ids, with the :data:`CONTROL` appended when missing."""
    for m in methods:
        METHODS.get(m)
    return tuple(dict.fromkeys([*methods, CONTROL]))


def _digest(obj: object) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ScoreBook:
    """``scores.csv``: one accuracy per (method, k, training key, maps key), written as soon as computed.

    ``key`` digests ``fixed``, everything that decides a re-training (recipe, image counts, world size,
    protocol), whose values are also written as readable columns; ``maps_key`` identifies the maps
    (empty for the unmodified :data:`BASELINE`). Rows of other keys are kept. With ``overwrite`` only
    the rows this book computed count as done.
    """

    def __init__(self, path: Path, fixed: dict, overwrite: bool, write: bool) -> None:
        self.path, self.fixed, self.overwrite, self.write = path, fixed, overwrite, write
        self.key = _digest(fixed)
        self.done: set[tuple[str, int, str]] = set()
        self.columns = ["method", "k", "accuracy", "key", "maps_key", *fixed, "seconds"]
        self.frame = pd.DataFrame(columns=self.columns)
        if path.is_file():
            text = {c: str for c in ("method", "key", "maps_key", "fill", "protocol")}
            self.frame = pd.read_csv(path, dtype=text, keep_default_na=False)

    def _rows(self, method: str, k: int, maps_key: str) -> pd.Series:
        f = self.frame
        return (f["method"] == method) & (f["k"] == k) & (f["key"] == self.key) & (f["maps_key"] == maps_key)

    def get(self, method: str, k: int, maps_key: str = "") -> float | None:
        """The stored accuracy, or None when it is still to compute."""
        if self.overwrite and (method, k, maps_key) not in self.done:
            return None
        rows = self.frame[self._rows(method, k, maps_key)]
        return float(rows["accuracy"].iloc[-1]) if len(rows) else None

    def put(self, method: str, k: int, maps_key: str, accuracy: float, seconds: float) -> None:
        log.info("roar: %s k=%d test accuracy %.4f (%.1f s)", method, k, accuracy, seconds)
        row = {"method": method, "k": k, "accuracy": accuracy, "key": self.key, "maps_key": maps_key}
        row |= {**self.fixed, "seconds": round(seconds, 3)}
        keep = [self.frame[~self._rows(method, k, maps_key)]] if len(self.frame) else []
        self.frame = pd.concat([*keep, pd.DataFrame([row], columns=self.columns)], ignore_index=True)
        self.done.add((method, k, maps_key))
        if self.write:
            write_csv(self.path, self.frame)

    def scores(self, entries: Sequence[tuple[str, int, str]]) -> pd.DataFrame:
        """``method, k, accuracy`` of ``(method, k, maps_key)`` entries, in that order (all computed)."""
        rows = [{"method": m, "k": k, "accuracy": self.get(m, k, key)} for m, k, key in entries]
        return pd.DataFrame(rows, columns=["method", "k", "accuracy"])


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _batches(ws: Workspace, *splits: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """``(images, labels)`` batches of the run's batch size on the run device, split after split."""
    bs, dev = ws.cfg.run.batch_size, ws.runtime.torch_device
    return [(x.to(dev), y.to(dev)) for s in splits for x, y in zip(s[0].split(bs), s[1].split(bs))]


def maps_key(ws: Workspace, explainer: MethodExplainer, n_train: int, n_test: int) -> str:
    """Digest of everything that decides a method's ROAR maps (method, parameters, seed, data, model)."""
    info = {"store_id": explainer.store_id, "params": dataclasses.asdict(explainer.params)}
    info |= {"protocol": ws.cfg.run.protocol, "seed": ws.cfg.run.seed, "batch_size": ws.cfg.run.batch_size}
    info |= {"n_train": n_train, "n_test": n_test, "data": config_to_dict(ws.cfg.data)}
    return _digest({**info, "checkpoint": ws.model_info.get("checkpoint")})


def method_maps(
    ws: Workspace,
    method_id: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    stem: Path,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train maps, test maps) of one method, read from ``<stem>.{train,test}.npy`` or computed by rank 0.

    Maps explain the labels with the trained model: one explainer call over the training batches then
    the test batches (so per-batch seeds differ between the splits), cached as float32 arrays.
    """
    paths = [stem.with_name(f"{stem.name}.{split}.npy") for split in ("train", "test")]
    if world_info()[0] == 0 and (ws.cfg.run.overwrite or not all(p.is_file() for p in paths)):
        log.info("roar: maps of %s for %d + %d images", stem.name, len(train[1]), len(test[1]))
        maps, _ = MethodExplainer(ws, method_id, _batches(ws, train, test), ws.state_dir)(ws.model)
        _save_npy(paths[0], maps[: len(train[1])])
        _save_npy(paths[1], maps[len(train[1]) :])
    barrier()
    train_maps, test_maps = (torch.from_numpy(np.load(p, allow_pickle=False)) for p in paths)
    return train_maps, test_maps


def result_rows(
    ws: Workspace,
    scores: pd.DataFrame,
    n_test: int,
    families: dict[str, str] | None = None,
    provenance: dict[str, str] | None = None,
) -> list[dict]:
    """Tidy ``results.csv`` rows from ``scores`` (columns ``method, k, accuracy``).

    One ``roar_accuracy`` row per method x k (variant ``k<k:02d>``; the unmodified re-training is method
    :data:`BASELINE`, ``k00``) and one ``roar_mean_accuracy`` row per method (variant ``none``, mean over
    its ks). Maps explain the ground-truth class; lower accuracy is better. ``families``: store id ->
    method family (the re-training with nothing removed is ``Reference``; others default to ``unknown``);
    ``provenance``: the ``checkpoint`` and ``inputs`` columns (default ``unknown``).
    """
    families = {BASELINE: "Reference", **(families or {})}
    base = {"model": ws.cfg.model.name, "dataset": ws.data.name, "label_set": "groundtruth", "level": 0}
    base |= {"augmentation": ws.augmentation, "n_images": n_test, "n_skipped": 0, "higher_is_better": False}
    base |= {
        "protocol": ws.cfg.run.protocol,
        "checkpoint": "unknown",
        "inputs": "unknown",
        "precision": "fp32",  # re-training and its test passes run in float32
        **(provenance or {}),
    }
    base |= dict.fromkeys(UNCERTAINTY_COLUMNS, math.nan)  # accuracies of re-trained models: no interval
    rows = [
        {
            **base,
            "method": r.method,
            "family": families.get(r.method, "unknown"),
            "variant": f"k{int(r.k):02d}",
            "metric": METRIC,
            "value": float(r.accuracy),
        }
        for r in scores.itertuples()
    ]
    for method, part in scores[scores["method"] != BASELINE].groupby("method", sort=False):
        value = float(part["accuracy"].mean())
        row = {
            "method": method,
            "family": families.get(method, "unknown"),
            "variant": "none",
            "metric": MEAN_METRIC,
            "value": value,
        }
        rows.append({**base, **row})
    return rows


def record_results(ws: Workspace, rows: list[dict]) -> None:
    """Replace the ROAR rows of this model x dataset x protocol in ``results.csv`` by ``rows``.

    Rows carry no recipe, so earlier ROAR rows (other ks, methods or settings) are dropped rather than
    mixed with this run's; accuracies already in ``scores.csv`` make re-listing earlier methods cheap.
    """
    path, old = ws.layout.results_csv, read_results(ws.layout.results_csv)
    stale = old["metric"].isin([METRIC, MEAN_METRIC]) & (old["model"] == ws.cfg.model.name)
    stale &= (old["dataset"] == ws.data.name) & (old["protocol"] == ws.cfg.run.protocol)
    if stale.any():
        write_csv(path, old[~stale])
    upsert_results(path, rows)


def run_retraining(
    ws: Workspace, settings: RoarSettings, methods: Sequence[str], n_train: int = 0, progress: bool = True
) -> pd.DataFrame:
    """ROAR for ``methods`` (and the :data:`CONTROL`) on the embedded benchmark; returns the scores.

    Test images: the workspace's data (the run's split and limit); training images: the first
    ``n_train`` of the ``train`` split (0 = all). Writes under ``<output_root>/<model>/retraining/``:
    ``maps/<store id>-<key>.{train,test}.npy`` (cached maps), ``scores.csv`` (each accuracy as soon as
    it is computed; a rerun skips those, unless ``overwrite``), ``roar.png``, ``config.yaml`` and
    ``manifest.json``; rows into ``results.csv`` (:func:`result_rows`, :func:`record_results`).
    Inside a process group only rank 0 writes.

    Returns:
        ``method, k, accuracy`` of this run (method :data:`BASELINE` at k = 0 first).
    """
    read_results(ws.layout.results_csv)  # a damaged results.csv stops the stage before any work
    check_data(ws.cfg)
    start, methods, (rank, world) = time.perf_counter(), resolve_methods(methods), world_info()
    show = progress and rank == 0
    out = ws.layout.model_dir / "retraining"
    train = load_split(open_data(ws.cfg, split="train", limit=n_train), show)
    test = load_split(ws.data, show)
    fixed = {"n_train": len(train[1]), "n_test": len(test[1]), "world_size": world}
    fixed |= {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("ks", "baseline")}
    fixed["protocol"] = ws.cfg.run.protocol
    book = ScoreBook(out / "scores.csv", fixed, ws.cfg.run.overwrite, write=rank == 0)
    dev, factory = ws.runtime.torch_device, functools.partial(fresh_model, ws)
    opts = dict(mean=ws.context.mean, std=ws.context.std, device=dev, progress=show)
    if book.get(BASELINE, 0) is None:
        t0 = time.perf_counter()
        acc = retrained_accuracy(factory, train, test, settings, dev, show)
        book.put(BASELINE, 0, "", acc, time.perf_counter() - t0)
    keys, families = {}, {}
    for method_id in methods:
        explainer = MethodExplainer(ws, method_id, _batches(ws, (train[0][:1], train[1][:1])))
        store_id, key = explainer.store_id, maps_key(ws, explainer, len(train[1]), len(test[1]))
        keys[store_id], families[store_id] = key, explainer.cls.family
        todo = [k for k in settings.ks if book.get(store_id, k, key) is None]
        if todo:
            train_maps, test_maps = method_maps(
                ws, method_id, train, test, out / "maps" / f"{store_id}-{key}"
            )
        for k in todo:
            t0 = time.perf_counter()
            one = dataclasses.replace(settings, ks=(k,), baseline=False)
            acc = roar_scores(*train, train_maps, *test, test_maps, factory, one, **opts)[k]
            book.put(store_id, k, key, acc, time.perf_counter() - t0)
    scores = book.scores([(BASELINE, 0, ""), *((m, k, key) for m, key in keys.items() for k in settings.ks)])
    if rank == 0:
        provenance = {"checkpoint": ws.checkpoint_id, "inputs": digest(book.key)}
        rows = result_rows(ws, scores, len(test[1]), families, provenance)
        record_results(ws, rows)
        figure_roar(pd.DataFrame(rows), out / "roar.png", f"ROAR, {ws.cfg.model.name}, ground-truth maps")
        extra = {"settings": dataclasses.asdict(settings), "methods": list(methods), "maps_keys": keys}
        extra |= {**fixed, "score_key": book.key, "seconds": round(time.perf_counter() - start, 1)}
        write_run_record(out, ws.cfg, ws.runtime, "retraining", {**extra, **ws.describe()})
    return scores


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument(
        "--method",
        nargs="+",
        choices=METHODS.names(),
        help=f"methods, the {CONTROL} control always added (None: {' '.join(DEFAULT_METHODS)})",
    )
    p.add_argument(
        "--k",
        nargs="+",
        type=int,
        help=f"percent of pixels removed, 1..99 (None: {' '.join(map(str, DEFAULT_KS))})",
    )
    p.add_argument(
        "--fill", default="mean", metavar="{" + ",".join(FILLS) + "}", help="removed pixels become"
    )
    p.add_argument("--epochs", type=int, help="re-training epochs (None: the run's train.epochs)")
    p.add_argument("--train-images", type=int, help="first N training images (None or 0: all)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"short preset: all training images, {QUICK_EPOCHS} epochs in batches of {QUICK_BATCH_SIZE} at "
        f"lr {QUICK_LR}, k {' '.join(map(str, QUICK_KS))}, methods {' '.join(QUICK_METHODS)} "
        "(explicit flags win; a few minutes on 2 CPU cores)",
    )
    p.epilog = "--limit: test images (default: every image of the run's split, whatever run.limit says)."


def _run(args: argparse.Namespace, options: Options) -> int:
    cfg = config_from_args(args)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, limit=args.limit or 0))
    check_data(cfg)
    quick = (
        {"ks": QUICK_KS, "epochs": QUICK_EPOCHS, "batch_size": QUICK_BATCH_SIZE, "lr": QUICK_LR}
        if args.quick
        else {}
    )
    given = {"ks": tuple(args.k) if args.k else None, "epochs": args.epochs, "fill": args.fill}
    settings = RoarSettings.from_train(
        cfg.train, **{**quick, **{k: v for k, v in given.items() if v is not None}}
    )
    methods = args.method or (QUICK_METHODS if args.quick else DEFAULT_METHODS)
    n_train = args.train_images if args.train_images is not None else (QUICK_TRAIN_IMAGES * args.quick)
    if n_train < 0:
        raise ConfigError(f"--train-images must be >= 0, got {n_train}")
    with distributed(cfg.run.device) as (rank, world):
        configure_logging(args.verbose)
        if rank:
            logging.getLogger().setLevel(logging.WARNING)
        with rank_zero_first():
            prepare_model(cfg, progress=rank == 0)
            ws = open_workspace(cfg)
        scores = run_retraining(ws, settings, methods, n_train)
    if rank == 0:
        table = scores.pivot_table(index="method", columns="k", values="accuracy", sort=False)
        table["mean"] = table.drop(columns=0, errors="ignore").mean(axis=1)
        table.loc[BASELINE, "mean"] = float("nan")
        print(f"ROAR test accuracy ({len(table) - 1} methods, {world} process(es), fill {settings.fill}):")
        print(table.to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"))
        print(f"wrote {ws.layout.model_dir / 'retraining'}")
    return 0


HELP = "ROAR (Hooker et al. 2019): remove each method's top-k%% pixels, re-train, test (torchrun-ready)"
COMMAND = register(Command("roar", HELP, _arguments, _run, label_sets=False))
