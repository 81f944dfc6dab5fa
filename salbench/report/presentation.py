"""How results are presented: method labels and families, table columns, augmentation names.

The paper (Zhang et al., ACML 2024, Tables 1-4) shows fractions x100 with one decimal, and the
lower-is-better Average Drop and Deletion as bars (AD-bar = 100 - 100*AD, D-bar = 100 - 100*D), so
that every recognition column reads "higher is better". Monotonicity, Max-/Avg-Sensitivity are shown
raw with two decimals, Complexity (entropy) and Effective Complexity (a mean pixel count) raw with one
decimal, as in the published numbers (``configs/acml2024_tables.csv``).
"""

from __future__ import annotations

import dataclasses
import re

FAMILIES = ("Uninformed", "Gradient", "CAM", "Occlusion", "Learning", "Control", "Other")
CONTROL_FAMILIES = ("Uninformed", "Control")
"""Families of the model-free controls (Fake-CAM; random and edge maps)."""
LABEL_SETS = ("groundtruth", "predicted", "least")
LABEL_SET_SHORT = {"groundtruth": "GT", "predicted": "Pred", "least": "Least"}
LABEL_SET_LONG = {"groundtruth": "Ground truth", "predicted": "Predicted", "least": "Least likely"}
AUGMENTATIONS = ("mixup", "resize", "rotation", "crop", "cutmix")
AUGMENTATION_LABELS = {
    "mixup": "MixUp",
    "resize": "Resize",
    "rotation": "Rotation",
    "crop": "Crop",
    "cutmix": "CutMix",
}
NO_AUGMENTATION = "none"


@dataclasses.dataclass(frozen=True)
class MethodDisplay:
    """How one method id of ``results.csv`` appears in the tables.

    Attributes:
        method: id in ``results.csv`` (``gradient_smoothgrad``, ``gradcam``, ...).
        label: the paper's label (``Gradient``, ``Grad-CAM``, ...).
        family: row group (one of :data:`FAMILIES`).
        published: method id in the published tables, or None when the paper has no such row.
        compared: part of the method populations the claims rank (False for the controls and for the
            jacobgil-deprocessed gradients, which the paper's tables do not use).
    """

    method: str
    label: str
    family: str
    published: str | None = None
    compared: bool = True


def _gradient_rows() -> list[MethodDisplay]:
    # The paper's tables use the smoothgrad deprocessing; ids without a suffix are accepted as well.
    base = [
        ("gradient", "Gradient", "gradient"),
        ("integrated_gradients", "IG", "integrated_gradients"),
        ("guided_backprop", "GuidedBP", "guided_backprop"),
        ("smoothgrad", "SmoothGrad", None),
        ("input_x_gradient", "Input x Gradient", None),
    ]
    rows = []
    for method, label, published in base:
        rows.append(MethodDisplay(f"{method}_smoothgrad", label, "Gradient", published))
        rows.append(MethodDisplay(method, label, "Gradient", published))
    for method, label, _ in base:
        rows.append(MethodDisplay(f"{method}_jacobgil", f"{label} (jacobgil)", "Gradient", None, False))
    return rows


METHOD_DISPLAYS: tuple[MethodDisplay, ...] = (
    MethodDisplay("fakecam", "Fake-CAM", "Uninformed", "fakecam"),
    *_gradient_rows(),
    MethodDisplay("gradcam", "Grad-CAM", "CAM", "gradcam"),
    MethodDisplay("gradcampp", "Grad-CAM++", "CAM", "gradcampp"),
    MethodDisplay("scorecam", "Score-CAM", "CAM", "scorecam"),
    MethodDisplay("xgradcam", "XGrad-CAM", "CAM"),
    MethodDisplay("layercam", "Layer-CAM", "CAM"),
    MethodDisplay("ablationcam", "Ablation-CAM", "CAM"),
    MethodDisplay("eigengradcam", "EigenGrad-CAM", "CAM"),
    MethodDisplay("rise", "RISE", "Occlusion", "rise"),
    MethodDisplay("lime", "LIME", "Occlusion", "lime"),
    MethodDisplay("iba", "IBA", "Learning", "iba"),
    MethodDisplay("casme", "CASME", "Learning"),
    MethodDisplay("random", "Random", "Control", None, False),
    MethodDisplay("edge", "Edge", "Control", None, False),
)
_BY_ID = {d.method: d for d in METHOD_DISPLAYS}


def method_display(method: str, family: str | None = None) -> MethodDisplay:
    """The paper's display entry of ``method``; another id keeps its own name, in the ``family`` that
    ``results.csv`` records for it (``Other`` when none of :data:`FAMILIES`)."""
    known = _BY_ID.get(method)
    if known is not None:
        return known
    return MethodDisplay(method, method, family if family in FAMILIES else "Other")


def paper_methods(methods: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """Those of ``methods`` that are rows of the paper's tables (Figure 1's default), in its order."""
    return [
        m for m in method_order(methods) if method_display(m).published is not None and "_jacobgil" not in m
    ]


def method_order(
    methods: list[str] | tuple[str, ...] | set[str], families: dict[str, str] | None = None
) -> list[str]:
    """``methods`` in the paper's row order (families, then the paper's order within them)."""
    position = {d.method: i for i, d in enumerate(METHOD_DISPLAYS)}
    families = families or {}

    def key(m: str) -> tuple[int, int, str]:
        return (FAMILIES.index(method_display(m, families.get(m)).family), position.get(m, len(position)), m)

    return sorted(methods, key=key)


@dataclasses.dataclass(frozen=True)
class MetricColumn:
    """One presented metric column.

    Attributes:
        key: column id, as in the published CSV (``AI``, ``AD_bar``, ``MS``, ...).
        metric: metric id in ``results.csv``.
        header: Markdown header.
        latex: LaTeX header.
        scale: factor applied to the raw value (100 for fractions).
        bar: present ``100 - scale * value`` (turns a lower-is-better fraction into higher-is-better).
        decimals: decimals shown.
        higher_is_better: direction of the *raw* metric when ``results.csv`` does not state it.
    """

    key: str
    metric: str
    header: str
    latex: str
    scale: float = 1.0
    bar: bool = False
    decimals: int = 2
    higher_is_better: bool = True

    def present(self, raw: float) -> float:
        """Raw value (natural units) -> the number the paper prints (unrounded)."""
        value = raw * self.scale
        return 100.0 - value if self.bar else value

    def unpresent(self, shown: float) -> float:
        """Inverse of :meth:`present` (published number -> natural units)."""
        value = 100.0 - shown if self.bar else shown
        return value / self.scale

    def presented_higher_is_better(self, raw_higher_is_better: bool) -> bool:
        """Direction of the presented column: bars flip the raw direction."""
        return not raw_higher_is_better if self.bar else raw_higher_is_better


COLUMNS: dict[str, MetricColumn] = {
    c.key: c
    for c in (
        MetricColumn("AI", "average_increase", "AI", "AI", scale=100.0, decimals=1),
        MetricColumn(
            "AD_bar",
            "average_drop",
            "AD-bar",
            r"$\overline{\mathrm{AD}}$",
            scale=100.0,
            bar=True,
            decimals=1,
            higher_is_better=False,
        ),
        MetricColumn("AG", "average_gain", "AG", "AG", scale=100.0, decimals=1),
        MetricColumn("I", "insertion", "I", "I", scale=100.0, decimals=1),
        MetricColumn(
            "D_bar",
            "deletion",
            "D-bar",
            r"$\overline{\mathrm{D}}$",
            scale=100.0,
            bar=True,
            decimals=1,
            higher_is_better=False,
        ),
        MetricColumn("Monotonicity", "monotonicity", "Monotonicity", "Monotonicity"),
        MetricColumn("MS", "max_sensitivity", "MS", "MS", higher_is_better=False),
        MetricColumn("AS", "avg_sensitivity", "AS", "AS", higher_is_better=False),
        MetricColumn("Sparseness", "sparseness", "Sparseness", "Sparseness", scale=100.0, decimals=1),
        MetricColumn(
            "Complexity", "complexity", "Complexity", "Complexity", decimals=1, higher_is_better=False
        ),
        MetricColumn("EC", "effective_complexity", "EC", "EC", decimals=1, higher_is_better=False),
        MetricColumn("CG", "completeness_gap", "Compl. gap", "Compl.\\ gap", higher_is_better=False),
        MetricColumn("EPG", "energy_pointing_game", "EPG", "EPG", scale=100.0, decimals=1),
        MetricColumn("SPG", "pointing_game", "SPG", "SPG", scale=100.0, decimals=1),
        MetricColumn("LE", "localization_error", "LE", "LE", scale=100.0, decimals=1, higher_is_better=False),
        MetricColumn("OM", "official_metric", "OM", "OM", scale=100.0, decimals=1, higher_is_better=False),
        MetricColumn(
            "EPG_mask", "energy_pointing_game_mask", "EPG (mask)", "EPG (mask)", scale=100.0, decimals=1
        ),
        MetricColumn("SPG_mask", "pointing_game_mask", "SPG (mask)", "SPG (mask)", scale=100.0, decimals=1),
        MetricColumn("IoU_mask", "iou_mask", "IoU (mask)", "IoU (mask)", scale=100.0, decimals=1),
    )
}
RECOGNITION_KEYS = ("AI", "AD_bar", "AG", "I", "D_bar")
TABLE1_KEYS = (*RECOGNITION_KEYS, "Monotonicity")
TABLE3_KEYS = ("MS", "AS", "Sparseness", "Complexity", "EC")
SUPPLEMENT_KEYS = ("CG", "EPG", "SPG", "LE", "OM", "EPG_mask", "SPG_mask", "IoU_mask")


def natural_key(text: str) -> tuple[object, ...]:
    """Sort key that orders ``size64`` before ``size128`` (digits compared as numbers)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def augmentation_order(augmentations: set[str] | list[str]) -> list[str]:
    """The paper's order (MixUp, Resize, Rotation, Crop), then CutMix, then any other id."""
    known = [a for a in AUGMENTATIONS if a in augmentations]
    return known + sorted(a for a in augmentations if a not in AUGMENTATIONS and a != NO_AUGMENTATION)


def augmentation_label(augmentation: str) -> str:
    return AUGMENTATION_LABELS.get(augmentation, augmentation)
