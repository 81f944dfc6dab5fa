"""Re-training metric ROAR, RemOve And Retrain (Hooker, Erhan, Kindermans & Kim, NeurIPS 2019).

For each saliency method and fraction k (paper: 10, 30, 50, 70, 90 % of the pixels), the k % most
salient pixels of every training and test image are replaced by an uninformative value, the classifier
is re-trained from scratch on the modified training set, and its accuracy on the modified test set is
the score (metric ``roar_accuracy``, variant ``k<k>``; ``roar_mean_accuracy`` is the mean over the ks).
The faster the accuracy falls, the better the map found what the classifier needs, so lower is better.
Removing pixels hurts whatever the map, so a method counts only where its curve lies below the
``random``-map control's, which removes as many pixels chosen at random. The
same architecture re-trained on the unmodified images (k = 0, method ``original``) is the reference.

Conventions (and deviations from the paper):

* Pixel order: decreasing saliency, ties broken by raster index (:func:`~salbench.metrics.perturbation.
  pixel_order`); ``(k * H * W + 50) // 100`` pixels are removed (k % of the pixels, rounded half up).
* Fill (``fill``): ``mean`` replaces removed pixels by 0 in normalised space, i.e. the per-channel
  normalisation mean (the paper's per-channel mean); ``black`` by pixel value 0 (``-mean / std``).
* Maps explain the ground-truth class; they are computed by the trained classifier (the workspace's
  model) on both splits, as in the paper, with the run's method parameters and per-batch seeds.
* Training: the run's recipe (:func:`~salbench.models.training.train_classifier`), every re-training
  from the same initialisation (``seed``), so differences between methods and ks are not initialisation
  noise; the paper averages 5 independent re-trainings instead. No model selection: the accuracy is the
  final model's.
* The removal pattern itself can carry class information (Rong et al., ICML 2022, "A Consistent and
  Efficient Evaluation Strategy for Attribution Methods"): on the embedded shapes a CAM's removed region
  can outline the object, so an accuracy that stays high is not by itself proof of a poor map.

Distributed training: inside :func:`distributed` (entered by ``torchrun`` launches, ``WORLD_SIZE > 1``)
every re-training is wrapped in ``DistributedDataParallel`` (nccl on CUDA, gloo on CPU); each rank
trains on its :class:`~torch.utils.data.DistributedSampler` shard of the training set (drawn once with
``seed``, reshuffled within the shard every epoch), so the effective batch is ``world_size *
batch_size``. Rank 0 generates the maps and writes every output; the other ranks read the maps it wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import numbers
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from matplotlib.figure import Figure
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from salbench.config import Config, TrainConfig, config_to_dict
from salbench.data.sources import open_data
from salbench.errors import ConfigError, DataError
from salbench.methods import METHODS
from salbench.metrics.perturbation import black_images, pixel_order, pixel_ranks
from salbench.models.registry import EMBEDDED_MODELS
from salbench.models.training import load_split, predict, train_classifier, train_embedded_model
from salbench.outputs import atomic_path, write_csv, write_run_record
from salbench.results import read_results, upsert_results
from salbench.runtime import resolve_device, setup_runtime
from salbench.sanity import MethodExplainer, fresh_model, seeded_global_rng
from salbench.workspace import Workspace

log = logging.getLogger(__name__)

FILLS = ("mean", "black")
DEFAULT_KS = (10, 30, 50, 70, 90)
DEFAULT_METHODS = ("gradient", "gradcam", "integrated_gradients", "edge", "random")
CONTROL = "random"
BASELINE = "original"
METRIC = "roar_accuracy"
MEAN_METRIC = "roar_mean_accuracy"
# Quick preset: the shortest recipe that still learns the embedded task (6 epochs of 3000 images in
# batches of 32 at lr 0.003 reached 0.61 eval accuracy; 3 epochs of 600 images stay at chance, 0.10).
QUICK_KS = (50, 90)
QUICK_EPOCHS = 6
QUICK_BATCH_SIZE = 32
QUICK_LR = 0.003
QUICK_TRAIN_IMAGES = 0
QUICK_METHODS = ("gradcam", "random")
_CHUNK = 512  # images per removal chunk: bounds the (chunk, H*W) int64 rank tensors


@dataclasses.dataclass(frozen=True)
class RoarSettings:
    """What :func:`roar_scores` computes; validated on construction (one-line :class:`ConfigError`).

    Attributes:
        ks: percentages of pixels removed, integers in 1..99, distinct.
        fill: what removed pixels become, one of :data:`FILLS`.
        epochs, batch_size, lr, weight_decay, label_smoothing, seed: the re-training recipe
            (:class:`~salbench.config.TrainConfig` fields; ``batch_size`` is per process).
        baseline: also re-train on the unmodified images (score key 0).
    """

    ks: tuple[int, ...] = DEFAULT_KS
    fill: str = "mean"
    epochs: int = 16
    batch_size: int = 64
    lr: float = 0.002
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    seed: int = 0
    baseline: bool = True

    def __post_init__(self) -> None:
        ks = tuple(self.ks)
        bad = [
            k for k in ks if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= 99
        ]
        if bad:
            raise ConfigError(f"--k must be integers in 1..99 (percent of pixels removed), got {bad[0]!r}")
        if len(set(ks)) != len(ks):
            raise ConfigError(f"--k values must be distinct, got {list(ks)}")
        if self.fill not in FILLS:
            raise ConfigError(f"--fill {self.fill!r} is not one of {', '.join(FILLS)}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(
                f"train.batch_size must be >= 1 and train.lr > 0, got {self.batch_size}, {self.lr}"
            )
        object.__setattr__(self, "ks", tuple(int(k) for k in ks))  # numpy integers, lists from YAML

    @classmethod
    def from_train(cls, train: TrainConfig, **overrides) -> RoarSettings:
        """Settings re-training with the run's recipe ``train``, then ``overrides``."""
        recipe = {f.name: getattr(train, f.name) for f in dataclasses.fields(TrainConfig)}
        return cls(**{**recipe, **overrides})

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


def n_removed(k: int, n_pixels: int) -> int:
    """Pixels removed at ``k`` percent of ``n_pixels``: ``(k * n_pixels + 50) // 100`` (half up)."""
    return (k * n_pixels + 50) // 100


def removal_mask(maps: torch.Tensor, k: int) -> torch.Tensor:
    """(N,H,W) maps -> (N,H,W) bool: True on the :func:`n_removed` most salient pixels (ties: raster)."""
    n, h, w = maps.shape
    ranks = pixel_ranks(pixel_order(maps))
    return (ranks < n_removed(k, h * w)).view(n, h, w)


def remove_pixels(
    images: torch.Tensor, maps: torch.Tensor, k: int, fill: str, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """ROAR's modified images: the top-``k`` % pixels of each map replaced by ``fill``; a new tensor.

    Args:
        images: (N,C,H,W) normalised images.
        maps: (N,H,W) finite saliency maps (any scale; only the order matters).
        k: percent of pixels removed, 0..100 (0: an unchanged copy).
        fill: one of :data:`FILLS`.
        mean, std: per-channel normalisation statistics (C values).
    """
    if maps.shape != (images.shape[0], *images.shape[2:]):
        raise DataError(f"maps of shape {tuple(maps.shape)} do not fit images of shape {tuple(images.shape)}")
    if not 0 <= k <= 100:
        raise ConfigError(f"k must be in 0..100, got {k}")
    if fill not in FILLS:
        raise ConfigError(f"fill {fill!r} is not one of {', '.join(FILLS)}")
    out = images.clone()
    if k == 0 or len(images) == 0:
        return out
    if fill == "black":
        value = black_images(images[:1], mean, std)
    else:
        value = images.new_zeros((1, images.shape[1], 1, 1))
    for s in range(0, len(images), _CHUNK):
        chunk = maps[s : s + _CHUNK].to(images.device)
        if not torch.isfinite(chunk).all():
            raise DataError(f"maps {s}..{s + len(chunk) - 1} hold non-finite values")
        mask = removal_mask(chunk, k).unsqueeze(1)
        out[s : s + len(chunk)] = torch.where(mask, value, images[s : s + len(chunk)])
    return out


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group, ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _world()[1] > 1:
        dist.barrier()


@contextlib.contextmanager
def distributed(device: str) -> Iterator[tuple[int, int]]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``; yield ``(rank, world_size)``.

    nccl on CUDA (one GPU per process, ``LOCAL_RANK``), gloo on CPU; the group is destroyed on exit.
    Outside ``torchrun`` (or inside an existing group) nothing is set up.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield _world()
        return
    cuda = resolve_device(device) == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # maps are generated by rank 0 while the others wait at a barrier: allow for slow methods
    dist.init_process_group("nccl" if cuda else "gloo", timeout=dt.timedelta(hours=4))
    try:
        yield _world()
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Run the body on rank 0 first (e.g. generating the benchmark), then on the other ranks."""
    rank, world = _world()
    if world > 1 and rank != 0:
        dist.barrier()
    yield
    if world > 1 and rank == 0:
        dist.barrier()


def retrained_accuracy(
    model_factory: Callable[[], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    settings: RoarSettings,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> float:
    """Test accuracy (exact fraction) of ``model_factory()`` trained from scratch on ``train``.

    The model is built and trained under the global RNG seeded with ``settings.seed`` (restored after),
    so every call starts from the same initialisation; inside a process group it trains with DDP.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    rank, world = _world()
    (x, y), test = (train[0].cpu(), train[1].cpu()), (test[0].cpu(), test[1].cpu())  # batches move later
    with seeded_global_rng(device, settings.seed):
        model = model_factory().to(device)
        net: nn.Module = model
        if world > 1:
            sampler = DistributedSampler(range(len(x)), world, rank, shuffle=True, seed=settings.seed)
            shard = torch.as_tensor(list(sampler), dtype=torch.long)
            x, y = x[shard], y[shard]
            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        train_classifier(net, (x, y), test, settings.train_config(), device, progress and rank == 0)
    correct = (predict(model, test[0]).argmax(1) == test[1]).sum().item()
    return correct / len(test[1])


def roar_scores(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    train_maps: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    test_maps: torch.Tensor,
    model_factory: Callable[[], nn.Module],
    settings: RoarSettings,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[int, float]:
    """k -> test accuracy of a model re-trained from scratch on train images with their top-k% pixels
    removed (k=0: unmodified, when ``settings.baseline``); test images are modified the same way.

    Args:
        train_images, test_images: (N,C,H,W) normalised float images (modified and kept on the CPU;
            training batches move to ``device``).
        train_labels, test_labels: (N,) int64 labels.
        train_maps, test_maps: (N,H,W) maps of the images (explaining their labels).
        model_factory: builds an untrained classifier.
        settings: ks, fill and the training recipe.
        mean, std: per-channel normalisation statistics.
        device: training device.
        progress: show per-epoch progress bars.
    """
    for name, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        if images.ndim != 4 or labels.shape != (images.shape[0],):
            raise DataError(
                f"{name}: expected images (N,C,H,W) and labels (N,), got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
    train_images, train_labels, train_maps = train_images.cpu(), train_labels.cpu(), train_maps.cpu()
    test_images, test_labels, test_maps = test_images.cpu(), test_labels.cpu(), test_maps.cpu()
    test = (test_images, test_labels)
    scores = {}
    if settings.baseline:
        scores[0] = retrained_accuracy(
            model_factory, (train_images, train_labels), test, settings, device, progress
        )
    for k in settings.ks:
        train_k = remove_pixels(train_images, train_maps, k, settings.fill, mean, std)
        test_k = remove_pixels(test_images, test_maps, k, settings.fill, mean, std)
        scores[k] = retrained_accuracy(
            model_factory, (train_k, train_labels), (test_k, test_labels), settings, device, progress
        )
    return scores


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
    if _world()[0] == 0 and (ws.cfg.run.overwrite or not all(p.is_file() for p in paths)):
        log.info("roar: maps of %s for %d + %d images", stem.name, len(train[1]), len(test[1]))
        maps, _ = MethodExplainer(ws, method_id, _batches(ws, train, test))(ws.model)
        _save_npy(paths[0], maps[: len(train[1])])
        _save_npy(paths[1], maps[len(train[1]) :])
    _barrier()
    train_maps, test_maps = (torch.from_numpy(np.load(p, allow_pickle=False)) for p in paths)
    return train_maps, test_maps


def result_rows(ws: Workspace, scores: pd.DataFrame, n_test: int) -> list[dict]:
    """Tidy ``results.csv`` rows from ``scores`` (columns ``method, k, accuracy``).

    One ``roar_accuracy`` row per method x k (variant ``k<k:02d>``; the unmodified re-training is method
    :data:`BASELINE`, ``k00``) and one ``roar_mean_accuracy`` row per method (variant ``""``, mean over
    its ks). Maps explain the ground-truth class; lower accuracy is better.
    """
    base = {"model": ws.cfg.model.name, "dataset": ws.data.name, "label_set": "groundtruth"}
    base |= {"augmentation": ws.augmentation, "n_images": n_test, "n_skipped": 0, "higher_is_better": False}
    base |= {"protocol": ws.cfg.run.protocol}
    rows = [
        {
            **base,
            "method": r.method,
            "variant": f"k{int(r.k):02d}",
            "metric": METRIC,
            "value": float(r.accuracy),
        }
        for r in scores.itertuples()
    ]
    for method, part in scores[scores["method"] != BASELINE].groupby("method", sort=False):
        value = float(part["accuracy"].mean())
        rows.append({**base, "method": method, "variant": "", "metric": MEAN_METRIC, "value": value})
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


def roar_figure(scores: pd.DataFrame, path: Path, chance: float | None = None) -> Path:
    """Test accuracy vs percent of pixels removed, one line per method, the control dashed."""
    from salbench.report.figures import MARKERS, OKABE_ITO

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    base = scores.loc[scores["method"] == BASELINE, "accuracy"]
    if len(base):
        ax.axhline(float(base.iloc[0]), color="grey", linewidth=1.2, label="no removal (k = 0)")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
    methods = [m for m in dict.fromkeys(scores["method"]) if m != BASELINE]
    for i, method in enumerate(m for m in methods if m != CONTROL):
        part = scores[scores["method"] == method].sort_values("k")
        style = {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)]}
        ax.plot(part["k"], part["accuracy"], label=method, markersize=5, **style)
    if CONTROL in methods:
        part = scores[scores["method"] == CONTROL].sort_values("k")
        ax.plot(part["k"], part["accuracy"], "k--", marker="x", label=f"{CONTROL} (control)", markersize=5)
    ax.set_xlabel("pixels removed, k (%)")
    ax.set_ylabel("test accuracy after re-training")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    ax.set_title("ROAR: remove the most salient pixels and re-train (lower = better map)", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


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
    check_data(ws.cfg)
    start, methods, (rank, world) = time.perf_counter(), resolve_methods(methods), _world()
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
    keys = {}
    for method_id in methods:
        explainer = MethodExplainer(ws, method_id, _batches(ws, (train[0][:1], train[1][:1])))
        store_id, key = explainer.store_id, maps_key(ws, explainer, len(train[1]), len(test[1]))
        keys[store_id] = key
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
        record_results(ws, result_rows(ws, scores, len(test[1])))
        roar_figure(scores, out / "roar.png", chance=1.0 / int(ws.model_info["num_classes"]))
        extra = {"settings": dataclasses.asdict(settings), "methods": list(methods), "maps_keys": keys}
        extra |= {**fixed, "score_key": book.key, "seconds": round(time.perf_counter() - start, 1)}
        write_run_record(out, ws.cfg, ws.runtime, "retraining", {**extra, **ws.describe()})
    return scores
