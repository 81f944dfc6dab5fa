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

Distributed training: inside :func:`salbench.runtime.distributed` (entered by ``torchrun`` launches,
``WORLD_SIZE > 1``) every re-training is wrapped in ``DistributedDataParallel`` (nccl on CUDA, gloo on
CPU); each rank trains on its :class:`~torch.utils.data.DistributedSampler` shard of the training set
(drawn once with ``seed``, reshuffled within the shard every epoch), so the effective batch is
``world_size * batch_size``. Rank 0 generates the maps and writes every output; the other ranks read the
maps it wrote.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from salbench.config import TrainConfig
from salbench.errors import ConfigError, DataError
from salbench.metrics.perturbation import black_images, pixel_order, pixel_ranks
from salbench.models.training import predict, train_classifier
from salbench.runtime import world_info
from salbench.scoped import seeded_global_rng

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
    rank, world = world_info()
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
