"""Train the CASME masker of an embedded classifier on the embedded benchmark, cached next to it.

The checkpoint is :func:`casme_utils.checkpoint.default_checkpoint` (``<output_root>/models/
casme_<model>_seed<run.seed>.pt``); a complete one is reused unless ``run.overwrite``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from casme_utils.architecture import build_masker
from casme_utils.checkpoint import default_checkpoint, load_masker, save_masker
from casme_utils.training import CasmeTrainConfig, evaluate_masker, train_masker
from salbench.config import Config, config_to_dict
from salbench.data.sources import open_data
from salbench.errors import ConfigError
from salbench.models.registry import build_model
from salbench.models.training import load_split
from salbench.store.outputs import write_csv

log = logging.getLogger(__name__)


def train_casme(
    cfg: Config, device: torch.device, train_cfg: CasmeTrainConfig | None = None, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse, unless ``cfg.run.overwrite``) the masker of ``cfg.model`` on the embedded data.

    The encoder starts from the run's classifier (``model.checkpoint`` or the cached embedded one);
    the quality numbers are :func:`evaluate_masker` with that classifier on the ``eval`` split. Writes
    :func:`~casme_utils.checkpoint.default_checkpoint` and ``<stem>_history.csv`` beside it.

    Returns:
        ``(checkpoint path, meta)``; ``meta["quality"]`` holds the evaluation numbers.
    """
    from salbench.stages.workspace import with_default_checkpoint

    path = default_checkpoint(cfg)
    cfg = with_default_checkpoint(cfg)
    if path.is_file() and not cfg.run.overwrite:
        _, meta = load_masker(path)
        if meta.get("classifier_checkpoint") != cfg.model.checkpoint:
            log.warning(
                "%s was trained from %s, not %s",
                path,
                meta.get("classifier_checkpoint"),
                cfg.model.checkpoint,
            )
        log.info("reusing %s", path)
        return path, meta
    if not Path(cfg.model.checkpoint).is_file():
        raise ConfigError(
            f"classifier checkpoint {cfg.model.checkpoint!r} does not exist; "
            "train the classifier first with main/train_embedded.py"
        )
    train_cfg = train_cfg or CasmeTrainConfig(seed=cfg.run.seed)
    splits = {s: open_data(cfg, split=s, limit=0) for s in ("train", "eval")}
    classifier, info = build_model(cfg.model, num_classes=splits["train"].num_classes)
    tensors = {s: load_split(src, progress) for s, src in splits.items()}
    masker = build_masker(
        copy.deepcopy(classifier), train_cfg.decoder_width, torch.Generator().manual_seed(train_cfg.seed)
    )
    t0 = time.perf_counter()
    history = train_masker(masker, tensors["train"], train_cfg, device, progress)
    seconds = time.perf_counter() - t0
    quality = evaluate_masker(masker, classifier.to(device), tensors["eval"], upsample=train_cfg.upsample)
    meta = {
        "encoder": cfg.model.name,
        "num_classes": int(info["num_classes"]),
        "decoder_width": masker.decoder.width,
        "in_planes": list(masker.decoder.in_planes),
        "input_size": int(tensors["train"][0].shape[-1]),
        "mean": list(splits["train"].preprocess.mean),
        "std": list(splits["train"].preprocess.std),
        "upsample": train_cfg.upsample,
        "classifier_checkpoint": cfg.model.checkpoint,
        "train": dataclasses.asdict(train_cfg),
        "data": config_to_dict(cfg.data.embedded),
        "train_seconds": seconds,
        "quality": quality,
    }
    save_masker(path, masker.cpu(), meta)
    write_csv(f"{path.with_suffix('')}_history.csv", history)
    return path, meta
