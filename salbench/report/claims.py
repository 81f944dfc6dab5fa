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
from scipy import stats

from salbench.report.presentation import COLUMNS, RECOGNITION_KEYS, augmentation_label, method_display
from salbench.report.results import ResultsView, common_rows, compared_mask, resampled_values
from salbench.report.tables import augmented_ids
from salbench.stats import DEFAULT_BOOTSTRAP, Bootstrap


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
    """Outcome of one claim: ``holds`` is None when the run lacks the data to decide.

    Attributes:
        claim: the claim with its thresholds, in words.
        holds: the verdict on the run's means (None: not computed).
        evidence: the numbers behind it, in words.
        numbers: the same numbers by name.
        margin: how far the means are from flipping the verdict, > 0 where it holds (the claim's own
            units: points, or a coefficient of variation for claim 4); NaN where not computed.
        support: share of the bootstrap resamples in which the claim holds (NaN: not judged with
            statistics, :func:`judge_claims`).
        low, high: bootstrap interval of ``margin`` at ``level``.
        level: confidence level of the verdict.
        n_images: images behind the claim's means (the largest count of its rows).
        n_needed: images a conclusive verdict would need at the observed margin and spread (only for an
            inconclusive verdict; None when the margin is 0).
        test: how the verdict was reached, in words.
    """

    claim: str
    holds: bool | None
    evidence: str
    numbers: dict[str, float] = dataclasses.field(default_factory=dict)
    margin: float = math.nan
    support: float = math.nan
    low: float = math.nan
    high: float = math.nan
    level: float = math.nan
    n_images: int = 0
    n_needed: int | None = None
    test: str = ""

    @property
    def judged(self) -> bool:
        """Whether the verdict rests on resamples (else: on the means alone)."""
        return self.holds is not None and math.isfinite(self.support)

    @property
    def verdict(self) -> str:
        """``holds`` / ``does not hold`` / ``inconclusive`` / ``not computed in this run``.

        Judged with statistics, a verdict is conclusive only when the claim holds (or fails) in at least
        ``(1 + level) / 2`` of the resamples, the same rule as a two-sided interval of the margin that
        excludes 0.
        """
        if self.holds is None:
            return "not computed in this run"
        if self.judged:
            needed = (1.0 + self.level) / 2.0
            if self.holds and self.support >= needed:
                return "holds"
            if not self.holds and 1.0 - self.support >= needed:
                return "does not hold"
            return "inconclusive"
        return "holds" if self.holds else "does not hold"

    def statistics(self) -> str:
        """The verdict's numbers in words: margin with its interval, support, images (needed)."""
        if not self.judged:
            return ""
        text = (
            f"margin {self.margin:.3g} [{self.low:.3g}, {self.high:.3g}] ({100 * self.level:g}% interval); "
            f"holds in {100 * self.support:.1f}% of resamples; {self.n_images} images"
        )
        if self.verdict == "inconclusive":
            text += (
                f"; about {self.n_needed:,} images for a conclusive verdict"
                if self.n_needed is not None
                else "; margin 0: no sample size decides it"
            )
        return text


def _view(frame: pd.DataFrame | ResultsView) -> ResultsView:
    return frame if isinstance(frame, ResultsView) else ResultsView(frame)


def _compared(view: ResultsView, keys: tuple[str, ...], label_set: str) -> tuple[np.ndarray, np.ndarray]:
    """(method ids, (methods, keys) presented values) of the methods the claims compare: arrays, since a
    claim is re-checked on every resample (the row selection is found once per view)."""
    methods, values = view.presented_array(keys, label_set)
    kept = view.cached(f"compared:{keys}:{label_set}", lambda: compared_mask(tuple(methods)))
    return np.asarray(methods, dtype=object)[kept], values[kept]


def claim_fakecam_top(
    frame: pd.DataFrame | ResultsView, t: ClaimThresholds = DEFAULT_THRESHOLDS
) -> ClaimResult:
    """Claim 1: Fake-CAM is among the best on AI and AD-bar but not on AG and I (ground truth)."""
    share = f"{t.top_fraction:.2g}"
    claim = (
        f"Fake-CAM ranks in the best {share} of methods on AI and AD-bar, but not on AG and I (ground truth)"
    )
    view = _view(frame)
    keys = ("AI", "AD_bar", "AG", "I")
    methods, data = _compared(view, keys, "groundtruth")
    numbers: dict[str, float] = {}
    parts, top, margins = [], {}, []
    for j, key in enumerate(keys):
        present = np.isfinite(data[:, j])
        col, names = data[present, j], methods[present]
        is_fake = names == "fakecam"
        if not is_fake.any() or len(col) < 3:
            return ClaimResult(claim, None, f"{COLUMNS[key].header}: Fake-CAM or fewer than 3 methods")
        score = col if view.higher_is_better(key) else -col  # larger = better
        fake, value = float(score[is_fake][0]), float(col[is_fake][0])
        rank = 1 + int((score > fake).sum())
        k = math.ceil(len(col) * t.top_fraction)
        top[key] = rank <= k
        # Fake-CAM is in the best k iff it scores at least the k-th best other method
        kth = float(np.sort(score[~is_fake])[::-1][k - 1])
        gap = fake - kth
        margins.append(gap if key in ("AI", "AD_bar") else -gap)
        numbers |= {key: value, f"{key}_rank": float(rank), f"{key}_top": float(k)}
        numbers[f"{key}_n"] = float(len(col))
        parts.append(f"{COLUMNS[key].header} {value:.1f}: rank {rank}/{len(col)} (best {k}: ranks 1-{k})")
    holds = top["AI"] and top["AD_bar"] and not top["AG"] and not top["I"]
    return ClaimResult(claim, holds, "Fake-CAM " + "; ".join(parts), numbers, margin=min(margins))


def claim_least_likely(
    frame: pd.DataFrame | ResultsView, t: ClaimThresholds = DEFAULT_THRESHOLDS
) -> ClaimResult:
    """Claim 2: least-likely targets give I ~ 0, AG ~ 0 and D-bar ~ 100 for every method."""
    claim = (
        f"Least-likely targets give I <= {t.least_i_max:g}, AG <= {t.least_ag_max:g} and "
        f"D-bar >= {t.least_dbar_min:g} for every method"
    )
    keys = ("I", "AG", "D_bar")
    methods, data = _compared(_view(frame), keys, "least")
    rows = np.isfinite(data).any(axis=1)  # methods with at least one of the three
    methods, data = methods[rows], data[rows]
    limits = {"I": (t.least_i_max, True), "AG": (t.least_ag_max, True), "D_bar": (t.least_dbar_min, False)}
    present = [k for j, k in enumerate(keys) if np.isfinite(data[:, j]).any()]
    if not present:
        return ClaimResult(claim, None, "no least-likely rows")
    numbers: dict[str, float] = {"n_methods": float(len(data))}
    fails, parts, margins = [], [], []
    for key in present:
        limit, is_max = limits[key]
        j = keys.index(key)
        ok = np.isfinite(data[:, j])
        col, names = data[ok, j], methods[ok]
        extreme = float(col.max() if is_max else col.min())
        margins.append(limit - extreme if is_max else extreme - limit)
        numbers[f"{key}_{'max' if is_max else 'min'}"] = extreme
        parts.append(f"{'max' if is_max else 'min'} {COLUMNS[key].header} {extreme:.1f}")
        bad = col > limit if is_max else col < limit
        fails += [
            f"{method_display(m).label} {COLUMNS[key].header} {v:.1f}" for m, v in zip(names[bad], col[bad])
        ]
    evidence = f"over {len(data)} methods: " + ", ".join(parts)
    missing = [COLUMNS[k].header for k in limits if k not in present]
    if missing:
        evidence += f"; not computed: {', '.join(missing)}"
    if fails:
        evidence += "; outside the thresholds: " + ", ".join(fails)
    return ClaimResult(claim, not fails, evidence, numbers, margin=min(margins))


def claim_gradients_lowest(
    frame: pd.DataFrame | ResultsView, t: ClaimThresholds = DEFAULT_THRESHOLDS
) -> ClaimResult:
    """Claim 3: every gradient method scores below every other method on AI, AD-bar and AG (ground truth)."""
    claim = "Gradient methods score lowest on AI, AD-bar and AG: each below every non-gradient method"
    view = _view(frame)
    keys = ("AI", "AD_bar", "AG")
    methods, data = _compared(view, keys, "groundtruth")
    is_grad = np.array([method_display(m).family == "Gradient" for m in methods], dtype=bool)
    numbers: dict[str, float] = {}
    parts, verdicts, margins = [], [], []
    for j, key in enumerate(keys):
        score = data[:, j] if view.higher_is_better(key) else -data[:, j]  # larger = better
        ok = np.isfinite(data[:, j])
        grad, other = np.flatnonzero(is_grad & ok), np.flatnonzero(~is_grad & ok)
        if grad.size == 0 or other.size == 0:
            return ClaimResult(claim, None, f"{COLUMNS[key].header}: no gradient or no other methods")
        best_grad, worst_other = grad[np.argmax(score[grad])], other[np.argmin(score[other])]  # first ones
        verdicts.append(bool(score[best_grad] < score[worst_other]))
        margins.append(float(score[worst_other] - score[best_grad]))
        numbers |= {f"{key}_gradient_best": float(data[best_grad, j])}
        numbers |= {f"{key}_others_worst": float(data[worst_other, j])}
        parts.append(
            f"{COLUMNS[key].header}: best gradient {data[best_grad, j]:.1f} "
            f"({method_display(methods[best_grad]).label}) vs worst other {data[worst_other, j]:.1f} "
            f"({method_display(methods[worst_other]).label})"
        )
    return ClaimResult(claim, all(verdicts), "; ".join(parts), numbers, margin=min(margins))


def claim_near_equal(
    frame: pd.DataFrame | ResultsView, t: ClaimThresholds = DEFAULT_THRESHOLDS
) -> ClaimResult:
    """Claim 4: MS, AS, Complexity, EC are near-equal across methods once the extremes are dropped."""
    claim = (
        f"MS, AS, Complexity and EC are near-equal across methods except the extremes: coefficient of "
        f"variation < {t.cv_max:g} after dropping the {t.trim} lowest and {t.trim} highest"
    )
    keys = ("MS", "AS", "Complexity", "EC")
    _, data = _compared(_view(frame), keys, "groundtruth")
    numbers: dict[str, float] = {}
    parts, verdicts = [], []
    for j, key in enumerate(keys):
        col = np.sort(data[np.isfinite(data[:, j]), j])
        if len(col) < 2 * t.trim + 2:
            parts.append(f"{COLUMNS[key].header}: fewer than {2 * t.trim + 2} methods")
            continue
        kept = col[t.trim : len(col) - t.trim]
        mean = float(kept.mean())
        cv = float(kept.std(ddof=0)) / abs(mean) if mean != 0 else math.inf
        numbers[f"{key}_cv"] = cv
        verdicts.append(cv < t.cv_max)
        parts.append(f"{COLUMNS[key].header}: CV {cv:.3f} over {len(kept)} of {len(col)} methods")
    if not verdicts:
        return ClaimResult(claim, None, "; ".join(parts), numbers)
    margin = t.cv_max - max(numbers.values())
    return ClaimResult(claim, all(verdicts), "; ".join(parts), numbers, margin=margin)


def claim_augmentation_shift(
    frame: pd.DataFrame | ResultsView, t: ClaimThresholds = DEFAULT_THRESHOLDS
) -> ClaimResult:
    """Claim 5: every augmentation shifts the recognition metrics (mean |change| vs un-augmented)."""
    claim = (
        f"Recognition metrics shift under every augmentation: mean |change| of AI, AD-bar, AG, I, D-bar "
        f"vs the un-augmented run > {t.shift_min:g} points"
    )
    view = _view(frame)
    augs = view.cached("augmentations", lambda: augmented_ids(view.frame))
    base_methods, base = view.presented_array(RECOGNITION_KEYS, "groundtruth")
    base_kept = compared_mask(tuple(base_methods))
    if not augs or not np.isfinite(base[base_kept]).any():
        return ClaimResult(claim, None, "no augmented rows" if not augs else "no un-augmented rows")
    numbers: dict[str, float] = {}
    parts, verdicts = [], []
    for aug in augs:
        methods, shifted = view.presented_array(RECOGNITION_KEYS, "groundtruth", aug, None)
        # rows of the compared methods present in both, found once per view (resamples share them)
        mine, theirs = view.cached(f"common:{aug}", lambda m=methods: common_rows(m, base_methods))
        common = methods[mine]
        change = np.abs(shifted[mine] - base[theirs]).ravel()
        change = change[np.isfinite(change)]
        if change.size == 0:
            parts.append(f"{augmentation_label(aug)}: no method in common with the un-augmented run")
            continue
        numbers[f"{aug}_mean_abs_change"] = float(change.mean())
        verdicts.append(float(change.mean()) > t.shift_min)
        parts.append(f"{augmentation_label(aug)} {change.mean():.1f} over {len(common)} methods")
    holds = all(verdicts) if verdicts else None
    margin = min(numbers.values()) - t.shift_min if numbers else math.nan
    return ClaimResult(claim, holds, "mean |change|: " + "; ".join(parts), numbers, margin=margin)


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
    view = ResultsView(frame)
    return [check(view, thresholds) for check in CLAIMS]


def judge_claims(
    frame: pd.DataFrame,
    per_image: pd.DataFrame | None = None,
    settings: Bootstrap = DEFAULT_BOOTSTRAP,
    thresholds: ClaimThresholds = DEFAULT_THRESHOLDS,
) -> list[ClaimResult]:
    """Every claim with its verdict judged against the sampling noise of the run's images.

    Each claim is re-checked on ``settings.resamples`` resampled results
    (:func:`~salbench.report.results.resampled_values`): it ``holds`` when it holds on the means and in
    at least ``(1 + level) / 2`` of the resamples, ``does not hold`` when it fails in that share, else it
    is ``inconclusive``; the bootstrap interval of its margin and, where inconclusive, the images a
    conclusive verdict would need (the interval's half-width shrinks as ``1 / sqrt(n)``:
    ``n * (z * se / margin)^2``) come with it.

    Args:
        frame: ``results.csv`` rows of one configuration (``value``, ``std``, ``n_images``).
        per_image: per-image recognition rows (``label_set, method, image_id`` and the metric columns)
            of the same model, or None (then every mean is resampled from its normal approximation).
        settings: resamples, level and seed (``run.ci_*``); 0 resamples: verdicts on the means alone.
        thresholds: the claims' thresholds.
    """
    point = evaluate_claims(frame, thresholds)
    if settings.resamples == 0 or frame.empty:
        return point
    samples, n_rows, how = resampled_values(frame, per_image, settings)
    if not how:
        return point
    margins = np.full((settings.resamples, len(CLAIMS)), np.nan)
    holds = np.zeros((settings.resamples, len(CLAIMS)), dtype=bool)
    todo = [i for i, r in enumerate(point) if r.holds is not None]
    view = ResultsView(frame)
    for b in range(settings.resamples):
        shifted = view.with_values(samples[b])
        for i in todo:
            result = CLAIMS[i](shifted, thresholds)
            margins[b, i], holds[b, i] = result.margin, bool(result.holds)
    z = float(stats.norm.ppf((1.0 + settings.level) / 2.0))
    plain = (frame["augmentation"] == "none").to_numpy()
    # claim 5 rests on the augmented images (fewer than the explained ones), the others on the explained
    n_of = {True: int(np.nanmax(n_rows[plain], initial=0)), False: int(np.nanmax(n_rows[~plain], initial=0))}
    judged = []
    for i, result in enumerate(point):
        n_images = n_of[CLAIMS[i] is not claim_augmentation_shift]
        if i not in todo:
            judged.append(result)
            continue
        m = margins[:, i][np.isfinite(margins[:, i])]
        low, high = (
            np.quantile(m, [(1 - settings.level) / 2, (1 + settings.level) / 2]) if m.size else (np.nan,) * 2
        )
        se = float(m.std(ddof=1)) if m.size > 1 else math.nan
        needed = None
        if result.margin != 0 and math.isfinite(se) and n_images:
            needed = max(n_images + 1, math.ceil(n_images * (z * se / abs(result.margin)) ** 2))
        verdict = dataclasses.replace(
            result,
            support=float(holds[:, i].mean()),
            low=float(low),
            high=float(high),
            level=settings.level,
            n_images=n_images,
            test=f"{settings.resamples:,} resamples (seed {settings.seed}): {how}",
        )
        inconclusive = verdict.verdict == "inconclusive"
        judged.append(dataclasses.replace(verdict, n_needed=needed if inconclusive else None))
    return judged


def claims_section(ours: list[ClaimResult], reference: list[ClaimResult]) -> list[str]:
    lines = ["### Claims of the study, checked on this run", ""]
    tests = sorted({c.test for c in ours if c.judged})
    if tests:
        level = next(c.level for c in ours if c.judged)
        lines += [
            "Each claim is re-checked on resampled results ("
            + "; ".join(tests)
            + f"). It holds (or does not) only when it does so in at least {100 * (1 + level) / 2:g}% of "
            "the resamples, the rule of a two-sided "
            f"{100 * level:g}% interval of its margin that excludes 0; otherwise the run's images cannot "
            "decide it (inconclusive), and the images a conclusive verdict would need are estimated "
            "from the margin and its spread (the interval shrinks as 1 / sqrt(n)). Margin: how far the "
            "means are from flipping the verdict, in the claim's units (points; claim 4: coefficient of "
            "variation).",
            "",
        ]
    lines += [
        "| # | Claim | This run | Evidence | Statistics | On the published numbers |",
        "|--:|:--|:--|:--|:--|:--|",
    ]
    for i, (mine, paper) in enumerate(zip(ours, reference), start=1):
        claim, evidence = (text.replace("|", r"\|") for text in (mine.claim, mine.evidence))
        stat = mine.statistics() or "-"
        lines.append(f"| {i} | {claim} | **{mine.verdict}** | {evidence} | {stat} | {paper.verdict} |")
    return [*lines, ""]
