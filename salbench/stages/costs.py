"""The model passes a run needs, per stage and per method x metric group (``salbench plan --costs``).

Counting convention: the one of :func:`salbench.scoped.count_passes`, which generation records in every
map store (``last_run``: ``forward_rows``, ``backward_rows``) and prints as "model passes/image" (their
sum): a *forward* is one input row through the model's forward, a *backward* one row of gradient
reaching the model's output. Partial forwards that stop at a layer (IBA's feature statistics, the
target-layer probes) are not passes. Costs are compared in *forward-equivalents*,
``forward + 2 x backward`` (:data:`BACKWARD_COST`: a backward computes the gradients of every layer's
input and weights, about two forwards); the time estimate does not rely on that rule, it measures
forward and forward+backward on the device (:mod:`salbench.stages.calibration`).

Each formula mirrors the code it counts (named in its docstring); ``tests/test_plan_costs.py`` checks
them against :func:`~salbench.scoped.count_passes` on a real run of the tests' tiny workspace.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from salbench.config import Config
from salbench.data.augmentations import study_variants
from salbench.errors import ConfigError, NotApplicableError
from salbench.methods import METHODS, MethodParams, build_params
from salbench.methods.baselines import EdgeMap, FakeCAM, RandomMap
from salbench.methods.cams import AblationCAMMethod, LibraryCAM, ScoreCAMMethod
from salbench.methods.casme import Casme
from salbench.methods.gradients import GradientFamilyMethod, IntegratedGradients, SmoothGrad
from salbench.methods.iba import Iba
from salbench.methods.lime import Lime
from salbench.methods.rise import Rise
from salbench.metrics import MetricParams
from salbench.metrics.fidelity import default_features_in_step
from salbench.metrics.perturbation import default_step, n_steps
from salbench.stages.augmented import DEFAULTS as AUGMENT_DEFAULTS
from salbench.stages.kinds import KINDS, Kind
from salbench.stages.pipeline import Step, steps

BACKWARD_COST = 2
"""Forward-equivalents of one backward row."""
SHARED = "(shared)"
"""Method column of the map-independent passes shared by every method of a label set."""
ALL = "(all)"
"""Method column of a row that is not one method's."""


@dataclasses.dataclass(frozen=True)
class Passes:
    """Model passes (rows) of one explained image: ``forward`` rows through the model's forward,
    ``backward`` rows of gradient reaching its output."""

    forward: int = 0
    backward: int = 0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.forward + other.forward, self.backward + other.backward)

    def times(self, k: int) -> Passes:
        return Passes(self.forward * k, self.backward * k)

    @property
    def total(self) -> int:
        """Forward + backward rows: what generation prints as "model passes/image"."""
        return self.forward + self.backward

    @property
    def equivalents(self) -> int:
        """Forward-equivalents: ``forward + BACKWARD_COST x backward``."""
        return self.forward + BACKWARD_COST * self.backward


@dataclasses.dataclass(frozen=True)
class Shape:
    """What the counts read of the model and its input.

    Attributes:
        size: input ``(H, W)`` the model sees.
        channels: input channels.
        layer_channels: channels of the target layer's grid (Score-CAM and Ablation-CAM make one pass
            per channel), None when the model has no layer with a spatial grid.
        no_layer: why there is none (the layer-based methods do not apply).
    """

    size: tuple[int, int]
    channels: int = 3
    layer_channels: int | None = None
    no_layer: str = ""


def method_passes(method_id: str, params: MethodParams, shape: Shape) -> Passes:
    """Passes per image of ``method_id`` with ``params`` (one explanation of one image).

    Raises:
        NotApplicableError: a layer-based method on a model without a grid layer.
        ConfigError: a method without a formula here.
    """
    cls = METHODS.get(method_id)
    p: Any = params
    if issubclass(cls, IntegratedGradients):  # n_steps path points, each a forward and a backward
        return Passes(p.n_steps, p.n_steps)
    if issubclass(cls, SmoothGrad):  # n_samples noisy copies, each a forward and a backward
        return Passes(p.n_samples, p.n_samples)
    if issubclass(cls, GradientFamilyMethod):  # input_gradients: one forward, one backward
        return Passes(1, 1)
    if issubclass(cls, LibraryCAM | Iba) and shape.layer_channels is None:
        raise NotApplicableError(f"{method_id} does not apply: {shape.no_layer}")
    k = shape.layer_channels or 0
    if issubclass(cls, ScoreCAMMethod):  # BaseCAM's forward, then one masked input per channel
        return Passes(1 + k)
    if issubclass(cls, AblationCAMMethod):
        # BaseCAM's forward, AblationCAM.get_cam_weights' forward, then one row per ablated channel:
        # all of them at ratio 1, else the int(ratio K) highest and lowest scored ones
        ablated = k if p.ratio_channels_to_ablate == 1.0 else 2 * int(k * p.ratio_channels_to_ablate)
        return Passes(2 + ablated)
    if issubclass(cls, LibraryCAM):  # gradient CAMs: one forward, backward of the target logits
        return Passes(1, 1)
    if issubclass(cls, Iba):  # steps x n_noise rows, each optimisation step a forward and a backward
        return Passes(p.steps * p.n_noise, p.steps * p.n_noise)
    if issubclass(cls, Rise):  # one masked image per mask
        return Passes(p.n_masks)
    if issubclass(cls, Lime):  # one perturbed image per sample (the original included when asked)
        return Passes(p.n_samples)
    if issubclass(cls, FakeCAM | RandomMap | EdgeMap | Casme):  # no pass (CASME: its own masker)
        return Passes()
    raise ConfigError(f"no pass count for method {method_id!r} ({cls.__name__}): add it to {__name__}")


def recognition_passes(params: Any, size: tuple[int, int]) -> tuple[Passes, Passes]:
    """``(per method, shared)`` passes per image of the recognition group
    (:func:`~salbench.metrics.recognition.recognition_scores`): the masked image and the two curve
    interiors (``n_steps - 1`` each) per method; the three map-independent curve ends (original,
    blurred, fully deleted) once per image and label set, shared by the methods through the cache."""
    h, w = size
    steps_ = n_steps(h, w, default_step(h, w) if params.step is None else params.step)
    return Passes(1 + 2 * (steps_ - 1)), Passes(3)


def monotonicity_passes(params: Any, shape: Shape) -> Passes:
    """:func:`~salbench.metrics.fidelity.monotonicity`: ``groups x nr_samples`` perturbed images and
    the image itself."""
    h, w = shape.size
    step = params.features_in_step
    step = default_features_in_step(h, w, shape.channels, params.grouping) if step is None else step
    entries = (shape.channels if params.grouping == "entries" else 1) * h * w
    return Passes(math.ceil(entries / step) * params.nr_samples + 1)


def sensitivity_passes(params: Any, method: Passes) -> Passes:
    """:func:`~salbench.metrics.robustness.sensitivity_ratios`: ``nr_samples`` noisy copies, each
    re-explained by plain gradients (``explainer: gradient``, one forward and one backward) or by the
    method under test (``explainer: method``, its own passes)."""
    explain = Passes(1, 1) if params.explainer == "gradient" else method
    return explain.times(params.nr_samples)


def _per_method_sensitivity(params: Any, method: Passes) -> Passes:
    """Per method: none with plain gradients (their noisy copies are explained once per image for every
    method, :data:`SHARED`), the method's own re-explanations otherwise."""
    return Passes() if params.explainer == "gradient" else sensitivity_passes(params, method)


SHARED_PER_IMAGE = {
    "monotonicity": (1, "f(x), once per image"),
    "completeness": (2, "f(x) and f(black), once per image"),
}
"""Map-independent passes of a group computed once per image for every method (through the cache)."""


def group_passes(group: str, params: MetricParams, shape: Shape, method: Passes) -> Passes:
    """Passes per image and method of metric group ``group`` (``method``: the method's own passes, for
    the re-explaining sensitivity); the shared passes of the recognition group are not included.

    Raises:
        ConfigError: a group that runs the model without a formula here.
    """
    p: Any = params
    if group == "recognition":
        return recognition_passes(p, shape.size)[0]
    if group == "monotonicity":  # f(x) once per image for every method: shared_passes
        return monotonicity_passes(p, shape) + Passes(-1)
    if group == "sensitivity":
        return _per_method_sensitivity(p, method)
    if group == "completeness":  # the image and its black baseline, once per image: shared_passes
        return Passes()
    if group in ("complexity", "localization"):  # the maps alone
        return Passes()
    raise ConfigError(f"no pass count for metric group {group!r}: add it to {__name__}")


@dataclasses.dataclass(frozen=True)
class CostRow:
    """Passes of one (stage, method, metric group).

    Attributes:
        stage: the pipeline step's title.
        method: map store id, :data:`SHARED` or :data:`ALL`.
        group: ``generation``, ``diagnostics`` or a metric group.
        units: explained images: images x label sets (x variants).
        passes: per unit.
        scale: time of a pass relative to one at the run's input size (resized variants: pixel ratio).
        note: e.g. why a method is not applicable.
    """

    stage: str
    method: str
    group: str
    units: int
    passes: Passes
    scale: float = 1.0
    note: str = ""

    @property
    def total(self) -> Passes:
        return self.passes.times(self.units)


@dataclasses.dataclass(frozen=True)
class _ConfigOnly:
    """What :meth:`Kind.params` reads of a workspace: its config."""

    cfg: Config


def kind_params(kind: Kind, cfg: Config) -> tuple[MetricParams, ...]:
    """Each group run's parameters as the evaluation stage resolves them (:meth:`Kind.params`)."""
    return kind.params(_ConfigOnly(cfg))  # type: ignore[arg-type]


def step_label_sets(cfg: Config, step: Step) -> tuple[str, ...]:
    """The label sets a pipeline step runs on: ground truth where it says ``--label-set groundtruth``."""
    argv = step.argv
    fixed = argv[argv.index("--label-set") + 1] if "--label-set" in argv else None
    return (fixed,) if fixed else tuple(cfg.run.label_sets)


def step_methods(cfg: Config, step: Step) -> list[tuple[str, dict[str, Any]]]:
    """``(method id, parameter overrides)`` of a pipeline generation step (``--method``, ``--deprocess``)."""
    argv = step.argv
    methods = list(argv[argv.index("--method") + 1 :]) if "--method" in argv else step.options["methods"]
    deprocess = argv[argv.index("--deprocess") + 1] if "--deprocess" in argv else None
    out = []
    for method in methods:
        fields = {f.name for f in dataclasses.fields(METHODS.get(method).params_cls)}
        out.append((method, {"deprocess": deprocess} if deprocess and "deprocess" in fields else {}))
    return out


def method_params(cfg: Config, method: str, overrides: Mapping[str, Any] | None = None) -> MethodParams:
    """``method``'s parameters as :meth:`Workspace.method` resolves them (preset < config < overrides)."""
    values = {**cfg.method_params(method), **(overrides or {})}
    return build_params(METHODS.get(method).params_cls, values, method)


def store_id(method: str, params: MethodParams) -> str:
    """The map store id of ``method`` with ``params`` (:attr:`SaliencyMethod.store_id`)."""
    deprocess = getattr(params, "deprocess", None)
    return (
        f"{method}_{deprocess}"
        if deprocess and issubclass(METHODS.get(method), GradientFamilyMethod)
        else method
    )


@dataclasses.dataclass
class _Plan:
    """The rows so far, and each label set's map stores with their method's passes (for evaluation)."""

    cfg: Config
    shape: Shape
    n: int
    rows: list[CostRow] = dataclasses.field(default_factory=list)
    stores: dict[str, dict[str, Passes]] = dataclasses.field(default_factory=dict)


def cost_rows(
    cfg: Config,
    shape: Shape,
    n_images: int,
    casme_checkpoint: str | None = None,
    augment_label_sets: tuple[str, ...] = ("groundtruth",),
) -> list[CostRow]:
    """Every pass of ``salbench run`` on ``n_images`` images from scratch, as rows.

    Args:
        cfg: the resolved config.
        shape: the model's input and target layer (:func:`salbench.stages.calibration.plan_model`).
        n_images: images explained.
        casme_checkpoint: as for ``salbench run`` (non-embedded data runs CASME only with one).
        augment_label_sets: label sets of the augmented stage (ground truth unless ``--label-set``).
    """
    plan = _Plan(cfg, shape, n_images)
    handlers: dict[str, Callable[[_Plan, Step], None]] = {
        "diagnostics": _diagnostics,
        "generate": _generation,
        "evaluate": _evaluation,
    }
    for step in steps(cfg.data.kind, casme_checkpoint):
        if step.command in handlers:
            handlers[step.command](plan, step)
        elif step.command == "augment":
            _augmented(plan, step, augment_label_sets)
    return plan.rows


def _diagnostics(plan: _Plan, step: Step) -> None:
    if "--model" not in step.argv:  # another model's diagnostics (the embedded VGG) is not this model's
        plan.rows.append(CostRow(step.title, ALL, "diagnostics", plan.n, Passes(1)))


def _generation(plan: _Plan, step: Step) -> None:
    label_sets = step_label_sets(plan.cfg, step)
    for method, overrides in step_methods(plan.cfg, step):
        params = method_params(plan.cfg, method, overrides)
        sid = store_id(method, params)
        try:
            passes = method_passes(method, params, plan.shape)
        except NotApplicableError as exc:  # generation records it as not applicable: no store, no evaluation
            plan.rows.append(CostRow(step.title, sid, "generation", 0, Passes(), note=str(exc)))
            continue
        note = "its masker is no pass of the model" if issubclass(METHODS.get(method), Casme) else ""
        plan.rows.append(CostRow(step.title, sid, "generation", plan.n * len(label_sets), passes, note=note))
        for label_set in label_sets:
            plan.stores.setdefault(label_set, {})[sid] = passes


def _evaluation(plan: _Plan, step: Step) -> None:
    kind = KINDS[step.options["kind"]]
    stores = {ls: plan.stores.get(ls, {}) for ls in step_label_sets(plan.cfg, step)}
    plan.rows += evaluation_rows(step.title, kind, kind_params(kind, plan.cfg), stores, plan.shape, plan.n)


def evaluation_rows(
    title: str,
    kind: Kind,
    params: tuple[MetricParams, ...],
    stores: Mapping[str, Mapping[str, Passes]],
    shape: Shape,
    n: int,
    scale: float = 1.0,
) -> list[CostRow]:
    """Rows of one evaluation kind over ``stores`` (label set -> store id -> the method's passes)."""
    rows: list[CostRow] = []
    ids = list(dict.fromkeys(s for per in stores.values() for s in per))
    for run, p in zip(kind.runs, params):
        group = run.group.name + run.suffix
        if group == "recognition" and any(stores.values()):
            used = sum(1 for per in stores.values() if per)
            shared = recognition_passes(p, shape.size)[1]
            rows.append(CostRow(title, SHARED, group, n * used, shared, scale, "curve ends, once per image"))
        if (
            run.group.name == "sensitivity"
            and getattr(p, "explainer", "") == "gradient"
            and any(stores.values())
        ):
            used = sum(1 for per in stores.values() if per)
            shared = sensitivity_passes(p, Passes())
            rows.append(
                CostRow(title, SHARED, group, n * used, shared, scale, "noisy copies, once per image")
            )
        if run.group.name in SHARED_PER_IMAGE and any(stores.values()):
            used = sum(1 for per in stores.values() if per)
            k, note = SHARED_PER_IMAGE[run.group.name]
            rows.append(CostRow(title, SHARED, group, n * used, Passes(k), scale, note))
        counted = []
        for sid in ids:
            holding = [per[sid] for per in stores.values() if sid in per]
            counted.append((sid, group_passes(run.group.name, p, shape, holding[0]), len(holding)))
        if counted and all(c[1] == Passes() for c in counted):
            rows.append(CostRow(title, ALL, group, n * sum(c[2] for c in counted), Passes(), scale))
            continue
        rows += [CostRow(title, sid, group, n * k, passes, scale) for sid, passes, k in counted]
    return rows


def _augmented(plan: _Plan, step: Step, label_sets: tuple[str, ...]) -> None:
    """Per variant: diagnostics on the transformed images, then maps (``step generate``) or recognition
    (``step evaluate``); a resized variant's passes are timed at its pixel count."""
    opts = {**AUGMENT_DEFAULTS, **plan.cfg.augmentations}
    n = plan.n if opts["n_images"] <= 0 else min(opts["n_images"], plan.n)
    side = plan.shape.size[0]
    chosen = [
        v
        for v in study_variants(side)
        if not opts["augmentations"] or v.augmentation in opts["augmentations"]
    ]
    for variant in chosen:
        vside = int(variant.seed_or_param) if variant.augmentation == "resize" else side
        shape = dataclasses.replace(plan.shape, size=(vside, vside))
        scale = (vside / side) ** 2
        title = f"{step.title} ({variant.augmentation})"
        if step.options["step"] == "generate":
            plan.rows.append(CostRow(title, ALL, "diagnostics", n, Passes(1), scale))
        stores: dict[str, dict[str, Passes]] = {ls: {} for ls in label_sets}
        for method in opts["methods"]:
            params = method_params(plan.cfg, method)
            sid = store_id(method, params)
            try:
                passes = method_passes(method, params, shape)
            except NotApplicableError:
                continue
            for ls in label_sets:
                stores[ls][sid] = passes
            if step.options["step"] == "generate":
                plan.rows.append(CostRow(title, sid, "generation", n * len(label_sets), passes, scale))
        if step.options["step"] == "evaluate":
            kind = KINDS["recognition"]
            plan.rows += evaluation_rows(title, kind, kind_params(kind, plan.cfg), stores, shape, n, scale)
