"""Stage 5: tables, rendering, published comparison, claims, figures and the report script."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evaluation import report as report_script
from salbench.errors import DataError
from salbench.report import Figure1Inputs, build_report, build_tables, evaluate_claims
from salbench.report.agreement import figure_rank_agreement, rank_agreement
from salbench.report.claims import (
    ClaimThresholds,
    claim_augmentation_shift,
    claim_fakecam_top,
    claim_gradients_lowest,
    claim_least_likely,
    claim_near_equal,
)
from salbench.report.figures import (
    binned_means,
    figure1,
    figure2,
    figure_curves,
    pick_best_worst,
)
from salbench.report.presentation import COLUMNS, method_display, method_order
from salbench.report.published import compare, load_published, published_as_results
from salbench.report.render import to_csv, to_latex, to_markdown
from salbench.report.tables import Column, Table
from salbench.stages.report import collect_manifests, load_curves, load_per_image, mean_curves
from salbench.store.results import RESULT_COLUMNS, read_results

DATA = Path(__file__).parent / "data" / "results_small.csv"


@pytest.fixture(scope="module")
def small_tables() -> dict[str, Table | None]:
    return build_tables(read_results(DATA))


@pytest.fixture(scope="module")
def paper() -> pd.DataFrame:
    """The published numbers as results rows (natural units): every claim holds on them."""
    return published_as_results(load_published())


def _with(frame: pd.DataFrame, value: float, **where: str) -> pd.DataFrame:
    """A copy of ``frame`` with ``value`` set on the rows matching ``where``."""
    out = frame.copy()
    mask = np.ones(len(out), dtype=bool)
    for column, wanted in where.items():
        mask &= (out[column] == wanted).to_numpy()
    assert mask.sum() == 1, where
    out.loc[mask, "value"] = value
    return out


# ----------------------------------------------------------------------------- tables: exact output

TABLE1_CSV = """\
family,method,label,AI,AD_bar,AG,I,D_bar,Monotonicity
Uninformed,fakecam,Fake-CAM,47.3,99.2,1.6,60.1,61.6,0.57
Gradient,gradient_smoothgrad,Gradient,2.2,4.0,0.0,51.4,81.3,-0.19
CAM,gradcam,Grad-CAM,44.4,87.6,17.8,66.8,86.8,0.53
Occlusion,rise,RISE,39.0,86.0,13.9,65.0,80.4,0.35
"""
TABLE1_MD = """\
| Family | Method | AI | AD-bar | AG | I | D-bar | Monotonicity |
|:--|:--|--:|--:|--:|--:|--:|--:|
| Uninformed | Fake-CAM | **47.3** | **99.2** | 1.6 | 60.1 | 61.6 | **0.57** |
| Gradient | Gradient | 2.2 | 4.0 | 0.0 | 51.4 | 81.3 | -0.19 |
| CAM | Grad-CAM | 44.4 | 87.6 | **17.8** | **66.8** | **86.8** | 0.53 |
| Occlusion | RISE | 39.0 | 86.0 | 13.9 | 65.0 | 80.4 | 0.35 |
"""
TABLE2_CSV = """\
family,method,label,groundtruth_AI,groundtruth_AD_bar,groundtruth_AG,groundtruth_I,groundtruth_D_bar,\
predicted_AI,predicted_AD_bar,predicted_AG,predicted_I,predicted_D_bar
Uninformed,fakecam,Fake-CAM,47.3,99.2,1.6,60.1,61.6,46.8,99.5,1.8,66.9,57.4
Gradient,gradient_smoothgrad,Gradient,2.2,4.0,0.0,51.4,81.3,0.1,0.7,0.0,55.8,78.3
CAM,gradcam,Grad-CAM,44.4,87.6,17.8,66.8,86.8,38.7,85.9,18.7,75.2,85.7
Occlusion,rise,RISE,39.0,86.0,13.9,65.0,80.4,27.1,79.6,12.1,71.9,79.5
"""
TABLE2_MD = """\
| Family | Method | GT AI | GT AD-bar | GT AG | GT I | GT D-bar | \
Pred AI | Pred AD-bar | Pred AG | Pred I | Pred D-bar |
|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|
| Uninformed | Fake-CAM | **47.3** | **99.2** | 1.6 | 60.1 | 61.6 | **46.8** | **99.5** | 1.8 | 66.9 | 57.4 |
| Gradient | Gradient | 2.2 | 4.0 | 0.0 | 51.4 | 81.3 | 0.1 | 0.7 | 0.0 | 55.8 | 78.3 |
| CAM | Grad-CAM | 44.4 | 87.6 | **17.8** | **66.8** | **86.8** | \
38.7 | 85.9 | **18.7** | **75.2** | **85.7** |
| Occlusion | RISE | 39.0 | 86.0 | 13.9 | 65.0 | 80.4 | 27.1 | 79.6 | 12.1 | 71.9 | 79.5 |
"""
# AS 0.957 prints 0.96; Complexity 10.46 prints 10.5 and ties with 10.5: both bold.
TABLE3_CSV = """\
family,method,label,MS,AS,Sparseness,Complexity,EC
Uninformed,fakecam,Fake-CAM,0.96,0.96,0.0,10.8,50175.0
Gradient,gradient_smoothgrad,Gradient,0.93,0.91,42.4,10.5,50174.9
CAM,gradcam,Grad-CAM,0.92,0.92,39.6,10.5,49540.4
Occlusion,rise,RISE,0.93,0.92,26.0,10.7,50175.0
"""
TABLE3_MD = """\
| Family | Method | MS | AS | Sparseness | Complexity | EC |
|:--|:--|--:|--:|--:|--:|--:|
| Uninformed | Fake-CAM | 0.96 | 0.96 | 0.0 | 10.8 | 50175.0 |
| Gradient | Gradient | 0.93 | **0.91** | **42.4** | **10.5** | 50174.9 |
| CAM | Grad-CAM | **0.92** | 0.92 | 39.6 | **10.5** | **49540.4** |
| Occlusion | RISE | 0.93 | 0.92 | 26.0 | 10.7 | 50175.0 |
"""
# Means over seed32/seed44, e.g. Fake-CAM AI (0.48 + 0.50) / 2 = 0.49 -> 49.0; RISE has seed32 only.
TABLE4_CSV = """\
family,method,label,mixup_AI,mixup_AD_bar,mixup_AG,mixup_I,mixup_D_bar
Uninformed,fakecam,Fake-CAM,49.0,97.8,0.6,20.9,86.6
CAM,gradcam,Grad-CAM,65.0,84.8,7.0,25.1,96.3
Occlusion,rise,RISE,55.7,79.6,5.3,22.1,93.7
"""
TABLE4_MD = """\
| Family | Method | MixUp AI | MixUp AD-bar | MixUp AG | MixUp I | MixUp D-bar |
|:--|:--|--:|--:|--:|--:|--:|
| Uninformed | Fake-CAM | 49.0 | **97.8** | 0.6 | 20.9 | 86.6 |
| CAM | Grad-CAM | **65.0** | 84.8 | **7.0** | **25.1** | **96.3** |
| Occlusion | RISE | 55.7 | 79.6 | 5.3 | 22.1 | 93.7 |
"""
TABLE4_TEX = r"""\begin{table}[ht]
\centering
\caption{Table 4. Recognition metrics under augmentations (ground-truth targets, mean over variants)}
\label{tab:table4}
\begin{tabular}{llrrrrr}
\toprule
 &  & \multicolumn{5}{c}{MixUp} \\
\cmidrule(lr){3-7}
Family & Method & AI & $\overline{\mathrm{AD}}$ & AG & I & $\overline{\mathrm{D}}$ \\
\midrule
Uninformed & Fake-CAM & 49.0 & \textbf{97.8} & 0.6 & 20.9 & 86.6 \\
\midrule
CAM & Grad-CAM & \textbf{65.0} & 84.8 & \textbf{7.0} & \textbf{25.1} & \textbf{96.3} \\
\midrule
Occlusion & RISE & 55.7 & 79.6 & 5.3 & 22.1 & 93.7 \\
\bottomrule
\end{tabular}
\end{table}
"""
VARIANTS_CSV = """\
augmentation,variant,family,method,label,AI,AD_bar,AG,I,D_bar
mixup,seed32,Uninformed,fakecam,Fake-CAM,48.0,98.0,0.6,21.0,87.0
mixup,seed32,CAM,gradcam,Grad-CAM,64.0,85.0,7.0,25.0,96.0
mixup,seed32,Occlusion,rise,RISE,55.7,79.6,5.3,22.1,93.7
mixup,seed44,Uninformed,fakecam,Fake-CAM,50.0,97.6,0.6,20.8,86.2
mixup,seed44,CAM,gradcam,Grad-CAM,66.0,84.6,7.0,25.2,96.6
"""
VARIANTS_MD = """\
| Setting | Method | AI | AD-bar | AG | I | D-bar |
|:--|:--|--:|--:|--:|--:|--:|
| MixUp seed32 | Fake-CAM | 48.0 | **98.0** | 0.6 | 21.0 | 87.0 |
|  | Grad-CAM | **64.0** | 85.0 | **7.0** | **25.0** | **96.0** |
|  | RISE | 55.7 | 79.6 | 5.3 | 22.1 | 93.7 |
| MixUp seed44 | Fake-CAM | 50.0 | **97.6** | 0.6 | 20.8 | 86.2 |
|  | Grad-CAM | **66.0** | 84.6 | **7.0** | **25.2** | **96.6** |
"""


@pytest.mark.parametrize(
    "name, csv_text, markdown",
    [
        ("table1", TABLE1_CSV, TABLE1_MD),
        ("table2", TABLE2_CSV, TABLE2_MD),
        ("table3", TABLE3_CSV, TABLE3_MD),
        ("table4", TABLE4_CSV, TABLE4_MD),
        ("table4_variants", VARIANTS_CSV, VARIANTS_MD),
    ],
)
def test_tables_from_small_results_exact(small_tables, name, csv_text, markdown):
    table = small_tables[name]
    assert to_csv(table) == csv_text
    assert to_markdown(table) == markdown


def test_table4_latex_and_notes_exact(small_tables):
    assert to_latex(small_tables["table4"]) == TABLE4_TEX
    assert "MixUp: fewer than 2 variants for RISE" in small_tables["table4"].notes
    assert "least likely targets: not computed in this run" in small_tables["table2"].notes
    assert small_tables["supplement"] is None  # no localization / completeness rows


def test_table2_latex_groups(small_tables):
    tex = to_latex(small_tables["table2"])
    assert r" &  & \multicolumn{5}{c}{Ground truth} & \multicolumn{5}{c}{Predicted} \\" in tex
    assert r"\cmidrule(lr){3-7} \cmidrule(lr){8-12}" in tex
    assert r"Uninformed & Fake-CAM & \textbf{47.3} & \textbf{99.2} & 1.6 & 60.1 & 61.6 & \textbf{46.8}" in tex


def test_presentation_conventions():
    ad, d, ai, ms = COLUMNS["AD_bar"], COLUMNS["D_bar"], COLUMNS["AI"], COLUMNS["MS"]
    assert ad.present(0.008) == pytest.approx(99.2) and ad.unpresent(99.2) == pytest.approx(0.008)
    assert d.present(0.25) == 75.0 and ai.present(0.473) == pytest.approx(47.3) and ms.present(0.93) == 0.93
    # bars flip the direction of a lower-is-better fraction; raw columns keep it
    assert ad.presented_higher_is_better(False) is True and ms.presented_higher_is_better(False) is False
    one = Column("x", "x", "x", 1, True)
    assert (one.format(-0.04), one.format(10.46), one.format(math.nan), one.format(-0.19)) == (
        "0.0",
        "10.5",
        "",
        "-0.2",
    )
    assert [COLUMNS[k].decimals for k in ("AI", "Monotonicity", "MS", "AS", "Complexity", "EC")] == [
        1,
        2,
        2,
        2,
        1,
        1,
    ]


def test_method_registry_order_and_labels():
    ids = [
        "casme",
        "random",
        "unknown_method",
        "lime",
        "gradient_jacobgil",
        "gradcam",
        "gradient_smoothgrad",
        "fakecam",
    ]
    assert method_order(ids) == [
        "fakecam",
        "gradient_smoothgrad",
        "gradient_jacobgil",
        "gradcam",
        "lime",
        "casme",
        "random",
        "unknown_method",
    ]
    assert (
        method_display("guided_backprop_smoothgrad").label,
        method_display("guided_backprop").published,
    ) == (
        "GuidedBP",
        "guided_backprop",
    )
    assert not method_display("edge").compared and method_display("edge").family == "Control"
    assert method_display("unknown_method").family == "Other"


def test_best_direction_comes_from_results(tmp_path):
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    # Monotonicity declared lower-is-better: the bold moves from 0.57 (Fake-CAM) to -0.19 (Gradient)
    frame.loc[frame["metric"] == "monotonicity", "higher_is_better"] = "false"
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    table = build_tables(read_results(path))["table1"]
    best = table.best()
    assert best["Monotonicity"].tolist() == [False, True, False, False]
    # AD is lower-is-better raw; AD-bar bold is the largest bar = the smallest drop (Fake-CAM, 0.008)
    assert best["AD_bar"].tolist() == [True, False, False, False]


def test_read_results_errors(tmp_path):
    text = DATA.read_text().splitlines()
    bad_value = tmp_path / "bad_value.csv"
    bad_value.write_text("\n".join([*text[:3], text[3].replace("0.016", "abc"), *text[4:]]) + "\n")
    with pytest.raises(DataError, match=r"bad_value\.csv:4: column 'value' is not a number"):
        read_results(bad_value)
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([*text, text[1]]) + "\n")
    with pytest.raises(DataError, match=r"dup\.csv:91: a second row"):
        read_results(dup)
    missing = tmp_path / "missing.csv"
    missing.write_text("model,value\nx,1\n")
    with pytest.raises(DataError, match="missing column"):
        read_results(missing)
    with pytest.raises(DataError, match="not found"):
        read_results(tmp_path / "nope.csv", missing_ok=False)


# ----------------------------------------------------------------------------- published numbers


def test_published_roundtrip_reproduces_the_paper(paper):
    """The paper's numbers -> results rows -> our tables print exactly the paper's numbers again."""
    published = load_published()
    comparison = compare(build_tables(paper), published)
    assert len(comparison) == len(published) == 460
    off = comparison[comparison["difference"] != 0]
    # The paper itself prints IG / ground truth I as 53.5 in Table 1 and 53.4 in Table 2.
    assert off[["table", "method", "label_set", "metric", "difference"]].values.tolist() == [
        ["table2", "integrated_gradients", "groundtruth", "I", 0.1]
    ]
    flagged = comparison[comparison["flag"] != ""]
    assert sorted(flagged["metric"]) == ["AD_bar", "AG"] and set(flagged["augmentation"]) == {"resize"}


def _study_copy(tmp_path: Path) -> Path:
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    frame["model"], frame["dataset"] = "resnet50", "imagenet"
    path = tmp_path / "study" / "results.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    return path


def test_published_side_by_side_only_for_study_configuration(tmp_path):
    embedded = build_report(DATA, tmp_path / "embedded")
    text = embedded.read_text()
    assert "Not shown: this run is embedded_resnet on embedded" in text
    assert not (tmp_path / "embedded" / "tables" / "published_comparison.csv").exists()

    study = build_report(_study_copy(tmp_path), tmp_path / "study_report")
    text = study.read_text()
    assert "Not shown" not in text
    assert "| Fake-CAM | 47.3 / 47.3 (+0.0) | 99.2 / 99.2 (+0.0) |" in text
    assert "| Grad-CAM | 65.0 / 64.8 (+0.2) |" in text  # Table 4 MixUp AI: ours 65.0 vs paper 64.8
    assert "2.0† (" in text or "n/a / 2.0†" in text  # the suspect Fake-CAM / Resize values are flagged
    comparison = pd.read_csv(tmp_path / "study_report" / "tables" / "published_comparison.csv")
    row = comparison[(comparison["table"] == "table1") & (comparison["method"] == "gradcam")]
    assert row.set_index("metric").loc["AI", ["ours", "published", "difference"]].tolist() == [
        44.4,
        44.4,
        0.0,
    ]
    assert comparison["ours"].isna().sum() > 0  # methods the small run lacks (IG, LIME, ...)


# ----------------------------------------------------------------------------- claims


def test_claims_hold_on_the_published_numbers(paper):
    results = evaluate_claims(paper)
    assert [r.holds for r in results] == [True, True, True, True, True]
    first = results[0].numbers
    # AI: Score-CAM 50.0 > Fake-CAM 47.3; AG: 2.9, 21.7, 17.8, 16.3, 14.5, 13.9 above 1.6 -> rank 7 of 10
    assert (first["AI_rank"], first["AD_bar_rank"], first["AG_rank"], first["I_rank"], first["AI_top"]) == (
        2,
        1,
        7,
        7,
        4,
    )
    assert results[1].numbers["D_bar_min"] == pytest.approx(100.0)
    assert results[2].numbers["AI_gradient_best"] == pytest.approx(2.6)
    assert results[2].numbers["AI_others_worst"] == pytest.approx(9.7)


def test_claim_fakecam_both_outcomes(paper):
    assert claim_fakecam_top(paper).holds is True
    strong_gain = _with(
        paper, 0.5, method="fakecam", label_set="groundtruth", augmentation="none", metric="average_gain"
    )
    result = claim_fakecam_top(strong_gain)
    assert result.holds is False and result.numbers["AG_rank"] == 1
    assert claim_fakecam_top(paper[paper["method"] != "fakecam"]).holds is None


def test_claim_least_likely_both_outcomes(paper):
    assert claim_least_likely(paper).holds is True
    leaky = _with(paper, 0.05, method="gradcam", label_set="least", metric="insertion")
    result = claim_least_likely(leaky)
    assert result.holds is False and "Grad-CAM I 5.0" in result.evidence
    assert result.numbers["I_max"] == pytest.approx(5.0)
    assert claim_least_likely(paper[paper["label_set"] != "least"]).holds is None
    assert claim_least_likely(leaky, ClaimThresholds(least_i_max=6.0)).holds is True


def test_claim_gradients_both_outcomes(paper):
    assert claim_gradients_lowest(paper).holds is True
    high = _with(
        paper, 0.5, method="gradient", label_set="groundtruth", augmentation="none", metric="average_increase"
    )
    result = claim_gradients_lowest(high)
    assert result.holds is False and result.numbers["AI_gradient_best"] == pytest.approx(50.0)
    no_gradients = paper[~paper["method"].isin(["gradient", "integrated_gradients", "guided_backprop"])]
    assert claim_gradients_lowest(no_gradients).holds is None


def _near_equal_rows(values: list[float]) -> pd.DataFrame:
    methods = ["fakecam", "gradcam", "gradcampp", "scorecam", "rise", "lime"]
    rows = [
        {"method": m, "metric": metric, "value": v}
        for m, v in zip(methods, values)
        for metric in ("max_sensitivity", "avg_sensitivity", "complexity", "effective_complexity")
    ]
    frame = pd.DataFrame(rows)
    frame["label_set"], frame["augmentation"], frame["variant"] = "groundtruth", "none", "none"
    frame["higher_is_better"] = False
    return frame


def test_claim_near_equal_both_outcomes():
    # extremes 0.1 and 9.0 are dropped; the kept 1.0, 1.0, 1.1, 0.9 have CV = 0.0707 / 1.0
    result = claim_near_equal(_near_equal_rows([0.1, 1.0, 1.0, 1.1, 0.9, 9.0]))
    assert result.holds is True
    assert result.numbers["MS_cv"] == pytest.approx(np.std([1.0, 1.0, 1.1, 0.9]) / 1.0)
    spread = claim_near_equal(_near_equal_rows([0.1, 0.5, 1.0, 1.5, 2.0, 9.0]))
    assert spread.holds is False and spread.numbers["EC_cv"] == pytest.approx(
        np.std([0.5, 1.0, 1.5, 2.0]) / 1.25
    )
    assert claim_near_equal(_near_equal_rows([1.0, 1.0, 1.0])).holds is None  # 3 methods < 2 trim + 2


def _shift_rows(delta: float) -> pd.DataFrame:
    """Two methods, un-augmented values 0.5 for every recognition metric, MixUp values 0.5 + delta."""
    rows = []
    for method in ("fakecam", "gradcam"):
        for metric in ("average_increase", "average_drop", "average_gain", "insertion", "deletion"):
            rows.append(
                {"augmentation": "none", "variant": "none", "method": method, "metric": metric, "value": 0.5}
            )
            for variant, d in (("seed32", delta - 0.01), ("seed44", delta + 0.01)):
                rows.append(
                    {
                        "augmentation": "mixup",
                        "variant": variant,
                        "method": method,
                        "metric": metric,
                        "value": 0.5 + d,
                    }
                )
    frame = pd.DataFrame(rows)
    frame["label_set"], frame["higher_is_better"] = "groundtruth", None
    return frame


def test_claim_augmentation_shift_both_outcomes(paper):
    big = claim_augmentation_shift(_shift_rows(0.08))  # every presented value moves by 8 points
    assert big.holds is True and big.numbers["mixup_mean_abs_change"] == pytest.approx(8.0)
    small = claim_augmentation_shift(_shift_rows(0.02))
    assert small.holds is False and small.numbers["mixup_mean_abs_change"] == pytest.approx(2.0)
    assert claim_augmentation_shift(_shift_rows(0.02)[lambda f: f["augmentation"] == "none"]).holds is None
    assert claim_augmentation_shift(paper).numbers["crop_mean_abs_change"] > 5.0


# ----------------------------------------------------------------------------- figures and inputs


def _per_image() -> pd.DataFrame:
    rows = []
    probs = [0.05, 0.15, 0.12, 0.95, 1.0]
    for m, method in enumerate(("fakecam", "gradcam", "rise")):
        for i, p in enumerate(probs):
            rows.append(
                {
                    "model": "embedded_resnet",
                    "label_set": "groundtruth",
                    "method": method,
                    "image_id": f"img{i}",
                    "base_prob": p,
                    "masked_prob": p,
                    "average_drop": 0.1 * i,
                    "average_increase": float(i % 2),
                    "average_gain": 0.1 * m,
                    "insertion": 0.2 * i,
                    "deletion": 0.5,
                }
            )
    return pd.DataFrame(rows)


def _assert_png(path: Path, min_side: int = 300) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= min_side and max(img.size) < 6000


def test_binned_means_exact():
    means = binned_means(_per_image(), n_bins=10)
    fake = means[means["method"] == "fakecam"].set_index("bin")
    # bins: 0.05 -> 0; 0.15 and 0.12 -> 1; 0.95 and 1.0 -> 9 (the last bin includes 1)
    assert fake["count"].to_dict() == {0: 1, 1: 2, 9: 2}
    assert fake.loc[1, "centre"] == pytest.approx(0.15)
    assert fake.loc[1, "AD_bar"] == pytest.approx(100 - 100 * (0.1 + 0.2) / 2)  # images 1 and 2
    assert fake.loc[9, "I"] == pytest.approx(100 * (0.6 + 0.8) / 2)
    assert means[means["method"] == "rise"]["AG"].tolist() == pytest.approx([20.0, 20.0, 20.0])
    assert len(binned_means(_per_image(), n_bins=10, min_count=2)) == 6


def test_rank_agreement_orients_by_direction():
    values = pd.DataFrame(
        {"AI": [1.0, 2.0, 3.0, 4.0], "MS": [4.0, 3.0, 2.0, 1.0], "I": [1.0, 3.0, 2.0, np.nan]},
        index=["a", "b", "c", "d"],
    )
    tau = rank_agreement(values, {"AI": True, "MS": False, "I": True})
    # MS is lower-is-better: ranking reversed values = the same ranking as AI
    assert tau.loc["AI", "MS"] == pytest.approx(1.0) and tau.loc["AI", "AI"] == pytest.approx(1.0)
    assert tau.loc["AI", "I"] == pytest.approx(1.0 / 3.0)  # over a, b, c: 2 concordant, 1 discordant pair
    short = rank_agreement(values.iloc[:2], {"AI": True, "MS": False, "I": True})
    assert short.isna().all().all()


def test_figures_are_valid_pngs(tmp_path):
    per_image = _per_image()
    _assert_png(figure2(per_image, tmp_path / "figure2.png"))
    curves = pd.concat(
        [
            mean_curves(m, {"insertion": np.linspace(0, 1, 8)[None], "deletion": np.linspace(1, 0, 8)[None]})
            for m in ("rise", "fakecam")
        ]
    )
    _assert_png(figure_curves(curves, tmp_path / "curves.png"))
    values = pd.DataFrame({"AI": [1.0, 2.0, 3.0], "AG": [3.0, 1.0, 2.0]}, index=["a", "b", "c"])
    _assert_png(
        figure_rank_agreement(rank_agreement(values, {"AI": True, "AG": True}), tmp_path / "tau.png"), 150
    )
    rng = np.random.default_rng(0)
    images = {f"img{i}": rng.uniform(size=(16, 16, 3)) for i in range(5)}
    maps = {m: {k: rng.uniform(size=(8, 8)) for k in images} for m in ("gradcam", "fakecam")}
    picks = pick_best_worst(per_image)
    # AD lower is better: best = img0 (AD 0), worst = img4; insertion higher is better: best img4
    assert picks["average_drop"] == ("img0", "img4") and picks["insertion"] == ("img4", "img0")
    _assert_png(figure1(images, maps, picks, tmp_path / "figure1.png"))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_mean_curves_and_loaders(tmp_path):
    ev = tmp_path / "embedded_resnet" / "evaluation" / "groundtruth"
    ev.mkdir(parents=True)
    per_image = _per_image()
    for method, part in per_image.groupby("method"):
        part.drop(columns=["model", "label_set", "method"]).to_csv(
            ev / f"{method}_recognition.csv", index=False
        )
    ins = np.array([[0.0, 0.5, 1.0], [0.2, 0.3, 0.4], [np.nan, np.nan, np.nan]])
    np.savez(ev / "gradcam_curves.npz", image_ids=np.array(["a", "b", "c"]), insertion=ins, deletion=1 - ins)
    loaded = load_per_image(tmp_path, ["embedded_resnet"])
    assert sorted(set(loaded["method"])) == ["fakecam", "gradcam", "rise"] and len(loaded) == 15
    curves = load_curves(tmp_path, ["embedded_resnet"])
    insertion = curves[curves["curve"] == "insertion"]
    assert insertion["value"].tolist() == pytest.approx(
        [0.1, 0.4, 0.7]
    )  # the NaN (skipped) image is left out
    assert insertion["fraction"].tolist() == [0.0, 0.5, 1.0] and set(curves["n_images"]) == {2}
    # the band: resampled means of two values a, b are a, (a+b)/2 or b with chances 1/4, 1/2, 1/4, so
    # the 2.5% and 97.5% quantiles of 1,000 resamples are a and b themselves
    assert insertion["ci_low"].tolist() == pytest.approx([0.0, 0.3, 0.4])
    assert insertion["ci_high"].tolist() == pytest.approx([0.2, 0.5, 1.0])
    assert (
        load_per_image(tmp_path, ["other_model"]) is None and load_curves(tmp_path, ["other_model"]) is None
    )
    (tmp_path / "embedded_resnet" / "diagnostics").mkdir()
    (tmp_path / "embedded_resnet" / "diagnostics" / "manifest.json").write_text(
        json.dumps({"stage": "diagnostics"})
    )
    assert collect_manifests(tmp_path) == {
        "embedded_resnet/diagnostics/manifest.json": {"stage": "diagnostics"}
    }
    (ev / "rise_recognition.csv").write_text("image_id,base_prob\nimg0,0.5\n")
    with pytest.raises(DataError, match=r"rise_recognition\.csv: missing column"):
        load_per_image(tmp_path, ["embedded_resnet"])


# ----------------------------------------------------------------------------- report and script


def test_build_report_missing_parts_are_reported(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(RESULT_COLUMNS) + "\n")
    text = build_report(empty, tmp_path / "r0").read_text()
    assert "holds no results" in text and "## Provenance" in (tmp_path / "r0" / "APPENDIX.md").read_text()

    plain = tmp_path / "plain.csv"
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    frame[frame["augmentation"] == "none"].to_csv(plain, index=False)
    text = build_report(plain, tmp_path / "r1", {"timings": {"generation_s": 12.5}}).read_text()
    assert "### Table 4. Recognition metrics under augmentations" in text
    assert (
        text.count("not computed in this run: `results.csv` has no rows for this table.") == 3
    )  # 4, 4 variants, suppl.
    assert (
        "| 5 | Recognition metrics shift" in text
        and "**not computed in this run** | no augmented rows" in text
    )
    assert "Figure 2. AG, AD-bar, I, D-bar against the ground-truth probability y_c: not computed" in text
    assert "| generation_s | 12.5 |" in (tmp_path / "r1" / "APPENDIX.md").read_text()
    assert (tmp_path / "r1" / "tables" / "table1.tex").is_file()
    assert not (tmp_path / "r1" / "tables" / "table4.csv").exists()


def test_build_report_two_configurations_and_figure1(tmp_path):
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    other = frame.copy()
    other["model"] = "embedded_vgg"
    both = tmp_path / "results.csv"
    pd.concat([frame, other]).to_csv(both, index=False)
    rng = np.random.default_rng(1)
    images = {f"img{i}": rng.uniform(size=(12, 12, 3)) for i in range(5)}
    maps = {"gradcam": {k: rng.uniform(size=(12, 12)) for k in images}}
    fig1 = {"embedded_vgg": Figure1Inputs(images, maps, pick_best_worst(_per_image()))}
    text = build_report(both, tmp_path / "report", per_image=_per_image(), figure1_inputs=fig1).read_text()
    assert "## embedded_resnet on embedded (protocol acml2024)" in text
    assert "## embedded_vgg on embedded (protocol acml2024)" in text
    assert (tmp_path / "report" / "tables" / "embedded_vgg__embedded__acml2024" / "table1.csv").is_file()
    _assert_png(tmp_path / "report" / "figures" / "embedded_vgg__embedded__acml2024" / "figure1.png")
    assert not (
        tmp_path / "report" / "figures" / "embedded_resnet__embedded__acml2024" / "figure1.png"
    ).exists()
    # per-image rows belong to embedded_resnet only
    _assert_png(tmp_path / "report" / "figures" / "embedded_resnet__embedded__acml2024" / "figure2.png")
    assert not (tmp_path / "report" / "figures" / "embedded_vgg__embedded__acml2024" / "figure2.png").exists()


def test_report_script_main(tmp_path, capsys):
    root = tmp_path / "run"
    ev = root / "embedded_resnet" / "evaluation" / "groundtruth"
    ev.mkdir(parents=True)
    shutil.copy(DATA, root / "results.csv")
    for method, part in _per_image().groupby("method"):
        part.drop(columns=["model", "label_set", "method"]).to_csv(
            ev / f"{method}_recognition.csv", index=False
        )
    curve = np.linspace(0.0, 1.0, 5)[None].repeat(3, axis=0)
    np.savez(
        ev / "gradcam_curves.npz",
        image_ids=np.array(["a", "b", "c"]),
        insertion=curve,
        deletion=curve[:, ::-1],
    )
    (root / "embedded_resnet" / "diagnostics").mkdir()
    (root / "embedded_resnet" / "diagnostics" / "manifest.json").write_text(
        json.dumps({"stage": "diagnostics", "versions": {"torch": "2.x"}, "seconds": 3.5})
    )
    assert report_script.main(["--output-root", str(root)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(root / "report" / "REPORT.md")
    text = Path(out).read_text()
    assert (
        "![Figure 2. AG, AD-bar, I, D-bar against the ground-truth probability y_c](figures/figure2.png)"
        in text
    )
    assert "![Mean insertion and deletion curves per method](figures/curves.png)" in text
    appendix = (root / "report" / "APPENDIX.md").read_text()  # manifests go to the appendix, linked
    assert "[APPENDIX.md](APPENDIX.md)" in text and "manifest.json" not in text
    assert "#### embedded_resnet/diagnostics/manifest.json" in appendix and '`{"torch": "2.x"}`' in appendix
    first = "\n".join(text.splitlines()[:40])  # the first screen: the claims' verdicts and Table 1
    assert "## Summary" in first and "Claims of the study on this run" in first and "**holds**" in first
    for name in ("figure2", "curves", "rank_agreement"):
        _assert_png(root / "report" / "figures" / f"{name}.png", 150)
    assert json.loads((root / "report" / "manifest.json").read_text())["stage"] == "report"
    assert pd.read_csv(root / "report" / "tables" / "table1.csv")["AI"].tolist() == [47.3, 2.2, 44.4, 39.0]

    assert report_script.main(["--output-root", str(tmp_path / "nothing")]) == 2
    assert "results file" in capsys.readouterr().err


def test_report_script_figure1_from_map_stores(tmp_path, imagenet_fixture, capsys):
    """The script picks best/worst images from the per-image CSVs and reads their pixels and maps."""
    from salbench.store.maps import MapStore

    root = tmp_path / "run"
    ids = [f"val/ILSVRC2012_val_{i + 1:08d}" for i in range(6)]
    ev = root / "embedded_resnet" / "evaluation" / "groundtruth"
    ev.mkdir(parents=True)
    shutil.copy(DATA, root / "results.csv")
    rng = np.random.default_rng(2)
    for method in ("fakecam", "gradcam"):
        per_image = pd.DataFrame(
            {
                "image_id": ids,
                "base_prob": np.linspace(0.1, 0.9, 6),
                "masked_prob": 0.5,
                "average_drop": [0.3, 0.1, 0.5, 0.2, 0.9, 0.4],
                "average_increase": 0.0,
                "average_gain": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                "insertion": 0.5,
                "deletion": 0.5,
            }
        )
        per_image.to_csv(ev / f"{method}_recognition.csv", index=False)
        store = MapStore.open(
            root / "embedded_resnet" / "maps" / "groundtruth" / f"{method}.zarr", ids, (32, 32)
        )
        store.write(np.arange(6), rng.uniform(size=(6, 32, 32)).astype(np.float32))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"run: {{output_root: {root}}}\n"
        f"data: {{kind: imagenet, root: {imagenet_fixture}, list_csv: val_list.csv, resize: 40, crop: 32}}\n"
    )
    assert report_script.main(["--config", str(config)]) == 0
    text = Path(capsys.readouterr().out.strip()).read_text()
    assert "![Figure 1. Best and worst image per metric with every method's map](figures/figure1.png)" in text
    _assert_png(root / "report" / "figures" / "figure1.png")
    # AD lower is better: best = image 2 (0.1), worst = image 5 (0.9); AG best = image 6
    picks = pick_best_worst(pd.read_csv(ev / "gradcam_recognition.csv", dtype={"image_id": str}))
    assert picks["average_drop"] == (ids[1], ids[4]) and picks["average_gain"] == (ids[5], ids[0])


def test_claims_without_any_paper_metric_rows_are_not_computed(paper):
    """A run holding only other rows (e.g. sanity checks) reports every claim as not computed."""
    others = paper.head(3).assign(metric="sanity_ssim", variant="data")
    results = evaluate_claims(others)
    assert [r.holds for r in results] == [None] * 5
    assert all(r.verdict == "not computed in this run" for r in results)
