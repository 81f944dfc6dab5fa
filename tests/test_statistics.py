"""Uncertainty of the results: bootstrap intervals of per-image means, their columns in results.csv and
the tables, near ties of the indicator metrics (AI, IIC), and claims judged on intervals."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats
from torch import nn

from salbench.errors import ConfigError
from salbench.metrics.base import increase_indicator, near_ties
from salbench.metrics.gomez import single_step_scores
from salbench.metrics.recognition import recognition_scores
from salbench.report.render import to_ci_csv, to_latex, to_markdown
from salbench.report.tables import build_tables
from salbench.stats import (
    Bootstrap,
    holm,
    paired_comparison,
    percentile_intervals,
    summarise_mean,
    summarise_means,
)
from salbench.store.results import RESULT_COLUMNS, UNCERTAINTY_COLUMNS, read_results, upsert_results


def _scipy(values: np.ndarray, settings: Bootstrap) -> tuple[float, float]:
    """The interval as scipy computes it, from a fresh generator of the same seed."""
    res = scipy_stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=settings.resamples,
        confidence_level=settings.level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(settings.seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# ----------------------------------------------------------------------------- bootstrap intervals


@pytest.mark.parametrize("settings", [Bootstrap(), Bootstrap(resamples=250, level=0.9, seed=7)])
def test_intervals_equal_scipy_bootstrap_with_the_same_seed(settings):
    """Hand-made per-image values: 0/1 indicators (AI), probabilities, a skewed column with a NaN and
    columns of different lengths, resampled together. scipy draws the same indices, takes the same
    means and the same quantiles: equal to the last bit."""
    columns = [
        np.array([1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=float),
        np.array([0.91, 0.12, 0.55, 0.73, 0.04, 0.66, 0.38, 0.99, 0.27, 0.81, 0.45, 0.5, 0.6, 0.2, 0.3, 0.7]),
        np.array([0.001, 0.002, 0.004, 0.5, np.nan, 0.003, 0.9, 0.002, 0.001]),
        np.array([2.0, -1.0, 0.5]),
    ]
    summaries = summarise_means(columns, settings)
    for values, s in zip(columns, summaries):
        finite = values[np.isfinite(values)]
        assert (s.low, s.high) == _scipy(finite, settings)
        assert (
            s.value == float(finite.mean()) and s.n == finite.size and s.n_other == values.size - finite.size
        )
        assert s.std == float(np.std(finite, ddof=1)) and s.level == settings.level
        assert s.low <= s.value <= s.high


def test_intervals_are_identical_across_reruns_and_row_order():
    rng = np.random.default_rng(3)
    columns = [rng.random(64) for _ in range(5)]
    first = summarise_means(columns)
    assert summarise_means(columns) == first
    assert summarise_means(columns[::-1]) == first[::-1]  # each row from a fresh generator of the seed
    assert summarise_means(columns, Bootstrap(seed=1)) != first


def test_intervals_shrink_as_n_grows():
    """Bernoulli(0.4) values: the 95% interval's width is ~2 * 1.96 sqrt(p (1 - p) / n), 0.48 at n = 16
    and 0.06 at n = 1024; each quadrupling of n about halves it (checked with a factor 1.5 margin)."""
    rng = np.random.default_rng(0)
    widths = []
    for n in (16, 64, 256, 1024):
        s = summarise_mean((rng.random(n) < 0.4).astype(float))
        widths.append(s.high - s.low)
    assert all(later < earlier / 1.5 for earlier, later in itertools.pairwise(widths)), widths
    assert widths[0] == pytest.approx(2 * 1.96 * math.sqrt(0.24 / 16), rel=0.35)


def test_degenerate_columns():
    empty, one, constant = summarise_means([[np.nan, np.inf], [0.3], [0.5, 0.5, 0.5]])
    assert math.isnan(empty.value) and (empty.n, empty.n_other) == (0, 2) and math.isnan(empty.low)
    assert one.value == 0.3 and math.isnan(one.std) and math.isnan(one.low) and math.isnan(one.level)
    assert (constant.low, constant.high, constant.std) == (0.5, 0.5, 0.0)
    no_resamples = summarise_mean([0.1, 0.2, 0.4], Bootstrap(resamples=0))
    assert math.isnan(no_resamples.low) and no_resamples.std == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))
    for bad in ({"resamples": -1}, {"level": 1.0}, {"seed": -2}):
        with pytest.raises(ConfigError, match=r"run\.ci_"):
            Bootstrap(**bad)


def test_bootstrap_of_1600_rows_takes_seconds():
    """The default run's results.csv holds ~1,600 means over 64 images: 1,000 resamples each."""
    values = np.random.default_rng(0).random((1600, 64))
    start = time.perf_counter()
    low, high = percentile_intervals(values, Bootstrap())
    seconds = time.perf_counter() - start
    assert low.shape == high.shape == (1600,) and (low < values.mean(axis=1)).all()
    assert seconds < 20, f"{seconds:.1f} s"


# ----------------------------------------------------------------------------- results.csv columns


def _row(**kw) -> dict:
    row = {
        "model": "m",
        "dataset": "d",
        "label_set": "groundtruth",
        "method": "gradcam",
        "family": "CAM",
        "metric": "average_increase",
        "value": 0.5,
        "n_images": 16,
        "n_skipped": 0,
        "higher_is_better": True,
        "protocol": "acml2024",
    }
    return row | kw


def test_results_round_trip_with_interval_columns(tmp_path):
    path = tmp_path / "results.csv"
    s = summarise_mean(np.r_[np.ones(9), np.zeros(7)])
    upsert_results(path, [_row(**s.columns(), n_ties=3), _row(method="rise", metric="roar_accuracy")])
    frame = read_results(path)
    assert list(frame.columns) == RESULT_COLUMNS and set(UNCERTAINTY_COLUMNS) <= set(RESULT_COLUMNS)
    gc = frame.set_index("method").loc["gradcam"]
    assert (gc["value"], gc["std"], gc["ci_low"], gc["ci_high"], gc["ci_level"], gc["n_ties"]) == (
        s.value,
        s.std,
        s.low,
        s.high,
        0.95,
        3.0,
    )
    assert frame.set_index("method").loc["rise", list(UNCERTAINTY_COLUMNS)].isna().all()
    bare = pd.read_csv(path)  # loadable without any option: empty cells are NaN
    assert bare["ci_low"].dtype == np.float64 and bare.loc[bare.method == "rise", "ci_low"].isna().all()
    assert "n_ties" in bare and path.read_text().splitlines()[1].endswith(",3")  # a count, not 3.0
    # a file written before the columns existed still loads, with NaN
    old = tmp_path / "old.csv"
    bare.drop(columns=list(UNCERTAINTY_COLUMNS)).to_csv(old, index=False)
    assert read_results(old)[list(UNCERTAINTY_COLUMNS)].isna().all().all()


# ----------------------------------------------------------------------------- tables show intervals


def test_table_cells_show_their_interval(tmp_path):
    rows = []
    for method, family, low, value, high in (
        ("gradcam", "CAM", 0.631, 0.664, 0.695),
        ("rise", "Occlusion", 0.4, 0.5, 0.6),
    ):
        rows.append(_row(method=method, family=family, value=value, ci_low=low, ci_high=high, ci_level=0.95))
    # AD is shown as the bar 100 - 100 AD: the interval flips (RISE's smaller AD is the best, bold, bar)
    for method, family, low, value, high in (
        ("gradcam", "CAM", 0.1, 0.2, 0.3),
        ("rise", "Occlusion", 0.05, 0.1, 0.15),
    ):
        rows.append(
            _row(
                method=method,
                family=family,
                metric="average_drop",
                value=value,
                ci_low=low,
                ci_high=high,
                ci_level=0.95,
                higher_is_better=False,
            )
        )
    path = tmp_path / "results.csv"
    upsert_results(path, rows)
    table = build_tables(read_results(path))["table1"]
    md = to_markdown(table)
    assert "| CAM | Grad-CAM | **66.4** [63.1, 69.5] | 80.0 [70.0, 90.0] |" in md
    assert r"\textbf{66.4} [63.1, 69.5]" in to_latex(table)
    ci = pd.read_csv(pd.io.common.StringIO(to_ci_csv(table)))
    assert ci.loc[0, ["AI", "AI_ci_low", "AI_ci_high", "AD_bar_ci_low", "AD_bar_ci_high"]].tolist() == [
        66.4,
        63.1,
        69.5,
        70.0,
        90.0,
    ]


# ----------------------------------------------------------------------------- near ties of AI and IIC


def test_near_tie_rules():
    base = np.array([0.5, 0.5, 0.5, 0.5, np.nan])
    new = np.array([0.5 * (1 + 1e-7), 0.5 * (1 - 1e-7), 0.6, 0.4, 0.5])
    assert near_ties(base, new).tolist()[:4] == [1.0, 1.0, 0.0, 0.0] and math.isnan(near_ties(base, new)[4])
    assert increase_indicator(base, new, rule="strict").tolist()[:4] == [1.0, 0.0, 1.0, 0.0]
    assert increase_indicator(base, new, rule="tolerant").tolist()[:4] == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ConfigError, match="rule"):
        increase_indicator(base, new, rule="loose")


class LayoutNoise(nn.Module):
    """A float64 classifier whose target logit moves by +-``delta`` with the parity of the batch size:
    the stand-in for a kernel whose rounding depends on the batch layout (as BLAS and cuDNN kernels'
    does, by ~1e-7 relative in float32). Logits: class 0 = ``delta * (+1 even, -1 odd batch)``, class 1
    = the mean pixel, so f(x)_0 = 1 / (1 + exp(mean - offset))."""

    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sign = 1.0 if x.shape[0] % 2 == 0 else -1.0
        return torch.stack([torch.full_like(x[:, 0, 0, 0], sign * self.delta), x.mean(dim=(1, 2, 3))], dim=1)


def _recognition_ai(max_batch: int, rule: str) -> dict[str, float]:
    """AI of a map of ones (the masked image is the image): O - Y is the layout's offset alone.

    Y (stage 1) is the offset-free probability; O comes from the chunked pass: every chunk has one row
    at ``max_batch=1`` (odd: O < Y), or the whole pass of 2 * n_steps + 2 rows is one chunk (even:
    O > Y). The logit offset 1e-7 moves O by p (1 - p) 1e-7 relative to Y: below the tolerance 1e-5.
    """
    torch.manual_seed(0)
    images = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([0])
    y = torch.softmax(torch.stack([torch.zeros(1, dtype=torch.float64), images.mean(dim=(1, 2, 3))], 1), 1)
    out = recognition_scores(
        LayoutNoise(1e-7),
        images,
        torch.ones(1, 8, 8, dtype=torch.float64),
        target,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        base_probs=y[:, 0],
        max_batch=max_batch,
        ai_rule=rule,
    )
    return {
        "ai": float(out["average_increase"][0]),
        "tie": float(out["increase_tie"][0]),
        "diff": float(out["masked_prob"][0] - out["base_prob"][0]),
    }


def test_average_increase_near_tie_does_not_depend_on_the_batch_layout():
    odd, even = _recognition_ai(1, "strict"), _recognition_ai(1024, "strict")
    assert odd["diff"] < 0 < even["diff"] and max(abs(odd["diff"]), abs(even["diff"])) < 1e-7
    assert (odd["ai"], even["ai"]) == (0.0, 1.0)  # the study's rule: decided by the layout
    assert odd["tie"] == even["tie"] == 1.0  # counted as near ties either way
    robust = [_recognition_ai(b, "tolerant") for b in (1, 2, 3, 1024)]
    assert [r["ai"] for r in robust] == [0.0] * 4 and all(r["tie"] == 1.0 for r in robust)


def test_iic_near_tie_does_not_depend_on_the_batch_layout():
    """IIC of a map that removes one black pixel (the kept image is the image): Y is given (offset-free)
    and the kept and removed rows share one chunk of 2 rows (even: O > Y) or get one each (odd: O < Y)."""
    torch.manual_seed(1)
    images = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    images[0, :, 0, 0] = 0.0  # black, as the filling
    maps = torch.ones(1, 8, 8, dtype=torch.float64)
    maps[0, 0, 0] = 0.0
    y = torch.softmax(torch.stack([torch.zeros(1, dtype=torch.float64), images.mean(dim=(1, 2, 3))], 1), 1)
    results = {}
    for rule in ("strict", "tolerant"):
        for max_batch in (1, 2):
            out = single_step_scores(
                LayoutNoise(1e-7),
                images,
                maps,
                torch.tensor([0]),
                mean=(0.0, 0.0, 0.0),
                std=(1.0, 1.0, 1.0),
                base_probs=y[:, 0],
                max_batch=max_batch,
                iic_rule=rule,
                iic_tolerance=1e-5,
            )
            results[rule, max_batch] = (float(out["iic"][0]), float(out["iic_tie"][0]))
    assert (results["strict", 1], results["strict", 2]) == ((0.0, 1.0), (1.0, 1.0))  # decided by the layout
    assert results["tolerant", 1] == results["tolerant", 2] == (0.0, 1.0)


# ----------------------------------------------------------------------------- paired comparisons


def test_holm_by_hand():
    """p = (0.01, 0.04, 0.03, NaN), m = 3: sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06."""
    assert holm([0.01, 0.04, 0.03, np.nan])[:3].tolist() == pytest.approx([0.03, 0.06, 0.06], abs=1e-15)
    assert math.isnan(holm([0.01, 0.04, 0.03, np.nan])[3])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # capped at 1


def test_paired_comparison_against_scipy():
    """Three methods on 40 images: A best, B = A minus a small noisy shift (worse, but within noise),
    C far worse. The best, the p-values (scipy's Wilcoxon on the same differences), Holm's correction,
    the intervals (scipy's bootstrap of the mean difference) and the tied set are checked."""
    rng = np.random.default_rng(5)
    a = rng.random(40)
    values = {"b": a - 0.01 + 0.2 * rng.standard_normal(40), "a": a, "c": a - 0.3 + 0.05 * rng.random(40)}
    values["c"][3] = np.nan  # image 3 is left out for every method
    keep = np.isfinite(values["c"])
    table = paired_comparison(values, higher_is_better=True).set_index("method")
    assert table["rank"].to_dict() == {"a": 1, "b": 2, "c": 3} and (table["n_images"] == 39).all()
    p = {m: scipy_stats.wilcoxon(a[keep] - values[m][keep]).pvalue for m in ("b", "c")}
    assert table.loc["b", "p_value"] == p["b"] and table.loc["c", "p_value"] == p["c"]
    small, large = sorted(p.values())
    assert table.loc["c", "p_holm"] == pytest.approx(2 * small, rel=1e-12)
    assert table.loc["b", "p_holm"] == pytest.approx(max(2 * small, large), rel=1e-12)
    assert table.loc["b", "tied_with_best"] and not table.loc["c", "tied_with_best"]
    assert table.loc["a", "tied_with_best"] and table.loc["a", "diff_to_best"] == 0.0
    low, high = _scipy(a[keep] - values["c"][keep], Bootstrap())
    assert (table.loc["c", "diff_ci_low"], table.loc["c", "diff_ci_high"]) == (low, high)
    # lower is better: the same values negated give the same table
    flipped = paired_comparison({m: -v for m, v in values.items()}, higher_is_better=False)
    assert flipped.set_index("method")[["rank", "p_holm", "diff_to_best"]].equals(
        table[["rank", "p_holm", "diff_to_best"]]
    )


def test_paired_comparison_of_identical_maps_is_a_tie():
    """Two methods with the same per-image values (e.g. AI indicators): no difference to test, p = 1."""
    same = np.array([1.0, 0.0, 1.0, 1.0])
    table = paired_comparison({"x": same, "y": same.copy()}, higher_is_better=True)
    assert table["tied_with_best"].all() and table["p_value"].iloc[1] == 1.0


def test_report_section_names_the_methods_the_run_cannot_tell_apart(tmp_path):
    """Insertion on 30 images: Grad-CAM best, RISE within noise of it (differences 0.001 k with signs
    + - - + per block of four, so the signed ranks balance up to one: W+ = W- + 1, p near 1), Random far
    below (image k 0.3 + 0.001 k lower: distinct differences, all of one sign, so Wilcoxon's exact
    p = 2 / 2^30). Average drop = 1 - insertion (lower is better): the same order, not the reverse."""
    from salbench.report.significance import significance_section

    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, 30)
    signs = np.array([1, -1, -1, 1] * 7 + [-1, 1])
    wiggle = signs * 0.001 * np.arange(1, 31)
    per_method = {"gradcam": base, "rise": base - wiggle, "random": base - 0.3 - 0.001 * np.arange(30)}
    per_image = pd.concat(
        pd.DataFrame(
            {
                "label_set": "groundtruth",
                "method": m,
                "image_id": [f"i{k:02d}" for k in range(30)],
                "insertion": v,
                "average_drop": 1.0 - v,
            }
        )
        for m, v in per_method.items()
    )
    frame = pd.DataFrame(
        [
            _row(metric="insertion", higher_is_better=True),
            _row(metric="average_drop", higher_is_better=False),
        ]
    )
    lines = significance_section(per_image, frame, tmp_path, "")
    table = pd.read_csv(tmp_path / "tables" / "paired_comparisons.csv")
    ins = table[table.metric == "insertion"].set_index("method")
    assert ins["rank"].to_dict() == {"gradcam": 1, "rise": 2, "random": 3}
    assert ins.loc["random", "p_value"] == pytest.approx(2 / 2**30, rel=1e-9)
    assert ins.loc["rise", "p_value"] > 0.9  # W+ - W- = 1 out of 465
    assert ins.loc["rise", "tied_with_best"] and not ins.loc["random", "tied_with_best"]
    drop = table[table.metric == "average_drop"].set_index("method")
    assert drop["rank"].to_dict() == {"gradcam": 1, "rise": 2, "random": 3}
    text = "\n".join(lines)
    assert "| I | 30 | Grad-CAM (" in text and "| RISE | Random |" in text


# ----------------------------------------------------------------------------- claims judged with statistics

_CLAIM3_METRICS = (("average_increase", True), ("average_drop", False), ("average_gain", True))


def _claim3_run(
    effect: float, noise: float, gain_effect: float | None = None, n: int = 16, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image recognition values of two gradient and two CAM methods and the results rows they give.

    Every method's per-image value is ``base + quality + noise``: the CAM methods' quality is ``effect``
    above the gradient methods' (negative: the gradients are better; ``gain_effect`` on AG if given).
    Each results row is the mean of its per-image values with their std, as the evaluation writes it.
    """
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.6, n)
    ids = [f"img{k:02d}" for k in range(n)]
    per_image, rows = [], []
    for method in ("gradient", "integrated_gradients", "gradcam", "scorecam"):
        cam = method in ("gradcam", "scorecam")
        values = {"method": method, "label_set": "groundtruth", "image_id": ids}
        for metric, higher in _CLAIM3_METRICS:
            gain = metric == "average_gain" and gain_effect is not None
            quality = (gain_effect if gain else effect) if cam else 0.0
            v = base + quality + rng.normal(0.0, noise, n)
            values[metric] = np.clip(v if higher else 1.0 - v, 0.0, 1.0)
            s = summarise_mean(values[metric])
            rows.append(
                _row(
                    method=method,
                    metric=metric,
                    higher_is_better=higher,
                    value=float(np.mean(values[metric])),
                )
                | {"augmentation": "none", "variant": "none", "std": s.std, "n_images": n}
            )
        per_image.append(pd.DataFrame(values))
    return pd.DataFrame(rows), pd.concat(per_image, ignore_index=True)


@pytest.mark.parametrize(
    ("effect", "gain_effect", "verdict"),
    [(0.3, None, "holds"), (-0.3, None, "does not hold"), (0.3, 0.04, "inconclusive")],
)
def test_claims_are_judged_holds_does_not_hold_or_inconclusive(effect, gain_effect, verdict):
    """Claim 3 (gradients lowest) on 16 images with 5-point per-image noise: a 30-point effect holds in
    every resample, a reversed one fails in every one; a 4-point effect on AG (the other metrics 30)
    goes either way over the four gradient/CAM pairs (it holds in 76% of the resamples, far from both
    cut-offs, 2.5% and 97.5%): the run cannot decide it and says how many images would."""
    from salbench.report.claims import claim_gradients_lowest, judge_claims

    frame, per_image = _claim3_run(effect, 0.05, gain_effect)
    settings = Bootstrap(resamples=400, seed=3)
    judged = judge_claims(frame, per_image, settings)
    three = judged[2]
    assert three.claim == claim_gradients_lowest(frame).claim
    assert three.verdict == verdict
    assert [c.verdict for i, c in enumerate(judged) if i != 2] == ["not computed in this run"] * 4
    assert "paired bootstrap over images" in three.test and three.n_images == 16
    assert three.low <= three.high
    if verdict == "holds":
        assert three.support == 1.0 and three.low > 0 and three.n_needed is None
    elif verdict == "does not hold":
        assert three.support == 0.0 and three.high < 0
    else:
        assert 0.0 < three.support < 1.0 and three.low < 0 < three.high
        assert three.n_needed is not None and three.n_needed > 16
        assert f"about {three.n_needed:,} images for a conclusive verdict" in three.statistics()
    # identical on a rerun (seeded), and the same point verdict as the unjudged claim
    again = judge_claims(frame, per_image, settings)[2]
    assert (again.support, again.low, again.high) == (three.support, three.low, three.high)
    assert three.holds == claim_gradients_lowest(frame).holds


def test_claims_section_prints_each_verdict_with_its_statistics():
    from salbench.report.claims import claims_section, evaluate_claims, judge_claims

    frame, per_image = _claim3_run(0.3, 0.05, 0.04)
    judged = judge_claims(frame, per_image, Bootstrap(resamples=200, seed=3))
    text = "\n".join(claims_section(judged, evaluate_claims(frame)))
    row = next(line for line in text.splitlines() if line.startswith("| 3 |"))
    assert "**inconclusive**" in row and "images for a conclusive verdict" in row
    assert "200 resamples (seed 3): paired bootstrap over images" in text


def test_judged_claims_on_rows_without_per_image_values_use_each_mean_and_its_std():
    """Without per-image files every mean is drawn from its normal approximation; a mean with no std
    (the published numbers) stays fixed, so those verdicts are the point verdicts."""
    from salbench.report.claims import evaluate_claims, judge_claims
    from salbench.report.published import load_published, published_as_results

    paper = published_as_results(load_published())
    fixed = judge_claims(paper, None, Bootstrap(resamples=50))
    assert [c.verdict for c in fixed] == [c.verdict for c in evaluate_claims(paper)] == ["holds"] * 5
    assert not any(c.judged for c in fixed)
    frame, _ = _claim3_run(0.3, 0.05)
    normal = judge_claims(frame, None, Bootstrap(resamples=100))[2]
    assert normal.verdict == "holds" and "normal approximation" in normal.test


def test_results_view_presents_what_presented_does():
    """The claims' cached slices equal the pivot of report.results.presented, cell for cell."""
    from pathlib import Path

    from salbench.report.claims import ResultsView
    from salbench.report.presentation import RECOGNITION_KEYS
    from salbench.report.results import presented

    frame = read_results(Path(__file__).parent / "data" / "results_small.csv")
    view = ResultsView(frame)
    for keys, label_set, aug, variant in [
        (RECOGNITION_KEYS, "groundtruth", "none", "none"),
        (("I", "AG", "D_bar"), "least", "none", "none"),
        (("MS", "AS", "Complexity", "EC"), "groundtruth", "none", "none"),
        *[(RECOGNITION_KEYS, "groundtruth", a, None) for a in sorted(set(frame["augmentation"]) - {"none"})],
    ]:
        want = presented(frame, keys, label_set, aug, variant)
        got = view.presented(keys, label_set, aug, variant)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, check_names=False)


# ----------------------------------------------------------------------------- metric sanity (controls)


def _controls_per_image(n: int = 20) -> pd.DataFrame:
    """Deletion (lower is better) on n images: Random 0.10 below Grad-CAM on every image (the scattered
    removal the issue describes), Score-CAM and RISE far better than both; insertion: Random worst."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.3, n)
    spread = 0.001 * np.arange(n)  # distinct paired differences: exact Wilcoxon, p = 2 / 2^n
    deletion = {
        "gradcam": base + 0.2,
        "random": base + 0.1 - spread,
        "scorecam": base - 0.1,
        "rise": base - 0.15,
    }
    insertion = {"gradcam": base + 0.3, "random": base - 0.1, "scorecam": base + 0.35, "rise": base + 0.4}
    return pd.concat(
        pd.DataFrame(
            {
                "label_set": "groundtruth",
                "method": m,
                "image_id": [f"i{k:02d}" for k in range(n)],
                "deletion": deletion[m],
                "insertion": insertion[m],
            }
        )
        for m in deletion
    )


def test_a_control_as_good_as_the_median_informed_method_flags_the_metric(tmp_path):
    from salbench.report.controls import control_checks, controls_section

    per_image = _controls_per_image()
    frame = pd.DataFrame(
        [_row(metric="deletion", higher_is_better=False), _row(metric="insertion", higher_is_better=True)]
    )
    checks = control_checks(per_image, frame).set_index("metric")
    deletion, insertion = checks.loc["deletion"], checks.loc["insertion"]
    # deletion: informed means base + 0.2, - 0.1, - 0.15 -> median base - 0.1; Random base + 0.1 - spread
    assert deletion["control"] == "random" and not deletion["beats_median"]
    assert deletion["n_significantly_better"] == 1 and deletion["n_significantly_worse"] == 2  # vs Grad-CAM
    assert deletion["best_informed"] == "rise" and insertion["n_significantly_worse"] == 3
    assert not insertion["beats_median"]
    # make Random as good as Score-CAM on deletion: better than 2 of 3 informed methods -> flagged
    better = per_image.copy()
    pick = better["method"] == "random"
    better.loc[pick, "deletion"] = better.loc[better["method"] == "scorecam", "deletion"].to_numpy() - 0.001
    flagged = control_checks(better, frame).set_index("metric").loc["deletion"]
    assert flagged["beats_median"] and flagged["n_significantly_better"] == 2 and flagged["flagged"]
    assert not deletion["flagged"]  # better than 1 of 3 informed methods: under half
    text = "\n".join(controls_section(better, frame, tmp_path, ""))
    assert "| Ground truth | D | Random |" in text
    assert "Flagged as uninformative here: Ground truth targets: D." in text
    assert pd.read_csv(tmp_path / "tables" / "metric_sanity.csv").shape[0] == 2


def test_gain_terms_inflated_by_a_confident_base_are_counted():
    """AG term = max(0, O - Y) / (1 - Y): Y = 0.99999, O = Y + 7e-6 gives 0.7 from a 7e-6 change."""
    from salbench.report.controls import gain_denominator_terms

    y = np.array([0.99999, 0.5, 0.5, 0.9])
    o = np.array([0.999997, 0.6, 0.5, 0.905])
    gain = np.maximum(0.0, o - y) / (1.0 - y)
    per_image = pd.DataFrame(
        {
            "label_set": "groundtruth",
            "method": "gradcam",
            "image_id": list("abcd"),
            "base_prob": y,
            "masked_prob": o,
            "average_gain": gain,
        }
    )
    terms = gain_denominator_terms(per_image).iloc[0]
    # image a: change 7e-6 < 0.01, term 0.7; image d: change 0.005 < 0.01, term 0.05 < 0.1 (not counted)
    assert terms["n_terms"] == 1 and terms["share"] == pytest.approx(0.25)
    assert terms["share_of_mean"] == pytest.approx(gain[0] / gain.sum(), rel=1e-9)


# ----------------------------------------------------------------------------- rank agreement intervals


def test_vectorised_kendall_tau_equals_scipy_with_ties_and_missing_methods():
    """tau-b from pair signs equals scipy.stats.kendalltau (tau-b) on every column pair, ties and NaN
    included (a sum of at most 45 products of +-1, 0: exact in float64, up to the final division)."""
    from salbench.report.agreement import rank_agreement, rank_agreement_samples

    rng = np.random.default_rng(4)
    values = pd.DataFrame(rng.integers(0, 4, (10, 4)).astype(float), columns=["I", "AI", "D_bar", "MS"])
    values.iloc[2, 1] = np.nan
    values.iloc[5, 3] = np.nan
    directions = {"I": True, "AI": True, "D_bar": True, "MS": False}
    want = rank_agreement(values, directions).to_numpy()
    got = rank_agreement_samples(values.to_numpy()[None], list(directions.values()))[0]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    few = values.copy()
    few.iloc[3:, 0] = np.nan  # 3 methods left in I: still computed; 2 left: NaN
    few.iloc[2, 0] = np.nan
    assert np.isnan(rank_agreement_samples(few.to_numpy()[None], list(directions.values()))[0, 0, 1])


def test_report_prints_claim_statistics_and_tau_intervals(tmp_path):
    """build_report on a run of 4 methods x 3 recognition metrics over 16 images: the claims table holds
    the statistics, the rank agreement CSV and caption carry bootstrap intervals around each tau."""
    from salbench.report.markdown import build_report

    frame, per_image = _claim3_run(0.3, 0.05, 0.04)
    per_image = per_image.assign(base_prob=0.7, insertion=0.5, deletion=0.2)  # what Figure 2 reads
    path = tmp_path / "results.csv"
    upsert_results(path, frame.to_dict("records"))
    build_report(path, tmp_path / "report", per_image=per_image, intervals=Bootstrap(resamples=200, seed=3))
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert "**inconclusive**" in text and "200 resamples (seed 3)" in text
    assert "Kendall tau over methods, with its 95% bootstrap interval over images" in text
    tau = pd.read_csv(tmp_path / "report" / "tables" / "rank_agreement.csv")
    assert len(tau) == 3 and (tau["ci_level"] == 0.95).all()
    assert (tau["ci_low"] <= tau["ci_high"]).all() and tau[["ci_low", "ci_high"]].notna().all().all()


def test_the_augmentation_claim_counts_the_augmented_images():
    """Claim 5 compares the augmented images (8 per variant here) with the explained ones (64): its
    images, and the images it would need, are the augmented ones."""
    from salbench.report.claims import judge_claims

    rows = []
    for method in ("fakecam", "gradcam"):
        for metric in ("average_increase", "average_drop", "average_gain", "insertion", "deletion"):
            rows.append(_row(method=method, metric=metric, value=0.5, std=0.2, n_images=64))
            for variant, shift in (("seed32", 0.06), ("seed44", 0.08)):
                rows.append(
                    _row(method=method, metric=metric, value=0.5 + shift, std=0.2, n_images=8)
                    | {"augmentation": "mixup", "variant": variant}
                )
    frame = pd.DataFrame(rows)
    frame["augmentation"] = frame.get("augmentation").fillna("none")
    frame["variant"] = frame.get("variant").fillna("none")
    five = judge_claims(frame, None, Bootstrap(resamples=100))[4]
    assert five.n_images == 8 and five.holds is not None
