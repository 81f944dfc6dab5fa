"""The metric protocol: declared metrics, the groups that compute them, and the one verb :func:`compute`.

* A **metric** is a declaration (:class:`MetricDef`): its stable id, score direction, category, display
  name and definition (with its paper), like Quantus' ``score_direction`` / ``evaluation_category``.
  Directions, categories and display names live here and nowhere else; results rows carry them.
* Metrics that share model passes form a **group** (:class:`MetricGroup`): the group names its metrics,
  its frozen parameter dataclass (one ``metrics.<section>`` of the config) and its batched compute
  function ``(MetricInputs, params, wanted) -> per-image arrays``. Insertion and deletion share their
  curve ends with AD/AI/AG, Max- and Avg-Sensitivity share the re-explained noisy inputs, and so on.
* :func:`compute` is the one verb: the evaluation stages, the library API and the benchmarks all call
  it, for any group, with the inputs of one batch (:class:`MetricInputs`).
* :class:`Metric` streams per-image values into a :class:`Summary` (mean over finite values; images
  skipped or with NaN values counted, never averaged), as torchcam's ``ClassificationMetric`` does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import nn

from salbench.config import IMAGENET_MEAN, IMAGENET_STD, build_dataclass
from salbench.errors import ConfigError
from salbench.registry import Registry

Scores = dict[str, np.ndarray]
"""Per-image outputs of a group: metric id -> (N,) float64, ``skipped`` -> (N,) bool, further outputs."""
TieRule = Literal["strict", "tolerant"]
TIE_RULES: tuple[str, ...] = get_args(TieRule)
"""How an indicator ``1[O > Y]`` decides a near tie (:func:`increase_indicator`)."""
DEFAULT_TIE_TOLERANCE = 1e-5
"""Relative difference of two probabilities below which they are a near tie. Two float32 evaluations of
the same probability in another batch layout or thread count differ by ~1e-7..1e-6 relative (observed
<= 4e-7 on the embedded ResNet); 1e-5 keeps a factor 10 above that. Raise it where the model runs in
reduced precision (TF32 or float16 convolutions move probabilities by ~1e-3 relative)."""

TIE_TOLERANCE_FLOOR: dict[str, float] = {"fp32": 0.0, "bf16": 2.0**-7, "fp16": 2.0**-10}
"""Least near-tie tolerance under each pass precision (``run.precision``): twice the unit roundoff
(bf16 2**-8, fp16 2**-11). Probabilities of the trained embedded ResNet from bf16 passes differ from their
float32 values by 6.5e-3 relative (median; max 2.5e-2), from fp16 passes by 7.5e-4 (max 3.8e-3): two
probabilities closer than that are ordered by the rounding of the passes, not by the model."""


@dataclasses.dataclass(frozen=True)
class MetricParams:
    """Base of every group's frozen parameter dataclass.

    ``tie_tolerances`` names the fields that are near-tie tolerances of an indicator (``ai_tolerance``):
    :meth:`at_precision` raises them to the pass precision's floor.
    """

    tie_tolerances: ClassVar[tuple[str, ...]] = ()

    def at_precision(self, precision: str) -> MetricParams:
        """These parameters with every tie tolerance at least :data:`TIE_TOLERANCE_FLOOR` of ``precision``."""
        floor = TIE_TOLERANCE_FLOOR[precision]
        raised = {f: floor for f in self.tie_tolerances if getattr(self, f) < floor}
        return dataclasses.replace(self, **raised) if raised else self


@dataclasses.dataclass(frozen=True)
class MetricDef:
    """One registered metric.

    Attributes:
        name: registry / CSV id (``average_drop``, ``insertion``, ...); never changes once results exist.
        group: the :class:`MetricGroup` that computes it.
        higher_is_better: score direction.
        category: ``recognition``, ``fidelity``, ``robustness``, ``complexity``, ``localization``.
        display: short name for tables and figures (``AD``, ``Insertion``, ...).
        doc: the definition, with the paper and equation it follows and any deviation.
        requires: inputs besides images, maps and targets it cannot do without (``boxes``, ``masks``,
            ``correct``).
        outputs: further per-image outputs the library API returns: output name -> group score key.
    """

    name: str
    group: str
    higher_is_better: bool
    category: str
    display: str
    doc: str
    requires: tuple[str, ...] = ()
    outputs: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def params_cls(self) -> type[MetricParams]:
        """The parameter dataclass of its group."""
        return GROUPS.get(self.group).params_cls


@dataclasses.dataclass(frozen=True)
class MetricInputs:
    """Everything a group may read for one batch of images and one method's maps.

    Attributes:
        maps: (N,H,W) saliency maps (Gomez et al.'s metrics also accept coarser maps).
        images: (N,C,H,W) normalised images (None for maps-only groups).
        targets: (N,) long target classes (None for maps-only groups).
        model: classifier returning logits (None for maps-only groups).
        mean: per-channel normalisation mean of the images.
        std: per-channel normalisation std.
        base_probs: (N,) stage-1 probabilities Y of the targets (None: computed where needed).
        boxes: per image a (K,4) array of ``x0, y0, x1, y1`` boxes.
        masks: (N,H,W) bool object masks.
        correct: (N,) bool, the image is classified correctly.
        ids: (N,) hashable image ids (keys of ``cache``).
        cache: map-independent passes shared by every method of the same images
            (:class:`~salbench.metrics.recognition.StartCache`).
        generator: ``generator(key)`` -> the generator of one random draw (``"monotonicity"``,
            ``"sensitivity"``), or None for torch's global RNG.
        explain: re-explains perturbed inputs for the sensitivity metrics (None: the group's
            ``explainer`` parameter decides).
        baseline: monotonicity's replacement values (None: its uniform noise).
        baselines: completeness' (N,C,H,W) baseline images (None: black images).
        perturb: sensitivity's noise (None: its uniform noise).
        counter: a :class:`~salbench.metrics.engine.ForwardCounter` of the model work, or None.
    """

    maps: torch.Tensor
    images: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    model: nn.Module | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    base_probs: torch.Tensor | np.ndarray | None = None
    boxes: Sequence[np.ndarray] | None = None
    masks: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    ids: Sequence[Hashable] | None = None
    cache: Any = None
    generator: Callable[[str], torch.Generator | None] = lambda key: None
    explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    baseline: Any = None
    baselines: torch.Tensor | None = None
    perturb: Any = None
    counter: Any = None


@dataclasses.dataclass(frozen=True)
class MetricGroup:
    """Metrics computed together by one batched function that shares their model passes.

    Attributes:
        name: group id.
        section: the config section of its parameters (``metrics.<section>``); groups may share one.
        params_cls: frozen parameter dataclass.
        function: ``function(inputs, params, wanted) -> Scores``; ``wanted`` is the set of metric ids
            asked for (it may skip the passes of the others).
        needs_model: it re-runs the model (images, targets and a model are required).
        accepts: optional :class:`MetricInputs` fields it reads.
        aux: per-image outputs written beside the metrics (e.g. ``base_prob``, ``masked_prob``).
        arrays: per-image arrays kept beside them: saved name -> score key (e.g. the curves).
        ties: indicator metric id -> the ``aux`` output flagging its near ties per image (counted in
            ``results.csv`` as ``n_ties``).
    """

    name: str
    section: str
    params_cls: type[MetricParams]
    function: Callable[[MetricInputs, Any, frozenset[str]], Scores]
    needs_model: bool = True
    accepts: tuple[str, ...] = ()
    aux: tuple[str, ...] = ()
    arrays: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ties: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Ids of its registered metrics, in registration order."""
        return tuple(m for m in METRICS.names() if METRICS.get(m).group == self.name)

    def params(self, values: Mapping[str, Any], where: str = "") -> MetricParams:
        """Its parameters from ``values`` (unknown keys and bad choices rejected by name)."""
        return build_dataclass(self.params_cls, values, where or f"metric group {self.name!r}")


METRICS: Registry[MetricDef] = Registry("metric")
GROUPS: Registry[MetricGroup] = Registry("metric group")


def register(group: MetricGroup, *metrics: MetricDef) -> MetricGroup:
    """Register ``group`` and its ``metrics`` (in their table order); returns the group."""
    GROUPS.register(group.name)(group)
    for m in metrics:
        if m.group != group.name:
            raise ValueError(f"metric {m.name!r} declares group {m.group!r}, registered with {group.name!r}")
        METRICS.register(m.name)(m)
    return group


def compute(
    group: MetricGroup | str, inputs: MetricInputs, params: MetricParams, wanted: Sequence[str] | None = None
) -> Scores:
    """The one metric verb: per-image scores of ``group``'s metrics (``wanted``: a subset) for one batch.

    Args:
        group: a registered group or its id.
        inputs: the batch (images, maps, targets, model, and whatever the group reads).
        params: an instance of the group's ``params_cls``.
        wanted: metric ids to compute (default: all of the group's).

    Returns:
        Metric id -> (N,) float64 values (NaN where undefined), ``skipped`` (N,) bool where the group
        skips images, and the group's ``aux`` outputs and arrays.

    Raises:
        ConfigError: parameters of another group, an unknown metric, or a missing model.
    """
    g = GROUPS.get(group) if isinstance(group, str) else group
    if not isinstance(params, g.params_cls):
        raise ConfigError(f"metric group {g.name!r}: params must be {g.params_cls.__name__}")
    chosen = frozenset(g.metrics if wanted is None else wanted)
    unknown = sorted(chosen - set(g.metrics))
    if unknown:
        raise ConfigError(f"metric group {g.name!r} does not compute {unknown[0]!r}")
    if g.needs_model and (inputs.model is None or inputs.images is None or inputs.targets is None):
        raise ConfigError(f"metric group {g.name!r} re-runs the model: it needs model, images and targets")
    return g.function(inputs, params, chosen)


def near_ties(base: Any, new: Any, tolerance: float = DEFAULT_TIE_TOLERANCE) -> np.ndarray:
    """Per-image near-tie flags ``|O - Y| <= tolerance * max(|O|, |Y|)`` as float 0/1; NaN where Y or O is."""
    base, new = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    tie = np.abs(new - base) <= tolerance * np.maximum(np.abs(new), np.abs(base))
    return np.where(np.isnan(base) | np.isnan(new), np.nan, tie.astype(np.float64))


def check_tie_rule(tolerance: float, rule: str, names: tuple[str, str] = ("tolerance", "rule")) -> None:
    """Raise a :class:`ConfigError` naming the parameter for a negative tolerance or an unknown rule."""
    if rule not in TIE_RULES:
        raise ConfigError(f"{names[1]}: {rule!r} is not one of {', '.join(TIE_RULES)}")
    if not tolerance >= 0:
        raise ConfigError(f"{names[0]}: must be >= 0, got {tolerance!r}")


def increase_indicator(
    base: Any, new: Any, tolerance: float = DEFAULT_TIE_TOLERANCE, rule: TieRule = "strict"
) -> np.ndarray:
    """Per-image ``1[O > Y]`` as float (NaN where Y or O is NaN), near ties decided by ``rule``.

    ``strict`` compares the two floats as they are (the study's rule: a near tie, e.g. a map that
    changes one pixel, is decided by rounding noise and flips with the batch layout); ``tolerant``
    counts a near tie (:func:`near_ties`) as no increase, so the batch layout cannot decide it.

    Raises:
        ConfigError: a negative tolerance or an unknown rule.
    """
    check_tie_rule(tolerance, rule)
    base, new = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    up = new > base
    if rule == "tolerant":
        up &= near_ties(base, new, tolerance) == 0.0
    return np.where(np.isnan(base) | np.isnan(new), np.nan, up.astype(np.float64))


def to_numpy(values: Any) -> np.ndarray:
    """A tensor or array-like as a numpy array (on the CPU)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


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


def finite_mean(values: np.ndarray) -> tuple[float, int, int]:
    """``(mean of the finite values, their count, count of the others)``; NaN mean when none is finite."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = np.isfinite(arr)
    value = float(arr[finite].mean()) if finite.any() else math.nan
    return value, int(finite.sum()), int((~finite).sum())


class Metric:
    """Streaming aggregate of one registered metric with its group's parameters.

    :meth:`update` with per-image values (NaN marks an undefined value, ``skipped`` counts images the
    metric could not score), then :meth:`summary`.

    Args:
        definition: the registered :class:`MetricDef` (or its id).
        params: its group's parameters (default: the group's defaults).
    """

    def __init__(self, definition: MetricDef | str, params: MetricParams | None = None) -> None:
        self.definition = METRICS.get(definition) if isinstance(definition, str) else definition
        self.params = params if params is not None else self.definition.params_cls()
        self.reset()

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def higher_is_better(self) -> bool:
        return self.definition.higher_is_better

    @property
    def category(self) -> str:
        return self.definition.category

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
        value, n, _ = finite_mean(np.asarray(self._values))
        return Summary(
            metric=self.name,
            value=value,
            n_images=n,
            n_skipped=self._n_skipped,
            n_nan=self._n_nan,
            higher_is_better=self.higher_is_better,
            category=self.category,
        )
