"""The models and maps of the sanity checks (:mod:`salbench.stages.sanity`): the randomised and
label-shuffled models, built lazily and shared out over the ranks of a process group, and the
per-image similarity of each method's maps on them to its maps on the original model."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence

import pandas as pd
import torch
from torch import nn

from salbench.config import TrainConfig
from salbench.data.sources import open_data
from salbench.metrics.similarity import similarity_scores
from salbench.models.randomisation import LayerBlock, randomised_copy
from salbench.models.registry import load_checkpoint
from salbench.models.training import load_split, train_classifier
from salbench.runtime import all_gather_objects
from salbench.scoped import seeded_global_rng
from salbench.stages.workspace import MethodExplainer, Workspace, fresh_model
from salbench.store.outputs import atomic_path, write_csv

log = logging.getLogger("salbench.stages.sanity")


def label_shuffled_model(ws: Workspace, train: TrainConfig, progress: bool = True) -> nn.Module:
    """The run's architecture trained on the training split with shuffled labels (paper Sec. 4), cached.

    Labels are permuted with a generator seeded by ``train.seed`` (class frequencies kept); initialisation
    and training draw from the global RNG seeded by ``train.seed`` and restored afterwards. Validation
    accuracy is against the true labels (near chance when the model learnt nothing of the task). The
    checkpoint and its training history live under ``<model>/sanity/``.
    """
    folder = ws.layout.model_dir / "sanity"
    ckpt = folder / f"label_shuffled_data{ws.cfg.data.embedded.seed}_seed{train.seed}_epochs{train.epochs}.pt"
    with seeded_global_rng(ws.runtime.torch_device, train.seed):
        model = fresh_model(ws)
        if ckpt.is_file() and not ws.cfg.run.overwrite:
            model.load_state_dict(load_checkpoint(ckpt)[0])
            return model.to(ws.runtime.torch_device).eval()
        x_train, y_train = load_split(open_data(ws.cfg, split="train", limit=0), progress)
        val = load_split(open_data(ws.cfg, split="val", limit=0), progress)
        perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(train.seed))
        history = train_classifier(
            model, (x_train, y_train[perm]), val, train, ws.runtime.torch_device, progress
        )
    write_csv(ckpt.with_suffix(".history.csv"), history)
    meta = {"train": dataclasses.asdict(train), "labels": "shuffled", **history.iloc[-1].to_dict()}
    with atomic_path(ckpt) as tmp:
        torch.save(
            {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta}, tmp
        )
    return model.eval()


def model_variants(
    ws: Workspace,
    blocks: Sequence[LayerBlock],
    variants: Sequence[str],
    data_model: Callable[[], nn.Module],
    part: tuple[int, int] = (0, 1),
) -> Iterator[tuple[str, int, nn.Module]]:
    """Yield ``(variant, level, model)`` lazily: ``cascading:<block>``, ``independent:<block>``, ``data``;
    ``part=(rank, world)``: only every world-th variant from ``rank`` (the others are never built)."""
    rank, world = part
    for i, (name, level) in enumerate(variant_names(blocks, variants)):
        if i % world != rank:
            continue
        if name == "data":
            yield name, level, data_model()
            continue
        kind = name.split(":", 1)[0]
        chosen = blocks[:level] if kind == "cascading" else [blocks[level - 1]]
        gen = torch.Generator().manual_seed(ws.cfg.run.seed)
        yield name, level, randomised_copy(ws.model, chosen, gen)


def variant_names(blocks: Sequence[LayerBlock], variants: Sequence[str]) -> list[tuple[str, int]]:
    """``(variant, level)`` in the order the checks run them (and write them)."""
    names = [
        (f"{k}:{b.name}", i + 1)
        for k in ("cascading", "independent")
        if k in variants
        for i, b in enumerate(blocks)
    ]
    return names + ([("data", 0)] if "data" in variants else [])


def gathered(frames: dict[str, pd.DataFrame], order: list[str]) -> dict[str, pd.DataFrame]:
    """Every rank's rows of each store id, in the single-process order of the variants."""
    parts = all_gather_objects(frames)
    rank = {v: i for i, v in enumerate(order)}
    out = {}
    for store_id in frames:
        frame = pd.concat([p[store_id] for p in parts], ignore_index=True)
        out[store_id] = frame.sort_values(
            "variant", key=lambda v: v.map(rank), kind="stable", ignore_index=True
        )
    return out


def compare_methods(
    explainers: Sequence[MethodExplainer], ids: list[str], models: Iterator[tuple[str, int, nn.Module]]
) -> dict[str, pd.DataFrame]:
    """Per store id, one row per image x variant with :data:`METRIC_IDS` (each model is built once)."""
    reference = {e.store_id: e(e.ws.model) for e in explainers}
    parts: dict[str, list[pd.DataFrame]] = {e.store_id: [] for e in explainers}
    for variant, level, model in models:
        log.info("sanity: %s", variant)
        for e in explainers:
            scores = similarity_scores(reference[e.store_id], e(model))
            parts[e.store_id].append(
                pd.DataFrame({"image_id": ids, "variant": variant, "level": level, **scores})
            )
    return {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}
