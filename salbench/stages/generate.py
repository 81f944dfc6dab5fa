"""Stage 2: generate saliency maps into the resumable map store.

For each label set and method: targets come from stage 1, the map store at
``<root>/<model>/maps/<label_set>/<method>.zarr`` is opened (or resumed), and the pending rows are
explained in fixed, aligned batches. Random draws are seeded per aligned batch (``seed``, method id,
batch index), so a resumed run writes exactly the maps an uninterrupted run writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from salbench.config import config_to_dict
from salbench.methods import METHODS, SaliencyMethod
from salbench.methods.deprocess import DEPROCESSORS
from salbench.progress import bar, counting_passes
from salbench.scoped import count_passes
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.diagnostics import read_targets
from salbench.stages.workspace import Workspace, open_workspace
from salbench.store.maps import MapStore

log = logging.getLogger(__name__)


def build_method(ws: Workspace, method_id: str, overrides: Mapping[str, Any] | None = None) -> SaliencyMethod:
    """Instantiate ``method_id`` with its resolved params (protocol preset < config < ``overrides``)."""
    return ws.method(method_id, overrides)


def methods_of_family(*families: str) -> list[str]:
    """Registry ids whose ``family`` is one of ``families`` (registry order)."""
    return [m for m in METHODS.names() if METHODS.get(m).family in families]


def _open_store(ws: Workspace, label_set: str, method: SaliencyMethod) -> MapStore:
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
    }
    path = ws.layout.maps(label_set, method.store_id)
    if ws.cfg.run.overwrite and path.exists():
        return MapStore.open(path, ws.images.ids, ws.images.size, attrs=_jsonable(attrs), overwrite=True)
    return MapStore.open(path, ws.images.ids, ws.images.size, attrs=_jsonable(attrs))


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
    """
    records = []
    bs = ws.cfg.run.batch_size
    n = len(ws.images)
    for label_set in ws.cfg.run.label_sets:
        targets, _ = read_targets(ws.layout.diagnostics_csv, label_set, ws.images.ids)
        for method_id in method_ids:
            method = ws.method(method_id, (overrides or {}).get(method_id))
            store = _open_store(ws, label_set, method)
            pending = store.pending()
            if len(pending) == 0:
                log.info("%s/%s: complete (%d maps), skipped", label_set, method.store_id, n)
                records.append(GenerationRecord(label_set, method.store_id, n, 0, 0.0, 0, 0))
                continue
            method.prepare(ws.preparation(desc=f"{method.store_id}: prepare", progress=progress))
            batches = sorted({int(r) // bs for r in pending})
            todo = sum(min((b + 1) * bs, n) - b * bs for b in batches)
            t0 = time.perf_counter()
            with (
                count_passes(ws.model) as passes,
                bar(todo, f"{label_set}/{method.store_id}", enabled=progress) as shown,
                counting_passes(shown, ws.model),
            ):
                for b in batches:
                    rows = np.arange(b * bs, min((b + 1) * bs, n))
                    images = ws.images.load(rows)
                    tgt = torch.as_tensor(targets[rows], device=ws.runtime.device)
                    maps = method(images.to(ws.runtime.device), tgt, ws.generator(method.store_id, b))
                    store.write(rows, maps.detach().float().cpu().numpy())
                    shown.update(len(rows))
            rec = GenerationRecord(
                label_set,
                method.store_id,
                n,
                todo,
                time.perf_counter() - t0,
                passes.forward_rows,
                passes.backward_rows,
            )
            store.update_attrs({"last_run": _jsonable(dataclasses.asdict(rec))})
            records.append(rec)
    return records


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
    """Config -> workspace -> :func:`generate` -> one printed line per (label set, method)."""
    configure_logging(args.verbose)
    cfg = config_from_args(args)
    method_ids = args.method or list(options.get("methods") or [m for m in METHODS.names() if m != "casme"])
    overrides: dict[str, dict[str, Any]] = {m: {} for m in method_ids}
    for m in method_ids:
        if getattr(args, "deprocess", None) and "deprocess" in _fields(m):
            overrides[m]["deprocess"] = args.deprocess
    if "casme" in method_ids:
        from casme_utils.checkpoint import resolve_checkpoint

        overrides["casme"]["checkpoint"] = getattr(args, "masker", None) or resolve_checkpoint(cfg)
    ws = open_workspace(cfg)
    for r in generate(ws, method_ids, overrides):
        if r.n_computed:
            print(
                f"{r.label_set:12s} {r.method:32s} {r.n_computed:6d} maps "
                f"{r.seconds_per_image * 1000:9.1f} ms/image {r.passes_per_image:8.1f} model passes/image"
            )
        else:
            print(f"{r.label_set:12s} {r.method:32s} complete, skipped")
    print(f"maps under {ws.layout.model_dir / 'maps'}")
    return 0


COMMAND = register(
    Command("generate", "stage 2: saliency maps into the resumable map stores", _arguments, _run)
)
