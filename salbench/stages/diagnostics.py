"""Stage 1: per-image ground-truth, top-1 and least-likely labels and probabilities.

Probabilities are the softmax of the model's logits on the evaluation crop (eval mode). The three
label sets of the later stages are read from here (:func:`read_targets`), so every stage explains the
same targets.

Under ``torchrun`` each rank runs the model over its contiguous shard of whole batches
(:func:`salbench.store.maps.shard_rows` in units of ``batch_size``, so every batch is the one a single
process forms and the probabilities are bit-identical); the rows are gathered in rank order and rank 0
alone writes the outputs, which every rank finds on disk when :func:`run_diagnostics` returns.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from salbench.data.images import FileImages
from salbench.errors import DataError
from salbench.progress import progress as progress_bar
from salbench.runtime import all_gather_objects, barrier, distributed, rank_zero_first, world_info
from salbench.scoped import model_mode
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.workspace import Workspace, open_workspace
from salbench.stats import Bootstrap, summarise_mean
from salbench.store.maps import shard_rows
from salbench.store.outputs import digest, write_csv, write_json, write_run_record
from salbench.store.results import upsert_results

log = logging.getLogger(__name__)

DIAGNOSTICS_COLUMNS = [
    "image_id",
    "path",
    "groundtruth_label",
    "groundtruth_name",
    "groundtruth_prob",
    "predicted_label",
    "predicted_name",
    "predicted_prob",
    "least_label",
    "least_name",
    "least_prob",
    "correct",
]
# Column holding the target class / its probability for each label set.
LABEL_SET_COLUMNS = {
    "groundtruth": ("groundtruth_label", "groundtruth_prob"),
    "predicted": ("predicted_label", "predicted_prob"),
    "least": ("least_label", "least_prob"),
}


@torch.no_grad()
def compute_diagnostics(ws: Workspace, progress: bool = True, rows: range | None = None) -> pd.DataFrame:
    """Run the model over every listed image (or the image ``rows``, which start a batch); one row per
    image in list order (DIAGNOSTICS_COLUMNS)."""
    names = ws.data.class_names
    out = []
    bs = ws.cfg.run.batch_size
    rows = range(len(ws.images)) if rows is None else rows
    n_batches = -(-len(rows) // bs)
    files = ws.images.source if isinstance(ws.images, FileImages) else None
    with model_mode(ws.model, False):
        chosen = np.arange(rows.start, rows.stop, rows.step)
        batches = progress_bar(ws.images.batches(bs, chosen), "diagnostics", n_batches, progress)
        for idx, images, labels in batches:
            logits = ws.model(images.to(ws.runtime.torch_device)).float()
            if not bool(torch.isfinite(logits).all()):
                first = ws.images.ids[int(idx[int((~torch.isfinite(logits)).any(1).nonzero()[0])])]
                raise DataError(
                    f"model {ws.cfg.model.name} ({ws.model_info.get('checkpoint') or 'its weights'}) gives "
                    f"NaN or inf logits for image {first!r}; the weights or the input are unusable"
                )
            probs = torch.softmax(logits, dim=1).cpu()
            gt = probs.gather(1, labels.view(-1, 1)).squeeze(1)
            p_top, top = probs.max(1)
            p_low, low = probs.min(1)
            for k, i in enumerate(idx):
                rec = files.records[int(i)] if files is not None else None
                out.append(
                    {
                        "image_id": ws.images.ids[int(i)],
                        "path": str(rec.path.relative_to(files.root)) if rec is not None else "",
                        "groundtruth_label": int(labels[k]),
                        "groundtruth_name": names[int(labels[k])],
                        "groundtruth_prob": float(gt[k]),
                        "predicted_label": int(top[k]),
                        "predicted_name": names[int(top[k])],
                        "predicted_prob": float(p_top[k]),
                        "least_label": int(low[k]),
                        "least_name": names[int(low[k])],
                        "least_prob": float(p_low[k]),
                        "correct": bool(top[k] == labels[k]),
                    }
                )
    return pd.DataFrame(out, columns=DIAGNOSTICS_COLUMNS)


def complete_info(frame: pd.DataFrame) -> dict[str, list]:
    """The original study's ``complete_info.json`` layout (its scripts read these keys)."""
    return {
        "Filenames": frame["path"].tolist(),
        "GroundtruthLabels": frame["groundtruth_label"].astype(int).tolist(),
        "GroundtruthProbs": frame["groundtruth_prob"].astype(float).tolist(),
        "PredictedLabels": frame["predicted_label"].astype(int).tolist(),
        "PredictedProbs": frame["predicted_prob"].astype(float).tolist(),
        "WorstLabels": frame["least_label"].astype(int).tolist(),
        "WorstProbs": frame["least_prob"].astype(float).tolist(),
    }


def run_diagnostics(ws: Workspace, progress: bool = True) -> pd.DataFrame:
    """Stage 1: write diagnostics.csv, complete_info.json, a calibration summary, config and manifest.

    Skips the computation when diagnostics.csv exists for the same images and its manifest records the
    same model (weights digest and input specification); recomputes it otherwise (or with overwrite).
    Inside a process group every rank must call it: each computes its shard, every rank returns the
    whole frame, once rank 0 has written the outputs.
    """
    frame = _diagnostics(ws, progress)
    barrier()  # rank 0's files are on disk before any rank reads them (the next stage's targets)
    return frame


def _shard(ws: Workspace) -> range | None:
    """This rank's rows (whole batches), None outside a process group."""
    rank, world = world_info()
    if world == 1 or not len(ws.images):
        return None
    return shard_rows(len(ws.images), rank, world, ws.cfg.run.batch_size)


def _diagnostics(ws: Workspace, progress: bool) -> pd.DataFrame:
    """:func:`run_diagnostics` without the closing barrier."""
    rank = world_info()[0]
    out = ws.layout.diagnostics_dir
    csv = ws.layout.diagnostics_csv
    identity = {"model_id": ws.model_id, "images_id": ws.images_id}
    if csv.is_file() and not ws.cfg.run.overwrite:
        recorded = _recorded_identity(out / "manifest.json")
        frame = pd.read_csv(csv)
        if frame["image_id"].astype(str).tolist() == ws.images.ids and recorded == identity:
            log.info(
                "diagnostics exist for these %d images: %s (use --overwrite to recompute)", len(frame), csv
            )
            if rank == 0:
                upsert_results(ws.layout.results_csv, accuracy_rows(ws, frame))
            return frame
        log.info("%s: computed for another model or other images; recomputing", csv)
    parts = all_gather_objects(compute_diagnostics(ws, progress and rank == 0, _shard(ws)))
    # rank order is row order; empty shards are left out so that no column changes its dtype
    frame = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    if rank != 0:
        return frame
    probs_gt = torch.tensor(frame["groundtruth_prob"].to_numpy())
    summary = {
        "n_images": len(frame),
        "top1_accuracy": float(frame["correct"].mean()),
        "n_misclassified": int((~frame["correct"]).sum()),
        "gt_prob_median": float(probs_gt.median()),
        "gt_prob_mean": float(probs_gt.mean()),
    }
    write_csv(csv, frame)
    write_json(out / "complete_info.json", complete_info(frame))
    extra = {"summary": summary, "identity": identity, **ws.describe()}
    write_run_record(out, ws.cfg, ws.runtime, "diagnostics", extra)
    upsert_results(ws.layout.results_csv, accuracy_rows(ws, frame))
    return frame


def accuracy_rows(ws: Workspace, frame: pd.DataFrame) -> list[dict]:
    """``results.csv`` rows of the classifier itself (method ``model``): top-1 accuracy on the explained
    images (with its bootstrap interval) and chance (1 / classes), so the report can say how good the
    explained model is."""
    base = {"model": ws.cfg.model.name, "dataset": ws.data.name, "label_set": "groundtruth"}
    base |= {"method": "model", "family": "Reference", "augmentation": ws.augmentation, "variant": ws.variant}
    base |= {"level": 0, "n_images": len(frame), "n_skipped": 0, "protocol": ws.cfg.run.protocol}
    base |= {"checkpoint": ws.checkpoint_id, "inputs": digest({"model": ws.model_id, "images": ws.images_id})}
    accuracy = summarise_mean(frame["correct"].astype(float), Bootstrap.from_run(ws.cfg.run)).columns()
    spread = {k: accuracy[k] for k in ("value", "std", "ci_low", "ci_high", "ci_level")}
    return [
        {**base, "metric": "top1_accuracy", **spread, "higher_is_better": True},
        {
            **base,
            "metric": "chance_accuracy",
            "value": 1.0 / int(ws.model_info["num_classes"]),
            "higher_is_better": True,
        },
    ]


def _recorded_identity(manifest: Path) -> dict | None:
    try:
        return json.loads(manifest.read_text()).get("identity")
    except (OSError, ValueError):
        return None


def read_targets(diagnostics_csv: Path, label_set: str, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Targets (N,) int64 and their stage-1 probabilities (N,) float64 for ``label_set``, in ``ids`` order.

    Raises:
        DataError: when stage 1 has not run or does not cover ``ids``.
    """
    if not diagnostics_csv.is_file():
        raise DataError(f"{str(diagnostics_csv)!r} not found: run main/diagnostics.py first")
    frame = pd.read_csv(diagnostics_csv, dtype={"image_id": str}).set_index("image_id")
    missing = [i for i in ids if i not in frame.index]
    if missing:
        raise DataError(
            f"{str(diagnostics_csv)!r} has no row for image {missing[0]!r}: rerun main/diagnostics.py"
        )
    label_col, prob_col = LABEL_SET_COLUMNS[label_set]
    sub = frame.loc[ids]
    return sub[label_col].to_numpy(np.int64), sub[prob_col].to_numpy(np.float64)


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    return None


def _run(args: argparse.Namespace, options: Options) -> int:
    """Config -> workspace -> :func:`run_diagnostics` -> one printed line (by rank 0 under ``torchrun``)."""
    cfg = config_from_args(args)
    with distributed(cfg.run.device) as (rank, _world):
        configure_logging(args.verbose, rank)
        with rank_zero_first():
            ws = open_workspace(cfg)
        frame = run_diagnostics(ws)
    if rank:
        return 0
    acc = float(frame["correct"].mean())
    print(
        f"{ws.cfg.model.name} on {ws.data.name}: top-1 accuracy {acc:.4f} over {len(frame)} images "
        f"({int((~frame['correct']).sum())} misclassified); wrote {ws.layout.diagnostics_dir}"
    )
    return 0


HELP = "stage 1: ground-truth, top-1 and least-likely labels and probabilities of every image"
COMMAND = register(Command("diagnostics", HELP, _arguments, _run, label_sets=False))
