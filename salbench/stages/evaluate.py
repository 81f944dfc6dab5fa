"""Stage 3: evaluate stored maps (interpretable recognition, fidelity/complexity, localization).

For each label set, every complete map store is evaluated in fixed, aligned batches: the images of a
batch are loaded once and every pending method is evaluated on them (so map-independent model passes,
e.g. the insertion/deletion curve ends, are shared through a cache). Each (method, batch) result is
written atomically as a part file, so a killed run resumes at the batch it stopped in; a complete
method's parts become ``<method>_<kind>.csv`` (+ ``_curves.npz``), its summary rows go to results.csv.

Under ``torchrun`` (inside :func:`salbench.runtime.distributed`) rank 0 holds the locks, decides what
is missing and deals the missing batches out to the ranks in turn; every rank writes the parts of its
batches, and once all have finished rank 0 merges them and writes results.csv. A batch's values depend
only on its images, its maps and its keyed generators, never on the rank or on the batches computed
before it, so the outputs are those of one process, and parts left by a run of N processes are reused
by a rerun with any other number.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections import defaultdict

import numpy as np
import pandas as pd
import torch

from salbench.errors import DataError
from salbench.progress import bar, counting_passes
from salbench.runtime import all_gather_objects, distributed, from_rank_zero, rank_zero_first, world_info
from salbench.scoped import count_passes, pass_precision
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.diagnostics import read_targets
from salbench.stages.generate import not_applicable_reasons
from salbench.stages.kinds import KINDS, Batch, Kind, compute_kind, make_state, summary_rows
from salbench.stages.parts import (
    evaluation_key,
    final_path,
    find_score_source,
    fresh_parts,
    is_done,
    merge_parts,
    open_store,
    part_paths,
    read_maps,
    write_part,
)
from salbench.stages.reuse import ScoreSource
from salbench.stages.workspace import Workspace, open_workspace
from salbench.stats import Bootstrap
from salbench.store.maps import MapStore
from salbench.store.outputs import file_lock, write_run_record
from salbench.store.results import read_results, upsert_results

log = logging.getLogger(__name__)


def available_methods(ws: Workspace, label_set: str) -> list[str]:
    """Store ids with a complete map store for ``label_set`` (sorted)."""
    folder = ws.layout.model_dir / "maps" / label_set
    out = []
    for path in sorted(folder.glob("*.zarr")) if folder.is_dir() else []:
        try:
            if MapStore.read_only(path).complete:
                out.append(path.name.removesuffix(".zarr"))
            else:
                log.warning("%s is incomplete: rerun its generation script; not evaluated", path)
        except Exception as exc:  # an unreadable store must not stop the others
            log.warning("%s cannot be read (%s); not evaluated", path, exc)
    return out


def evaluate(
    ws: Workspace, kind: Kind, methods: list[str] | None = None, progress: bool = True
) -> list[dict]:
    """Run ``kind`` for every label set of the config x available (or given) methods; returns result rows.

    An output is reused only when its sidecar records the same inputs (:func:`evaluation_key`: maps,
    images, model, targets, parameters, protocol, seed, batch layout); otherwise it is recomputed and its
    ``results.csv`` rows replaced. Each method's computation holds a lock, so two processes never write
    the same outputs at once.

    Inside a process group every rank must call it: rank 0 takes the locks and plans, each rank
    computes its share of the missing batches, rank 0 merges and writes results.csv; every rank returns
    the same rows once results.csv is written.

    Raises:
        DataError: nothing to evaluate (no complete store, or none of ``methods``), a store that does
            not belong to this run, or a damaged one.
    """
    read_results(ws.layout.results_csv)  # a damaged results.csv stops the stage before any work
    all_rows: list[dict] = []
    evaluated = 0
    for label_set in ws.cfg.run.label_sets:
        avail = available_methods(ws, label_set)
        todo = [m for m in (methods or avail) if m in avail]
        missing = sorted(set(methods or []) - set(avail))
        if missing and world_info()[0] == 0:
            log.warning("%s: no complete maps for %s; run generation first", label_set, ", ".join(missing))
        if todo:
            all_rows += _evaluate_label_set(ws, kind, label_set, todo, progress)
            evaluated += 1
    if not evaluated:
        asked = f"the methods {', '.join(methods)}" if methods else "any method"
        if methods and (skipped := not_applicable_reasons(ws, methods)):
            if world_info()[0] == 0:
                print(f"nothing to evaluate: not applicable to {ws.cfg.model.name}: {skipped}")
            return []
        raise DataError(
            f"nothing to evaluate: no complete map store of {asked} under {ws.layout.model_dir / 'maps'} "
            f"for label sets {', '.join(ws.cfg.run.label_sets)}; run generation first"
        )
    if world_info()[0] == 0:
        upsert_results(ws.layout.results_csv, all_rows)
    return from_rank_zero(all_rows)


def _evaluate_label_set(
    ws: Workspace, kind: Kind, label_set: str, todo: list[str], progress: bool
) -> list[dict]:
    """:func:`evaluate` for one label set: results rows of ``todo`` (on rank 0; [] on the others)."""
    rank, world = world_info()
    diagnostics = ws.layout.diagnostics_csv
    targets = (
        read_targets(diagnostics, label_set, ws.images.ids),
        read_targets(diagnostics, "predicted", ws.images.ids)[0]
        == read_targets(diagnostics, "groundtruth", ws.images.ids)[0],
    )
    stores = {m: open_store(ws, label_set, m) for m in todo}
    keys = {m: evaluation_key(ws, kind, label_set, stores[m][0], [*targets[0], targets[1]]) for m in todo}
    folder = ws.layout.evaluation_dir(label_set)
    finals = {m: final_path(ws, label_set, m, kind.name) for m in todo}
    rows: list[dict] = []
    with contextlib.ExitStack() as locks:
        plan: tuple[list[str], list[tuple[int, list[str]]]] = ([], [])
        if rank == 0:  # the locks cover the work of every rank of the group
            for m in sorted(todo):  # one order for every process: no deadlock
                locks.enter_context(file_lock(folder / ".locks" / f"{m}_{kind.name}.lock"))
            reuse = not ws.cfg.run.overwrite
            pending = [m for m in todo if not (reuse and is_done(finals[m], ws.images.ids, keys[m]["key"]))]
            for m in pending:
                fresh_parts(ws, label_set, m, kind.name, keys[m])
            plan = (pending, _missing_batches(ws, kind.name, label_set, pending))
        pending, batches = from_rank_zero(plan)
        if pending:
            share = batches[rank::world]  # in turn: a resumed run's missing batches stay balanced
            sources = {
                m: find_score_source(ws, kind, label_set, m, targets[0][0], targets[1]) for m in pending
            }
            seconds, copied, passes = _run_batches(
                ws,
                kind,
                label_set,
                {m: stores[m] for m in pending},
                targets,
                share,
                sources,
                progress and rank == 0,
            )
            seconds = _summed_over_ranks(seconds)  # also waits until every rank has written its parts
            copied, passes = _summed_over_ranks(copied), _summed_over_ranks(passes)
            if rank == 0:
                extra = {"kind": kind.name, "seconds_per_method": seconds, "n_images": len(ws.images)}
                extra["model_passes"] = {k: int(v) for k, v in passes.items()}
                extra["reused_rows"] = {m: int(copied.get(m, 0)) for m in pending}
                extra["reused_from"] = {m: s.label_set for m, s in sources.items() if s and copied.get(m)}
                extra |= {"processes": world, "intervals": Bootstrap.from_run(ws.cfg.run).describe()}
                extra |= {"precision": ws.cfg.run.precision}
                extra |= {"inputs": {m: keys[m] for m in pending}, **ws.describe()}
                manifest = f"{kind.name}_manifest.json"
                write_run_record(folder, ws.cfg, ws.runtime, f"evaluation:{kind.name}", extra, manifest)
        if rank != 0:
            return rows
        n_batches = -(-len(ws.images) // ws.cfg.run.batch_size)
        for m in todo:
            frame = (
                merge_parts(ws, label_set, m, kind.name, n_batches, keys[m])
                if m in pending
                else pd.read_csv(finals[m], dtype={"image_id": str})
            )
            family = stores[m][0].attrs["method"]["family"]
            summary = summary_rows(ws, label_set, m, frame, kind, ws.augmentation, ws.variant, family)
            rows += [{**r, "inputs": keys[m]["key"]} for r in summary]
    return rows


def _summed_over_ranks(seconds: dict[str, float]) -> dict[str, float]:
    """Per-key values (seconds, counts) summed over the ranks; returns once every rank has called it."""
    parts = all_gather_objects(seconds)
    return {m: sum(p.get(m, 0.0) for p in parts) for m in dict.fromkeys(k for p in parts for k in p)}


def _missing_batches(
    ws: Workspace, kind: str, label_set: str, methods: list[str]
) -> list[tuple[int, list[str]]]:
    """``(batch index, methods without its part)`` of every batch some method of ``methods`` lacks."""
    n_batches = -(-len(ws.images) // ws.cfg.run.batch_size)
    out = []
    for b in range(n_batches):
        todo = [m for m in methods if not part_paths(ws, label_set, m, kind, b)[0].is_file()]
        if todo:
            out.append((b, todo))
    return out


def _run_batches(
    ws: Workspace,
    kind: Kind,
    label_set: str,
    stores: dict[str, tuple[MapStore, np.ndarray]],
    targets: tuple[tuple[np.ndarray, np.ndarray], np.ndarray],
    batches: list[tuple[int, list[str]]],
    sources: dict[str, ScoreSource | None],
    progress: bool,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Write the parts of ``batches`` (index, methods); wall seconds and copied rows per method, and
    the model passes made."""
    bs, n = ws.cfg.run.batch_size, len(ws.images)
    seconds: dict[str, float] = defaultdict(float)
    copied: dict[str, float] = defaultdict(float)
    state = make_state(kind, ws, label_set)
    ranges = [(b, np.arange(b * bs, min((b + 1) * bs, n)), todo) for b, todo in batches]
    total = sum(len(rows) for _, rows, _ in ranges)
    loaded = ws.stream([rows for _, rows, _ in ranges])
    with (
        bar(total, f"{kind.name} {label_set}", enabled=progress) as shown,
        counting_passes(shown, ws.model),
        count_passes(ws.model) as passes,
        pass_precision(ws.cfg.run.precision),
    ):
        for b, rows, todo in ranges:
            _evaluate_batch(
                ws,
                kind,
                label_set,
                (b, rows, next(loaded)),
                todo,
                stores,
                targets,
                state,
                sources,
                (seconds, copied),
            )
            shown.update(len(rows))
    made = {"forward_rows": float(passes.forward_rows), "backward_rows": float(passes.backward_rows)}
    return dict(seconds), dict(copied), made


def _evaluate_batch(
    ws: Workspace,
    kind: Kind,
    label_set: str,
    loaded: tuple[int, np.ndarray, torch.Tensor],
    methods: list[str],
    stores: dict[str, tuple[MapStore, np.ndarray]],
    targets: tuple[tuple[np.ndarray, np.ndarray], np.ndarray],
    state: dict,
    sources: dict[str, ScoreSource | None],
    tallies: tuple[dict[str, float], dict[str, float]],
) -> None:
    """Write every pending method's part of one loaded aligned batch ``(index, rows, images)`` (rows
    whose scores an earlier label set computed for the same image, target and map are copied:
    :mod:`.reuse`)."""
    seconds, copied = tallies
    b, rows, images = loaded
    (labels, base), correct = targets
    dev = ws.runtime.torch_device
    batch = Batch(
        b,
        rows,
        [ws.images.ids[i] for i in rows],
        images,
        torch.as_tensor(labels[rows], device=dev),
        base[rows],
        correct[rows],
    )
    for m in methods:
        t0 = time.perf_counter()
        store, position = stores[m]
        maps = read_maps(store, position[rows])
        source = sources.get(m)
        copy = source.copyable(rows, maps, read_maps) if source else np.zeros(len(rows), dtype=bool)
        if not copy.any():
            columns, arrays = compute_kind(kind, ws, batch, m, torch.from_numpy(maps).to(dev), state)
            write_part(*part_paths(ws, label_set, m, kind.name, b), batch.ids, columns, arrays)
        else:
            columns, arrays = {}, {}
            if not copy.all():
                sub = batch.subset(~copy)
                columns, arrays = compute_kind(kind, ws, sub, m, torch.from_numpy(maps[~copy]).to(dev), state)
            frame, arrays = source.part(batch.ids, copy, columns, arrays)
            write_part(*part_paths(ws, label_set, m, kind.name, b), batch.ids, frame, arrays)
            copied[m] += int(copy.sum())
        seconds[m] += time.perf_counter() - t0


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    if "kind" not in options:
        p.add_argument("kind", choices=list(KINDS), help="what to compute (one evaluation script each)")
    p.add_argument("--method", nargs="+", help="map store ids to evaluate (default: every complete store)")


def _run(args: argparse.Namespace, options: Options) -> int:
    """Config -> workspace -> :func:`evaluate` -> one printed line per results row (rank 0 prints)."""
    cfg = config_from_args(args)
    with distributed(cfg.run.device) as (rank, _world):
        configure_logging(args.verbose)
        if rank:
            logging.getLogger().setLevel(logging.WARNING)
        with rank_zero_first():
            ws = open_workspace(cfg)
        rows = evaluate(ws, KINDS[options.get("kind") or args.kind], args.method)
    if rank:
        return 0
    for r in rows:
        print(
            f"{r['label_set']:12s} {r['method']:34s} {r['metric']:26s} {r['value']:10.4f} (n={r['n_images']})"
        )
    print(
        f"per-image CSVs under {ws.layout.model_dir / 'evaluation'}; summary rows in {ws.layout.results_csv}"
    )
    return 0


COMMAND = register(
    Command(
        "evaluate",
        "stage 3: score stored maps (recognition, complexity, localization, gomez)",
        _arguments,
        _run,
    )
)
