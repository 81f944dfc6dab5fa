"""The study's headline claims (Zhang et al., ACML 2024, sections 5-6) checked on a run's own numbers.

Each check returns a :class:`ClaimResult`: holds True/False, or None where the run lacks the data
("not computed in this run"), with the evidence in words and the numbers behind it. Values are the
presented ones (x100, bars; :mod:`salbench.report.presentation`). Method populations are the compared
methods (:attr:`~salbench.report.presentation.MethodDisplay.compared`): the controls Random/Edge and
the jacobgil-deprocessed gradients, which the paper's tables do not contain, are left out.

The paper states the claims qualitatively; the thresholds that make them checkable are ours
(:class:`ClaimThresholds`) and are printed with each claim.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from salbench.report.presentation import COLUMNS, RECOGNITION_KEYS, augmentation_label, method_display
from salbench.report.results import presented, presented_higher_is_better
from salbench.report.tables import augmented_ids


@dataclasses.dataclass(frozen=True)
class ClaimThresholds:
    """Thresholds that turn the paper's qualitative claims into checks (presented units).

    Attributes:
        top_fraction: "among the best" = rank within the best ``ceil(n * top_fraction)`` methods.
        least_i_max: least-likely targets: I at most this (points).
        least_ag_max: least-likely targets: AG at most this (points).
        least_dbar_min: least-likely targets: D-bar at least this (points).
        cv_max: "near-equal": coefficient of variation (std / |mean|) below this ...
        trim: ... after dropping this many lowest and highest methods (the extremes).
        shift_min: "metrics shift": mean absolute change vs un-augmented above this (points).
    """

    top_fraction: float = 1.0 / 3.0
    least_i_max: float = 1.0
    least_ag_max: float = 1.0
    least_dbar_min: float = 99.0
    cv_max: float = 0.1
    trim: int = 1
    shift_min: float = 5.0


DEFAULT_THRESHOLDS = ClaimThresholds()


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """Outcome of one claim: ``holds`` is None when the run lacks the data to decide."""

    claim: str
    holds: bool | None
    evidence: str
    numbers: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not computed in this run"}[self.holds]


def _compared(data: pd.DataFrame) -> pd.DataFrame:
    """Rows of the methods the claims compare (a row mask, also right on an empty frame)."""
    return data.loc[np.array([method_display(m).compared for m in data.index], dtype=bool)]


def _oriented(frame: pd.DataFrame, key: str, values: pd.Series) -> pd.Series:
    """Values with larger = better."""
    return values if presented_higher_is_better(frame, key) else -values


def claim_fakecam_top(frame: pd.DataFrame, t: ClaimThresholds = DEFAULT_THRESHOLDS) -> ClaimResult:
    """Claim 1: Fake-CAM is among the best on AI and AD-bar but not on AG and I (ground truth)."""
    share = f"{t.top_fraction:.2g}"
    claim = (
        f"Fake-CAM ranks in the best {share} of methods on AI and AD-bar, but not on AG and I (ground truth)"
    )
    data = _compared(presented(frame, ("AI", "AD_bar", "AG", "I"), "groundtruth"))
    numbers: dict[str, float] = {}
    parts, top = [], {}
    for key in ("AI", "AD_bar", "AG", "I"):
        col = data[key].dropna()
        if "fakecam" not in col.index or len(col) < 3:
            return ClaimResult(claim, None, f"{COLUMNS[key].header}: Fake-CAM or fewer than 3 methods")
        score = _oriented(frame, key, col)
        rank = 1 + int((score > score["fakecam"]).sum())
        k = math.ceil(len(col) * t.top_fraction)
        top[key] = rank <= k
        numbers |= {key: float(col["fakecam"]), f"{key}_rank": float(rank), f"{key}_top": float(k)}
        numbers[f"{key}_n"] = float(len(col))
        parts.append(
            f"{COLUMNS[key].header} {col['fakecam']:.1f}: rank {rank}/{len(col)} (best {k}: ranks 1-{k})"
        )
    holds = top["AI"] and top["AD_bar"] and not top["AG"] and not top["I"]
    return ClaimResult(claim, holds, "Fake-CAM " + "; ".join(parts), numbers)


def claim_least_likely(frame: pd.DataFrame, t: ClaimThresholds = DEFAULT_THRESHOLDS) -> ClaimResult:
    """Claim 2: least-likely targets give I ~ 0, AG ~ 0 and D-bar ~ 100 for every method."""
    claim = (
        f"Least-likely targets give I <= {t.least_i_max:g}, AG <= {t.least_ag_max:g} and "
        f"D-bar >= {t.least_dbar_min:g} for every method"
    )
    data = _compared(presented(frame, ("I", "AG", "D_bar"), "least")).dropna(how="all")
    limits = {"I": (t.least_i_max, True), "AG": (t.least_ag_max, True), "D_bar": (t.least_dbar_min, False)}
    present = [k for k in limits if data[k].notna().any()] if not data.empty else []
    if not present:
        return ClaimResult(claim, None, "no least-likely rows")
    numbers: dict[str, float] = {"n_methods": float(len(data))}
    fails, parts = [], []
    for key in present:
        limit, is_max = limits[key]
        col = data[key].dropna()
        extreme = float(col.max() if is_max else col.min())
        numbers[f"{key}_{'max' if is_max else 'min'}"] = extreme
        parts.append(f"{'max' if is_max else 'min'} {COLUMNS[key].header} {extreme:.1f}")
        bad = col[col > limit] if is_max else col[col < limit]
        fails += [f"{method_display(m).label} {COLUMNS[key].header} {v:.1f}" for m, v in bad.items()]
    evidence = f"over {len(data)} methods: " + ", ".join(parts)
    missing = [COLUMNS[k].header for k in limits if k not in present]
    if missing:
        evidence += f"; not computed: {', '.join(missing)}"
    if fails:
        evidence += "; outside the thresholds: " + ", ".join(fails)
    return ClaimResult(claim, not fails, evidence, numbers)


def claim_gradients_lowest(frame: pd.DataFrame, t: ClaimThresholds = DEFAULT_THRESHOLDS) -> ClaimResult:
    """Claim 3: every gradient method scores below every other method on AI, AD-bar and AG (ground truth)."""
    claim = "Gradient methods score lowest on AI, AD-bar and AG: each below every non-gradient method"
    data = _compared(presented(frame, ("AI", "AD_bar", "AG"), "groundtruth"))
    is_grad = np.array([method_display(m).family == "Gradient" for m in data.index], dtype=bool)
    numbers: dict[str, float] = {}
    parts, verdicts = [], []
    for key in ("AI", "AD_bar", "AG"):
        score = _oriented(frame, key, data[key])
        grad, other = score[is_grad].dropna(), score[~is_grad].dropna()
        if grad.empty or other.empty:
            return ClaimResult(claim, None, f"{COLUMNS[key].header}: no gradient or no other methods")
        best_grad, worst_other = grad.idxmax(), other.idxmin()
        verdicts.append(bool(grad.max() < other.min()))
        numbers |= {f"{key}_gradient_best": float(data.at[best_grad, key])}
        numbers |= {f"{key}_others_worst": float(data.at[worst_other, key])}
        parts.append(
            f"{COLUMNS[key].header}: best gradient {data.at[best_grad, key]:.1f} "
            f"({method_display(best_grad).label}) vs worst other {data.at[worst_other, key]:.1f} "
            f"({method_display(worst_other).label})"
        )
    return ClaimResult(claim, all(verdicts), "; ".join(parts), numbers)


def claim_near_equal(frame: pd.DataFrame, t: ClaimThresholds = DEFAULT_THRESHOLDS) -> ClaimResult:
    """Claim 4: MS, AS, Complexity, EC are near-equal across methods once the extremes are dropped."""
    claim = (
        f"MS, AS, Complexity and EC are near-equal across methods except the extremes: coefficient of "
        f"variation < {t.cv_max:g} after dropping the {t.trim} lowest and {t.trim} highest"
    )
    keys = ("MS", "AS", "Complexity", "EC")
    data = _compared(presented(frame, keys, "groundtruth"))
    numbers: dict[str, float] = {}
    parts, verdicts = [], []
    for key in keys:
        col = data[key].dropna().sort_values()
        if len(col) < 2 * t.trim + 2:
            parts.append(f"{COLUMNS[key].header}: fewer than {2 * t.trim + 2} methods")
            continue
        kept = col.iloc[t.trim : len(col) - t.trim]
        mean = float(kept.mean())
        cv = float(kept.std(ddof=0)) / abs(mean) if mean != 0 else math.inf
        numbers[f"{key}_cv"] = cv
        verdicts.append(cv < t.cv_max)
        parts.append(f"{COLUMNS[key].header}: CV {cv:.3f} over {len(kept)} of {len(col)} methods")
    if not verdicts:
        return ClaimResult(claim, None, "; ".join(parts), numbers)
    return ClaimResult(claim, all(verdicts), "; ".join(parts), numbers)


def claim_augmentation_shift(frame: pd.DataFrame, t: ClaimThresholds = DEFAULT_THRESHOLDS) -> ClaimResult:
    """Claim 5: every augmentation shifts the recognition metrics (mean |change| vs un-augmented)."""
    claim = (
        f"Recognition metrics shift under every augmentation: mean |change| of AI, AD-bar, AG, I, D-bar "
        f"vs the un-augmented run > {t.shift_min:g} points"
    )
    augs = augmented_ids(frame)
    base = _compared(presented(frame, RECOGNITION_KEYS, "groundtruth"))
    if not augs or base.isna().all().all():
        return ClaimResult(claim, None, "no augmented rows" if not augs else "no un-augmented rows")
    numbers: dict[str, float] = {}
    parts, verdicts = [], []
    for aug in augs:
        shifted = _compared(presented(frame, RECOGNITION_KEYS, "groundtruth", aug, None))
        common = shifted.index.intersection(base.index)
        change = (shifted.loc[common] - base.loc[common]).abs().to_numpy().ravel()
        change = change[np.isfinite(change)]
        if change.size == 0:
            parts.append(f"{augmentation_label(aug)}: no method in common with the un-augmented run")
            continue
        numbers[f"{aug}_mean_abs_change"] = float(change.mean())
        verdicts.append(float(change.mean()) > t.shift_min)
        parts.append(f"{augmentation_label(aug)} {change.mean():.1f} over {len(common)} methods")
    holds = all(verdicts) if verdicts else None
    return ClaimResult(claim, holds, "mean |change|: " + "; ".join(parts), numbers)


CLAIMS = (
    claim_fakecam_top,
    claim_least_likely,
    claim_gradients_lowest,
    claim_near_equal,
    claim_augmentation_shift,
)


def evaluate_claims(
    frame: pd.DataFrame, thresholds: ClaimThresholds = DEFAULT_THRESHOLDS
) -> list[ClaimResult]:
    """Every claim of :data:`CLAIMS` on the rows of one configuration, in the paper's order."""
    return [check(frame, thresholds) for check in CLAIMS]
