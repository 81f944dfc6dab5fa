"""Re-inference metrics: one registered metric + model + normalisation, per sample or per batch, streaming.

The shape of ``saliency_metrics``' ``ReInferenceMetric`` (``evaluate`` one sample, ``update``,
``get_result``, ``dump``) and of torchcam's ``ClassificationMetric`` (``update`` per batch, ``summary``),
computed by the metric's group through :func:`salbench.metrics.compute`, the verb the stages use.

Skipping: an image is *skipped* (counted, reported, never averaged) when its map has a NaN/inf value,
when the metric itself skips it (recognition: non-finite maps; Gomez: non-finite or constant maps), or
when its map is constant and the metric is undefined on it (NaN value: monotonicity, localization).
Any other NaN value (e.g. a correlation over a constant probability curve) is counted in ``n_nan``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from salbench.api.results import dump_result, plain
from salbench.config import IMAGENET_MEAN, IMAGENET_STD
from salbench.errors import ConfigError, DataError
from salbench.metrics.base import GROUPS, Metric, MetricInputs, Summary, compute

Result = dict[str, Any]


def _image(v: Any) -> torch.Tensor:
    t = torch.as_tensor(v)
    return t if t.ndim == 4 else t.unsqueeze(0)


PER_IMAGE: dict[str, Any] = {
    "base_probs": lambda v: torch.as_tensor([float(v)], dtype=torch.float64),
    "boxes": lambda v: [v],
    "masks": lambda v: torch.as_tensor(v).unsqueeze(0),
    "correct": lambda v: torch.as_tensor([bool(v)]),
    "baselines": _image,
}
"""One image's extra -> a batch of one (extras not listed, e.g. ``generator``, pass unchanged)."""


def _model_device(model: nn.Module | None) -> torch.device:
    if model is None:
        return torch.device("cpu")
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _tensor(value: Any, name: str) -> torch.Tensor:
    if value is None:
        raise DataError(f"{name}: required by this metric, got None")
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != len(std) or not mean:
        raise ConfigError(f"mean/std: need the same number of channels, got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"std: every value must be positive, got {std}")
    return mean, std


class ReInferenceMetric:
    """A registered metric evaluated with a model (or on maps alone), per sample or per batch.

    Build it with :func:`salbench.api.build_metric`. Inputs: normalised images (N,C,H,W), maps (N,h,w)
    (input resolution, except Gomez' metrics which accept coarser maps), targets (N,) class indices.

    Args:
        metric: a registered metric instance with its parameters (its streaming state is used here).
        model: classifier returning logits; None for maps-only metrics (complexity, localization).
        mean: per-channel normalisation mean of the images (default ImageNet's).
        std: per-channel normalisation std (default ImageNet's).
        device: where inputs are computed; default the model's device. A given device moves the model.
    """

    def __init__(
        self,
        metric: Metric,
        *,
        model: nn.Module | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.metric = metric
        self.group = GROUPS.get(metric.definition.group)
        if self.group.needs_model and model is None:
            raise ConfigError(f"model: metric {metric.name!r} re-runs the model; pass model=")
        mean, std = _check_stats(
            IMAGENET_MEAN if mean is None else mean, IMAGENET_STD if std is None else std
        )
        if device is not None and model is not None:
            model.to(device)
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.model, self.mean, self.std = model, mean, std
        self.reset()

    @property
    def name(self) -> str:
        return self.metric.name

    def reset(self) -> None:
        """Forget every update."""
        self.metric.reset()
        self._values: list[np.ndarray] = []
        self._skipped: list[np.ndarray] = []

    def _extras(self, extras: Mapping[str, Any]) -> dict[str, Any]:
        requires = self.metric.definition.requires
        allowed = tuple(dict.fromkeys((*self.group.accepts, *requires)))
        unknown = sorted(set(extras) - set(allowed))
        if unknown:
            takes = ", ".join(allowed) or "none"
            raise ConfigError(f"{unknown[0]}: not an argument of metric {self.name!r}; it takes {takes}")
        missing = [k for k in requires if extras.get(k) is None]
        if missing:
            raise ConfigError(f"{missing[0]}: metric {self.name!r} needs {missing[0]}=")
        return {k: v for k, v in extras.items() if v is not None}

    def evaluate_batch(self, images: Any, maps: Any, targets: Any, **extras: Any) -> dict[str, np.ndarray]:
        """Per-image results of one batch; no state change.

        Args:
            images: (N,C,H,W) normalised images (None allowed for maps-only metrics).
            maps: (N,h,w) saliency maps.
            targets: (N,) target classes (None allowed for maps-only metrics).
            **extras: the metric's further inputs, e.g. ``boxes`` (list of (K,4) per image), ``masks``
                (N,H,W), ``correct`` (N,), ``base_probs`` (N,), ``generator``, ``explain``.

        Returns:
            ``value`` (N,) float64 (NaN where skipped), ``skipped`` (N,) bool, and the metric's further
            per-image outputs (``base_prob``, ``masked_prob``, ``curve``, ...).
        """
        kwargs = self._extras(extras)
        m = _tensor(maps, "maps").to(self.device)
        if m.ndim != 3:
            raise DataError(f"maps: expected (N,h,w), got shape {tuple(m.shape)}")
        x = t = None
        if self.group.needs_model:
            x = _tensor(images, "images").to(self.device)
            t = _tensor(targets, "targets").to(device=self.device, dtype=torch.long)
            if not x.is_floating_point():
                raise DataError(f"images: expected normalised floating-point values, got {x.dtype}")
        if "generator" in kwargs:  # one generator drives every draw of the metric
            g = kwargs["generator"]
            kwargs["generator"] = lambda key: g
        inputs = MetricInputs(
            maps=m, images=x, targets=t, model=self.model, mean=self.mean, std=self.std, **kwargs
        )
        definition = self.metric.definition
        scores = compute(self.group, inputs, self.metric.params, wanted=(definition.name,))
        out = {"value": scores[definition.name]}
        if "skipped" in scores:
            out["skipped"] = scores["skipped"]
        out |= {k: scores[v] for k, v in definition.outputs.items() if v in scores}
        return _finalise(out, m)

    def evaluate(self, img: Any, smap: Any, target: int | None = None, **extras: Any) -> Result:
        """Result on one sample (``saliency_metrics``' per-sample ``evaluate``); no state change.

        Args:
            img: (C,H,W) or (1,C,H,W) normalised image (None for maps-only metrics).
            smap: (h,w) or (1,h,w) map.
            target: class index (None for maps-only metrics).
            **extras: as :meth:`evaluate_batch`, for this one image (``boxes`` (K,4), ``masks`` (H,W),
                ``correct`` bool, ``base_probs`` float, ...).

        Returns:
            ``{"value": float, "skipped": bool, ...}`` with the metric's further outputs as floats/lists.
        """
        m = _tensor(smap, "smap")
        if m.ndim == 2:
            m = m.unsqueeze(0)
        if m.ndim != 3 or m.shape[0] != 1:
            raise DataError(f"smap: expected (h,w) or (1,h,w), got shape {tuple(m.shape)}")
        x = None
        if img is not None:
            x = _tensor(img, "img")
            x = x.unsqueeze(0) if x.ndim == 3 else x
            if x.ndim != 4 or x.shape[0] != 1:
                raise DataError(f"img: expected (C,H,W) or (1,C,H,W), got shape {tuple(x.shape)}")
        t = None if target is None else torch.as_tensor([int(target)])
        batched = {k: PER_IMAGE.get(k, lambda v: v)(v) if v is not None else v for k, v in extras.items()}
        out = self.evaluate_batch(x, m, t, **batched)
        return {k: _item(v[0]) for k, v in out.items()}

    def update(self, result: Any, maps: Any = None, targets: Any = None, **extras: Any) -> Result:
        """Add results to the running summary.

        ``update(result)`` adds an :meth:`evaluate` or :meth:`evaluate_batch` result;
        ``update(images, maps, targets, **extras)`` evaluates a batch and adds it (torchcam style).

        Returns:
            The batch result that was added (as :meth:`evaluate_batch` or the given result).
        """
        if isinstance(result, Mapping):
            if maps is not None or targets is not None or extras:
                raise ConfigError("update: give either one result mapping or images, maps, targets")
            out = result
        else:
            out = self.evaluate_batch(result, maps, targets, **extras)
        values = np.atleast_1d(np.asarray(out["value"], dtype=np.float64))
        skipped = np.atleast_1d(np.asarray(out.get("skipped", False), dtype=bool))
        skipped = np.broadcast_to(skipped, values.shape)
        self.metric.update(values[~skipped], skipped=int(skipped.sum()))
        self._values.append(np.where(skipped, np.nan, values))
        self._skipped.append(skipped.copy())
        return dict(out)

    def summary(self) -> Summary:
        """Mean over the images added so far (torchcam's ``summary``); raises before any update."""
        return self.metric.summary()

    def get_result(self) -> Result:
        """The summary and per-image values as JSON/YAML-safe data (NaN -> None).

        Keys: ``metric``, ``category``, ``higher_is_better``, ``direction``, ``value`` (mean of the
        finite per-image values), ``n_images`` (finite values averaged), ``n_skipped``, ``n_nan``,
        ``params``, ``per_image`` (``value``, ``skipped`` lists in update order).

        Raises:
            RuntimeError: nothing was added yet.
        """
        if not self._values:
            raise RuntimeError(f"metric {self.name!r}: get_result() called before any update()")
        s = self.summary()
        return plain(
            {
                "metric": s.metric,
                "category": s.category,
                "higher_is_better": s.higher_is_better,
                "direction": "higher" if s.higher_is_better else "lower",
                "value": s.value,
                "n_images": s.n_images,
                "n_skipped": s.n_skipped,
                "n_nan": s.n_nan,
                "params": self.metric.params,
                "per_image": {
                    "value": np.concatenate(self._values),
                    "skipped": np.concatenate(self._skipped),
                },
            }
        )

    def dump(self, path: str | Path) -> Path:
        """Write :meth:`get_result` to ``path`` (``.json``, ``.yaml`` or ``.yml``), atomically."""
        return dump_result(self.get_result(), path)


def _finalise(scores: Mapping[str, Any], maps: torch.Tensor) -> dict[str, np.ndarray]:
    """Apply the module's skipping rule: NaN value and ``skipped`` True for every skipped image."""
    n = maps.shape[0]
    flat = maps.detach().reshape(n, -1)
    finite = torch.isfinite(flat).all(dim=1)
    safe = torch.where(finite.view(-1, 1), flat, torch.zeros_like(flat))
    constant = (safe.amax(dim=1) == safe.amin(dim=1)).cpu().numpy() if flat.shape[1] else np.ones(n, bool)
    value = np.asarray(scores["value"], dtype=np.float64).reshape(n)
    own = np.asarray(scores.get("skipped", np.zeros(n, bool)), dtype=bool).reshape(n)
    skipped = ~finite.cpu().numpy() | own | (constant & np.isnan(value))
    out = {"value": np.where(skipped, np.nan, value), "skipped": skipped}
    out |= {k: np.asarray(v) for k, v in scores.items() if k not in out}
    return out


def _item(value: np.ndarray) -> Any:
    """One image's entry as a Python scalar or list."""
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()
