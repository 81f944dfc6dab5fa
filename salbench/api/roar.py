"""Re-training metric: ROAR (:func:`salbench.metrics.retraining.roar_scores`) with ``evaluate``, ``dump``.

The shape of ``saliency_metrics``' ``ReTrainingMetric``: one evaluation re-trains a classifier per
fraction k on the whole (modified) training set; the result is the test accuracy per k.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from salbench.api.results import dump_result, plain
from salbench.config import IMAGENET_MEAN, IMAGENET_STD, build_dataclass
from salbench.metrics.retraining import RoarSettings, roar_scores


class ReTrainingMetric:
    """ROAR (Hooker et al., NeurIPS 2019): test accuracy after removing the top-k % pixels and re-training.

    Lower accuracy is better (the map found what the classifier needs); compare with a random map's.

    Args:
        settings: ks, fill and the re-training recipe.
        mean: per-channel normalisation mean of the images (default ImageNet's).
        std: per-channel normalisation std (default ImageNet's).
        device: training device (default cpu).
    """

    name = "roar"
    higher_is_better = False
    category = "fidelity"

    def __init__(
        self,
        settings: RoarSettings | None = None,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.settings = settings if settings is not None else RoarSettings()
        self.mean = tuple(float(m) for m in (IMAGENET_MEAN if mean is None else mean))
        self.std = tuple(float(s) for s in (IMAGENET_STD if std is None else std))
        self.device = torch.device("cpu" if device is None else device)
        self.reset()

    @classmethod
    def from_config(cls, values: Mapping[str, Any], **kwargs: Any) -> ReTrainingMetric:
        """Settings from ``{field: value}`` (fields of :class:`~salbench.metrics.retraining.RoarSettings`)."""
        return cls(build_dataclass(RoarSettings, values, "metric 'roar'"), **kwargs)

    def reset(self) -> None:
        """Forget the last evaluation."""
        self._accuracy: dict[int, float] | None = None
        self._counts: tuple[int, int] = (0, 0)

    def evaluate(
        self,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        train_maps: torch.Tensor,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
        test_maps: torch.Tensor,
        model_factory: Callable[[], nn.Module],
        *,
        progress: bool = False,
    ) -> dict[int, float]:
        """Re-train for every k (and k = 0 when ``settings.baseline``); returns and keeps k -> accuracy.

        Args:
            train_images, test_images: (N,C,H,W) normalised images.
            train_labels, test_labels: (N,) labels.
            train_maps, test_maps: (N,H,W) finite maps explaining the labels.
            model_factory: builds an untrained classifier.
            progress: per-epoch progress bars.
        """
        scores = roar_scores(
            train_images,
            train_labels,
            train_maps,
            test_images,
            test_labels,
            test_maps,
            model_factory,
            self.settings,
            mean=self.mean,
            std=self.std,
            device=self.device,
            progress=progress,
        )
        self._accuracy, self._counts = dict(scores), (len(train_labels), len(test_labels))
        return scores

    def get_result(self) -> dict[str, Any]:
        """``accuracy`` (k -> test accuracy, int keys; a dump writes them as strings), ``mean_accuracy``
        over the ks > 0, ``baseline_accuracy`` (k = 0, None without), direction, settings, image counts.

        Raises:
            RuntimeError: :meth:`evaluate` was not called yet.
        """
        if self._accuracy is None:
            raise RuntimeError("metric 'roar': get_result() called before evaluate()")
        removed = [v for k, v in self._accuracy.items() if k > 0]
        return {
            "metric": self.name,
            "category": self.category,
            "higher_is_better": self.higher_is_better,
            "direction": "lower",
            "accuracy": dict(self._accuracy),
            "mean_accuracy": float(np.mean(removed)) if removed else None,
            "baseline_accuracy": self._accuracy.get(0),
            "n_train": self._counts[0],
            "n_test": self._counts[1],
            "settings": plain(dataclasses.asdict(self.settings)),
        }

    def dump(self, path: str | Path) -> Path:
        """Write :meth:`get_result` as JSON or YAML by suffix, atomically."""
        return dump_result(self.get_result(), path)
