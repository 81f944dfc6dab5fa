"""Metric protocol: metadata as class constants, per-image results, streaming update/summary.

Like Quantus' ``score_direction`` / ``evaluation_category`` and torchcam's ``ClassificationMetric``:
images whose map is NaN/inf or constant (where the metric is undefined on it) are skipped and
counted instead of poisoning the mean.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from salbench.registry import Registry


@dataclasses.dataclass(frozen=True)
class MetricParams:
    """Base of every metric's frozen parameter dataclass."""


@dataclasses.dataclass(frozen=True)
class Summary:
    """Aggregate of one metric over a set of images (values in natural units, not x100)."""

    metric: str
    value: float
    n_images: int
    n_skipped: int
    n_nan: int
    higher_is_better: bool
    category: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Metric:
    """Base class of all metrics.

    Class constants:
        name: registry / CSV id (``average_drop``, ``insertion``, ...).
        higher_is_better: score direction.
        category: ``recognition``, ``fidelity``, ``robustness``, ``complexity``, ``localization``.
        params_cls: frozen parameter dataclass.

    Streaming use: :meth:`update` with per-image values (NaN marks an image skipped for a stated
    reason, e.g. a constant map), then :meth:`summary`.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    category: ClassVar[str]
    params_cls: ClassVar[type[MetricParams]] = MetricParams

    def __init__(self, params: MetricParams | None = None) -> None:
        self.params = params if params is not None else self.params_cls()
        self.reset()

    def reset(self) -> None:
        self._values: list[float] = []
        self._n_skipped = 0
        self._n_nan = 0

    def update(self, values: np.ndarray | list[float], skipped: int = 0) -> None:
        """Add per-image values; NaN entries count as NaN (not averaged), ``skipped`` as skipped."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = np.isfinite(arr)
        self._n_nan += int((~finite).sum())
        self._values.extend(arr[finite].tolist())
        self._n_skipped += int(skipped)

    def summary(self) -> Summary:
        """Mean over the finite per-image values; raises if nothing was ever added."""
        if not self._values and not self._n_nan and not self._n_skipped:
            raise RuntimeError(f"metric {self.name!r}: summary() called before any update()")
        value = float(np.mean(self._values)) if self._values else math.nan
        return Summary(
            metric=self.name,
            value=value,
            n_images=len(self._values),
            n_skipped=self._n_skipped,
            n_nan=self._n_nan,
            higher_is_better=self.higher_is_better,
            category=self.category,
        )


METRICS: Registry[type[Metric]] = Registry("metric")
