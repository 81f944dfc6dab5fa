"""Stage 2: generate saliency maps into the resumable map store.

For each label set and method: targets come from stage 1, the map store at
``<root>/<model>/maps/<label_set>/<method>.zarr`` is opened (or resumed), and the pending rows are
explained in fixed, aligned batches. Random draws are seeded per (image, target) (``seed``, store id,
image id, target: :mod:`salbench.rng`), so a resumed run writes exactly the maps an uninterrupted run
writes, and a later label set copies the maps of an earlier one's same targets (:mod:`.reuse`).

A method that cannot apply to the model (a CAM or IBA without a spatial target layer, CASME without a
masker for the architecture: :class:`~salbench.errors.NotApplicableError`, checked on the first image
before any store is opened) is skipped with one recorded line: a warning in the log, the printed line
``not applicable: <reason>``, ``<method>.not_applicable.json`` beside the map stores (reason, model,
target layer) and a ``results.csv`` row ``metric = not_applicable``, ``value = 1`` that the report shows
as "not applicable" (set to 0 when a later run finds the method applicable).

Under ``torchrun`` (inside :func:`salbench.runtime.distributed`) every rank runs every (label set,
method) pair: the rows of each store are split into contiguous shards of whole units of
``lcm(CHUNK_ROWS, batch_size)`` rows (:func:`salbench.store.maps.shard_rows`), so no two ranks share a
chunk and every aligned batch lies in one shard. Each rank opens the store
restricted to its shard and explains only the pending rows there; the maps are those one process
computes, and a store left part-written by a run of N processes is completed by a rerun of any number.
Rank 0 prepares a method first (RISE draws and saves its masks, the others load them), the ranks then
gather their counts and timings, and rank 0 alone writes markers, store attributes and
``results.csv`` rows and prints the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salbench.config import config_to_dict
from salbench.errors import ConfigError, NotApplicableError
from salbench.methods import METHODS, SaliencyMethod
from salbench.methods.deprocess import DEPROCESSORS
from salbench.progress import bar, counting_passes
from salbench.rng import SEEDING
from salbench.runtime import all_gather_objects, barrier, distributed, rank_zero_first, world_info
from salbench.scoped import count_passes, pass_precision
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.diagnostics import read_targets
from salbench.stages.reuse import map_source
from salbench.stages.workspace import Workspace, open_workspace
from salbench.store.maps import MapStore, shard_rows
from salbench.store.outputs import write_json
from salbench.store.results import upsert_results

log = logging.getLogger(__name__)

NOT_APPLICABLE = "not_applicable"
"""``results.csv`` metric id of generation's record that a method does not apply to the run's model:
value 1 (0 once a later run found it applicable), ``n_skipped`` the images it was asked to explain."""

CHUNK_ROWS = 32
"""Rows per chunk of every map store generation creates (a store's identity: stores made with another
value are refused on reopening)."""


def build_method(ws: Workspace, method_id: str, overrides: Mapping[str, Any] | None = None) -> SaliencyMethod:
    """Instantiate ``method_id`` with its resolved params (protocol preset < config < ``overrides``)."""
    return ws.method(method_id, overrides)


def methods_of_family(*families: str) -> list[str]:
    """Registry ids whose ``family`` is one of ``families`` (registry order)."""
    return [m for m in METHODS.names() if METHODS.get(m).family in families]


def rank_shard(ws: Workspace) -> range:
    """The rows this rank generates: its contiguous share of whole ``lcm(CHUNK_ROWS, batch_size)``
    blocks (``range(n)`` outside a process group; empty for a rank left without a block)."""
    rank, world = world_info()
    n = len(ws.images)
    if world == 1 or n == 0:
        return range(n)
    return shard_rows(n, rank, world, math.lcm(CHUNK_ROWS, ws.cfg.run.batch_size))


def _open_store(ws: Workspace, label_set: str, method: SaliencyMethod, shard: range) -> MapStore:
    """Open (or create) the store of ``method`` restricted to ``shard``. Creation is atomic, so ranks
    may open a new store at once; with ``overwrite`` rank 0 replaces it before the others open it."""
    attrs = {
        "method": method.describe(),
        "label_set": label_set,
        "model": ws.cfg.model.name,
        "model_id": ws.model_id,
        "dataset": ws.data.name,
        "protocol": ws.cfg.run.protocol,
        "seed": ws.cfg.run.seed,
        "batch_size": ws.cfg.run.batch_size,
        "target_layer": ws.target_layer,
        "data": config_to_dict(ws.cfg.data),
        "model_config": config_to_dict(ws.cfg.model),
        # content hash of materialised (augmented) inputs: every method of a variant sees the same bytes
        "inputs_hash": getattr(ws.images, "meta", {}).get("content_hash"),
        "seeding": SEEDING,
        "precision": ws.precision_of(method),
    }
    path = ws.layout.maps(label_set, method.store_id)
    kw = {"chunk_rows": CHUNK_ROWS, "attrs": _jsonable(attrs), "shard": shard}
    if not ws.cfg.run.overwrite:
        return MapStore.open(path, ws.images.ids, ws.images.size, **kw)
    with rank_zero_first():
        replace = world_info()[0] == 0 and path.exists()
        return MapStore.open(path, ws.images.ids, ws.images.size, overwrite=replace, **kw)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


@dataclasses.dataclass
class GenerationRecord:
    """What one (label set, method) run did; printed by the scripts and stored in the store attrs."""

    label_set: str
    method: str
    n_images: int
    n_computed: int
    seconds: float
    forward_rows: int
    backward_rows: int
    not_applicable: str = ""
    """Why the method was skipped ("" when it applies)."""
    processes: int = 1
    """Ranks that shared the work; ``seconds`` and the passes are summed over them."""
    n_reused: int = 0
    """Maps copied from ``reused_from`` (same image and target), not computed."""
    reused_from: str = ""
    """The earlier label set the copied maps come from."""

    @property
    def passes_per_image(self) -> float:
        return (self.forward_rows + self.backward_rows) / max(self.n_computed, 1)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(self.n_computed, 1)


def generate(
    ws: Workspace,
    method_ids: Iterable[str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> list[GenerationRecord]:
    """Stage 2 for every label set of the config x ``method_ids``; returns one record per pair.

    ``overrides``: method id -> parameter values replacing the configured ones (e.g. ``deprocess``).
    Inside a process group every rank must call it with the same arguments: each writes the rows of
    its shard (:func:`rank_shard`), every rank returns the same records (totals over the ranks), and
    it returns once every store is complete and rank 0 has written its records.
    """
    records = []
    n = len(ws.images)
    example = ws.images.load(np.arange(1)).to(ws.runtime.device) if n else None
    for label_set in ws.cfg.run.label_sets:
        targets, _ = read_targets(ws.layout.diagnostics_csv, label_set, ws.images.ids)
        for method_id in method_ids:
            method = applicable_method(ws, method_id, (overrides or {}).get(method_id), example)
            if isinstance(method, NotApplicableError):
                records.append(record_not_applicable(ws, label_set, method_id, str(method)))
                continue
            clear_not_applicable(ws, label_set, method.store_id)
            records.append(_generate_maps(ws, label_set, method, targets, progress))
    barrier()  # the stores' attributes and rank 0's records are written before any rank reads them
    return records


def _generate_maps(
    ws: Workspace, label_set: str, method: SaliencyMethod, targets: np.ndarray, progress: bool
) -> GenerationRecord:
    """Explain the pending rows of this rank's shard of one store; the record summed over the ranks."""
    rank, world = world_info()
    show = progress and rank == 0
    bs, n, shard = ws.cfg.run.batch_size, len(ws.images), rank_shard(ws)
    store = _open_store(ws, label_set, method, shard)
    pending = store.pending(shard)
    if sum(all_gather_objects(len(pending))) == 0:
        log.info("%s/%s: complete (%d maps), skipped", label_set, method.store_id, n)
        return GenerationRecord(label_set, method.store_id, n, 0, 0.0, 0, 0, processes=world)
    with rank_zero_first():  # rank 0 draws and saves run-level state (RISE masks); the others load it
        method.prepare(ws.preparation(desc=f"{method.store_id}: prepare", progress=show))
    batches = sorted({int(r) // bs for r in pending})  # aligned batches: shards hold whole ones
    todo = sum(min((b + 1) * bs, n) - b * bs for b in batches)
    source = map_source(ws, label_set, method, store.attrs, targets)
    t0, reused = time.perf_counter(), 0
    plan = []
    for b in batches:
        rows = np.arange(b * bs, min((b + 1) * bs, n))
        plan.append((rows, source.copyable(rows) if source else np.zeros(len(rows), dtype=bool)))
    loaded = ws.stream([rows[~copy] for rows, copy in plan if not copy.all()])
    with (
        count_passes(ws.model) as passes,
        bar(todo, f"{label_set}/{method.store_id}", enabled=show) as shown,
        counting_passes(shown, ws.model),
        pass_precision(ws.precision_of(method)),
    ):
        for rows, copy in plan:
            maps = np.empty((len(rows), *ws.images.size), dtype=np.float32)
            if copy.any():
                maps[copy] = source.store.read(rows[copy])
            if not copy.all():
                compute = rows[~copy]
                images = next(loaded)
                tgt = torch.as_tensor(targets[compute], device=ws.runtime.device)
                ids = [ws.images.ids[i] for i in compute]
                gens = ws.row_generators(method.store_id, ids, targets[compute])
                maps[~copy] = method(images, tgt, gens).detach().float().cpu().numpy()
            store.write(rows, maps)
            reused += int(copy.sum())
            shown.update(len(rows))
    mine = (todo - reused, time.perf_counter() - t0, passes.forward_rows, passes.backward_rows, reused)
    done, seconds, forward, backward, reused = (sum(v) for v in zip(*all_gather_objects(mine)))
    origin = source.label_set if source and reused else ""
    rec = GenerationRecord(
        label_set,
        method.store_id,
        n,
        done,
        seconds,
        forward,
        backward,
        processes=world,
        n_reused=reused,
        reused_from=origin,
    )
    if rank == 0:
        store.update_attrs({"last_run": _jsonable(dataclasses.asdict(rec))})
    return rec


def applicable_method(
    ws: Workspace, method_id: str, overrides: Mapping[str, Any] | None, example: torch.Tensor | None
) -> SaliencyMethod | NotApplicableError:
    """``method_id`` built for the run, or the :class:`NotApplicableError` saying why it cannot apply
    (raised when it is built or by its check on ``example``, (1,C,H,W), before any work)."""
    try:
        method = ws.method(method_id, overrides)
        if example is not None:
            method.check_applies(example)
    except NotApplicableError as exc:
        return exc
    return method


def _marker(ws: Workspace, label_set: str, method: str) -> Path:
    path = ws.layout.maps(label_set, method)
    return path.with_name(f"{method}.{NOT_APPLICABLE}.json")


def _na_row(ws: Workspace, label_set: str, method: str, applies: bool) -> dict[str, Any]:
    family = METHODS.get(method).family if method in METHODS else "unknown"
    n = len(ws.images)
    return {
        "model": ws.cfg.model.name,
        "dataset": ws.data.name,
        "label_set": label_set,
        "method": method,
        "family": family,
        "augmentation": ws.augmentation,
        "variant": ws.variant,
        "level": 0,
        "metric": NOT_APPLICABLE,
        "value": 0.0 if applies else 1.0,
        "n_images": n if applies else 0,
        "n_skipped": 0 if applies else n,
        "higher_is_better": None,
        "protocol": ws.cfg.run.protocol,
        "checkpoint": ws.checkpoint_id,
        "inputs": ws.model_id,
    }


def record_not_applicable(ws: Workspace, label_set: str, method_id: str, reason: str) -> GenerationRecord:
    """Skip ``method_id`` for ``label_set``: one warning, the marker file and the ``results.csv`` row
    (written by rank 0 alone inside a process group)."""
    rank, world = world_info()
    if rank != 0:
        return GenerationRecord(label_set, method_id, len(ws.images), 0, 0.0, 0, 0, reason, world)
    log.warning("%s/%s: not applicable, skipped: %s", label_set, method_id, reason)
    marker = {
        "method": method_id,
        "label_set": label_set,
        "reason": reason,
        "model": ws.cfg.model.name,
        "model_id": ws.model_id,
        "target_layer": ws.target_layer,
        "protocol": ws.cfg.run.protocol,
    }
    path = _marker(ws, label_set, method_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, marker)
    upsert_results(ws.layout.results_csv, [_na_row(ws, label_set, method_id, applies=False)])
    return GenerationRecord(label_set, method_id, len(ws.images), 0, 0.0, 0, 0, reason, world)


def not_applicable_reasons(ws: Workspace, methods: list[str] | tuple[str, ...]) -> str:
    """``method (reason)`` of every asked method that generation recorded as not applicable to the model
    for every label set of the run (``<method>.not_applicable.json`` markers); empty if any is missing."""
    found = {}
    for method in methods:
        for label_set in ws.cfg.run.label_sets:
            marker = _marker(ws, label_set, method)
            if not marker.is_file():
                return ""
            found[method] = json.loads(marker.read_text()).get("reason", "")
    return "; ".join(f"{m} ({r})" for m, r in found.items())


def clear_not_applicable(ws: Workspace, label_set: str, method: str) -> None:
    """A method recorded as not applicable by an earlier run applies now: marker removed, row set to 0
    (by rank 0 alone inside a process group)."""
    path = _marker(ws, label_set, method)
    if world_info()[0] == 0 and path.is_file():
        path.unlink()
        upsert_results(ws.layout.results_csv, [_na_row(ws, label_set, method, applies=True)])


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    method_ids = list(options.get("methods") or METHODS.names())
    p.add_argument(
        "--method", nargs="+", choices=method_ids, help=f"methods to run (default: {' '.join(method_ids)})"
    )
    if any("deprocess" in _fields(m) for m in method_ids):
        p.add_argument(
            "--deprocess", choices=list(DEPROCESSORS), help="gradient normalisation (default: the protocol's)"
        )
    if "casme" in method_ids:
        p.add_argument("--masker", help="CASME masker checkpoint (overrides methods.casme.checkpoint)")


def _fields(method_id: str) -> set[str]:
    return {f.name for f in dataclasses.fields(METHODS.get(method_id).params_cls)}


def _run(args: argparse.Namespace, options: Options) -> int:
    """Config -> workspace -> :func:`generate` -> one printed line per (label set, method).

    Under ``torchrun`` every rank generates its shard of every store (see the module docstring) and
    rank 0 prints the summary.
    """
    cfg = config_from_args(args)
    method_ids = args.method or list(options.get("methods") or [m for m in METHODS.names() if m != "casme"])
    overrides: dict[str, dict[str, Any]] = {m: {} for m in method_ids}
    for m in method_ids:
        if getattr(args, "deprocess", None) and "deprocess" in _fields(m):
            overrides[m]["deprocess"] = args.deprocess
    with distributed(cfg.run.device) as (rank, _world):
        configure_logging(args.verbose, rank)
        with rank_zero_first():
            ws = open_workspace(cfg)
        records = []
        if "casme" in method_ids:
            masker = casme_masker(ws, getattr(args, "masker", None))
            if isinstance(masker, NotApplicableError):
                method_ids = [m for m in method_ids if m != "casme"]
                records += [record_not_applicable(ws, ls, "casme", str(masker)) for ls in cfg.run.label_sets]
            else:
                overrides["casme"]["checkpoint"] = masker
        records += generate(ws, method_ids, overrides)
    if rank == 0:
        print_records(records)
        print(f"maps under {ws.layout.model_dir / 'maps'}")
    return 0


def print_records(records: Iterable[GenerationRecord]) -> None:
    """One line per record: maps computed with time and passes per image, complete, or not applicable."""
    for r in records:
        if r.not_applicable:
            print(f"{r.label_set:12s} {r.method:32s} not applicable: {r.not_applicable}")
        elif r.n_computed or r.n_reused:
            reused = f" ({r.n_reused} more reused from {r.reused_from})" if r.n_reused else ""
            print(
                f"{r.label_set:12s} {r.method:32s} {r.n_computed:6d} maps "
                f"{r.seconds_per_image * 1000:9.1f} ms/image {r.passes_per_image:8.1f} model passes/image"
                + reused
            )
        else:
            print(f"{r.label_set:12s} {r.method:32s} complete, skipped")


def casme_masker(ws: Workspace, given: str | None) -> str | NotApplicableError:
    """The CASME masker checkpoint of the run (``--masker``, ``methods.casme.checkpoint`` or the embedded
    default), or why CASME does not apply: no masker given for a model whose architecture cannot be a
    masker's encoder (``train-casme`` trains ResNet- and VGG-style classifiers only)."""
    from casme_utils.architecture import feature_points
    from casme_utils.checkpoint import resolve_checkpoint

    try:
        return given or resolve_checkpoint(ws.cfg)
    except ConfigError as exc:
        try:
            feature_points(ws.model)
        except ConfigError:
            return NotApplicableError(
                f"casme does not apply to {type(ws.model).__name__} without a masker: train-casme needs a "
                "ResNet- or VGG-style encoder; give --masker (a masker trained on another encoder) to run it"
            )
        raise exc from None


COMMAND = register(
    Command("generate", "stage 2: saliency maps into the resumable map stores", _arguments, _run)
)
