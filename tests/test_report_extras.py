"""The report's "Further evaluations": sanity checks, Gomez et al.'s metrics and ROAR from results.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from salbench.metrics import METRICS
from salbench.metrics.gomez import FILLINGS
from salbench.metrics.similarity import METRIC_IDS
from salbench.report import build_report
from salbench.report.extras import GOMEZ_COLUMNS, GOMEZ_FILLINGS, roar_verdict
from salbench.report.sanity import SANITY_COLUMNS, block_order, sanity_flags, sanity_verdict
from salbench.report.sections import controls
from salbench.store.results import read_results, upsert_results

SMALL = Path(__file__).parent / "data" / "results_small.csv"
BLOCKS = ("fc", "layer4", "conv1+bn1")  # embedded_resnet's order; alphabetically conv1+bn1 comes first
# Per method: sanity_spearman_abs/sanity_ssim for cascading:fc, :layer4, :conv1+bn1, independent:fc,
# :layer4, :conv1+bn1, data; then sanity_fails under cascading:conv1+bn1 and data.
SANITY = """\
fakecam  1/1 1/1 1/1 1/1 1/1 1/1 1/1  1 1
edge     1/1 1/1 1/1 1/1 1/1 1/1 1/1  1 1
random   1/1 1/1 1/1 1/1 1/1 1/1 1/1  1 1
gradient 0.9/0.8 0.8/0.7 0.7/0.6 0.9/0.8 0.85/0.75 0.95/0.9 0.65/0.55  1 1
gradcam  0.4/0.3 0.2/0.1 0.1/0.05 0.4/0.3 0.5/0.4 0.6/0.5 0.3/0.2  0 0
"""
GOMEZ = {  # metric: (higher_is_better, fakecam, gradcam)
    "iic_black": ("True", 0.25, 0.5),
    "ad_gomez_black": ("False", 0.5, 0.25),
    "add_black": ("True", 0.1, -0.05),
    "dc_black": ("True", 0.123, 0.456),
    "iauc_blur": ("True", 0.6, 0.7),
}
ROAR = {  # method: accuracy per k, roar_mean_accuracy
    "original": ({"k00": 0.9}, None),
    "random": ({"k10": 0.8, "k30": 0.7, "k50": 0.6}, 0.7),
    "gradcam": ({"k10": 0.7, "k30": 0.6, "k50": 0.65}, 0.65),
    "fakecam": ({"k10": 0.85, "k30": 0.75, "k50": 0.55}, 0.7167),
}


FAMILIES = {"fakecam": "Uninformed", "edge": "Control", "random": "Control", "gradient": "Gradient"}


def _row(method: str, variant: str, metric: str, value: float, up: str = "False", **kw) -> dict:
    return {
        "model": kw.get("model", "embedded_resnet"),
        "dataset": "embedded",
        "label_set": "groundtruth",
        "method": method,
        "family": FAMILIES.get(method, "CAM"),
        "augmentation": "none",
        "variant": variant,
        "level": kw.get("level", 0),
        "metric": metric,
        "value": value,
        "n_images": 4,
        "n_skipped": 0,
        "higher_is_better": up,
        "protocol": "acml2024",
    }


def sanity_rows(
    text: str = SANITY, blocks: tuple[str, ...] = BLOCKS, model: str = "embedded_resnet", levels: bool = True
) -> list:
    """Rows as the sanity stage writes them: block ``level`` 1 (output layer) on, 0 for ``data``."""
    variants = [(f"{k}:{b}", i + 1) for k in ("cascading", "independent") for i, b in enumerate(blocks)]
    variants.append(("data", 0))
    rows = []
    for line in text.splitlines():
        method, *cells = line.split()
        for (variant, level), pair in zip(variants, cells):
            for metric, value in zip(("sanity_spearman_abs", "sanity_ssim"), pair.split("/")):
                rows.append(_row(method, variant, metric, float(value), model=model, level=level * levels))
        for variant, value in zip((f"cascading:{blocks[-1]}", "data"), cells[-2:]):
            level = len(blocks) * levels if variant != "data" else 0
            rows.append(_row(method, variant, "sanity_fails", float(value), model=model, level=level))
    return rows


def extra_rows() -> list[dict]:
    rows = sanity_rows()
    for metric, (up, *values) in GOMEZ.items():
        rows += [_row(m, "", metric, v, up) for m, v in zip(("fakecam", "gradcam"), values)]
    for method, (accuracy, mean) in ROAR.items():
        rows += [_row(method, k, "roar_accuracy", v) for k, v in accuracy.items()]
        rows += [_row(method, "", "roar_mean_accuracy", mean)] if mean is not None else []
    return rows


def results_csv(folder: Path, rows: list[dict]) -> Path:
    """results_small.csv plus ``rows``, written the way the stages write it (sorted by key)."""
    path = folder / "results.csv"
    path.write_text(SMALL.read_text())
    upsert_results(path, rows)
    return path


SANITY_MD = """\
| Family | Method | Fails model rand. | Fails data rand. | Model Spearman abs ↓ | Model SSIM ↓ | \
Data Spearman abs ↓ | Data SSIM ↓ |
|:--|:--|:--|:--|--:|--:|--:|--:|
| Uninformed | Fake-CAM (control) | yes | yes | 1.00 | 1.00 | 1.00 | 1.00 |
| Gradient | Gradient | yes | yes | 0.70 | 0.60 | 0.65 | 0.55 |
| CAM | Grad-CAM | no | no | **0.10** | **0.05** | **0.30** | **0.20** |
| Control | Random (control) | yes | yes | 1.00 | 1.00 | 1.00 | 1.00 |
|  | Edge (control) | yes | yes | 1.00 | 1.00 | 1.00 | 1.00 |
"""
SANITY_CSV = """\
family,method,label,fails_model_randomisation,fails_data_randomisation,model_spearman_abs,model_ssim,\
data_spearman_abs,data_ssim
Uninformed,fakecam,Fake-CAM (control),yes,yes,1.00,1.00,1.00,1.00
Gradient,gradient,Gradient,yes,yes,0.70,0.60,0.65,0.55
CAM,gradcam,Grad-CAM,no,no,0.10,0.05,0.30,0.20
Control,random,Random (control),yes,yes,1.00,1.00,1.00,1.00
Control,edge,Edge (control),yes,yes,1.00,1.00,1.00,1.00
"""
SANITY_VERDICT = """\
- **Controls.** Fake-CAM, Random, Edge do not depend on the model, so randomising it cannot change them \
and the check must flag them (lowest similarity at any randomised block: 1.00).
- **Model randomisation** flags every control: the check is trustworthy on this run. Methods that behave \
like the controls (fail): Gradient; pass: Grad-CAM.
- **Data randomisation** flags every control: the check is trustworthy on this run. Methods that behave \
like the controls (fail): Gradient; pass: Grad-CAM.
"""
# ADD -0.05 -> -5.0 (x100, signed); DC 0.123 -> 0.12 (raw); AD lower is better, so 25.0 is bold.
GOMEZ_MD = """\
| Family | Method | IIC (black) ↑ | AD (black) ↓ | ADD (black) ↑ | DC (black) ↑ | IAUC (blur) ↑ |
|:--|:--|--:|--:|--:|--:|--:|
| Uninformed | Fake-CAM | 25.0 | 50.0 | **10.0** | 0.12 | 60.0 |
| CAM | Grad-CAM | **50.0** | **25.0** | -5.0 | **0.46** | **70.0** |
"""
GOMEZ_CSV = """\
family,method,label,iic_black,ad_gomez_black,add_black,dc_black,iauc_blur
Uninformed,fakecam,Fake-CAM,25.0,50.0,10.0,0.12,60.0
CAM,gradcam,Grad-CAM,50.0,25.0,-5.0,0.46,70.0
"""
ROAR_MD = """\
| Family | Method | k=0% ↓ | k=10% ↓ | k=30% ↓ | k=50% ↓ | Mean ↓ |
|:--|:--|--:|--:|--:|--:|--:|
| Reference | Original (nothing removed) | **90.0** | n/a | n/a | n/a | n/a |
| Uninformed | Fake-CAM | n/a | 85.0 | 75.0 | **55.0** | 71.7 |
| CAM | Grad-CAM | n/a | **70.0** | **60.0** | 65.0 | **65.0** |
| Control | Random | n/a | 80.0 | 70.0 | 60.0 | 70.0 |
"""
ROAR_CSV = """\
family,method,label,k00,k10,k30,k50,mean
Reference,original,Original (nothing removed),90.0,,,,
Uninformed,fakecam,Fake-CAM,,85.0,75.0,55.0,71.7
CAM,gradcam,Grad-CAM,,70.0,60.0,65.0,65.0
Control,random,Random,,80.0,70.0,60.0,70.0
"""
ROAR_VERDICT = (
    "Lower accuracy than the random-map control at most k (beats random; k where lower, of k compared): "
    "Grad-CAM (2 of 3). Does not beat it: Fake-CAM (1 of 3)."
)


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def test_further_evaluations_section_exact(tmp_path):
    out = tmp_path / "report"
    text = build_report(results_csv(tmp_path, extra_rows()), out).read_text()
    section = text.split("### Further evaluations\n", 1)[1].split("## Provenance", 1)[0]
    heads = [line for line in section.splitlines() if line.startswith("####")]
    assert heads == [
        "#### Sanity checks, ground truth targets",
        "#### Gomez et al. metrics, ground truth targets",
        "#### ROAR, ground truth maps",
    ]
    for name, markdown, csv in (
        ("sanity_groundtruth", SANITY_MD, SANITY_CSV),
        ("gomez_groundtruth", GOMEZ_MD, GOMEZ_CSV),
        ("roar_groundtruth", ROAR_MD, ROAR_CSV),
    ):
        assert markdown in section
        assert (out / "tables" / f"{name}.md").read_text() == markdown
        assert (out / "tables" / f"{name}.csv").read_text() == csv
        assert r"\begin{tabular}" in (out / "tables" / f"{name}.tex").read_text()
    assert SANITY_VERDICT in section
    assert ROAR_VERDICT in section
    assert "(`conv1+bn1` last)" in section and "over 4 images" in section
    assert "controls grey and dashed (the unchanged controls coincide at 1)*" in section
    assert "Caution" not in section  # every re-training with pixels removed is below the 90% reference
    assert r"$k=10\%$ $\downarrow$" in (out / "tables" / "roar_groundtruth.tex").read_text()
    for name in ("sanity_cascade_groundtruth", "roar_groundtruth"):
        assert f"](figures/{name}.png)" in section
        width, height = _png_size(out / "figures" / f"{name}.png")
        assert width > 600 and height > 400
    # the paper's tables are untouched by the extra rows
    assert "| Uninformed | Fake-CAM | **47.3** | **99.2** | 1.6 | 60.1 | 61.6 | **0.57** |" in text


def test_report_without_extra_rows_has_no_section(tmp_path):
    out = tmp_path / "report"
    text = build_report(SMALL, out).read_text()
    assert "Further evaluations" not in text and "Sanity checks" not in text and "ROAR" not in text
    assert not list((out / "tables").glob("sanity_*")) and not list((out / "figures").glob("roar_*"))

    # only ROAR rows: that subsection alone
    roar = [r for r in extra_rows() if r["metric"].startswith("roar_")]
    text = build_report(results_csv(tmp_path, roar), tmp_path / "r2").read_text()
    assert "#### ROAR, ground truth maps" in text and "Sanity checks" not in text and "Gomez" not in text


def _flags(text: str, blocks: tuple[str, ...] = BLOCKS) -> pd.DataFrame:
    frame = pd.DataFrame(sanity_rows(text, blocks))
    return sanity_flags(frame, f"cascading:{blocks[-1]}")


def test_controls_not_flagged_make_the_check_untrustworthy():
    lines = SANITY.splitlines()
    lines[2] = "random   1/1 1/1 0.3/0.2 1/1 1/1 1/1 0.4/0.3  0 1"  # a control that passes model rand.
    flags = _flags("\n".join(lines))
    # rows: fakecam, gradient, gradcam, random, edge
    assert flags["fails_model"].tolist() == [True, True, False, False, True]
    assert flags.loc[flags["method"] == "random", "lowest"].item() == 0.2
    verdict = "\n".join(sanity_verdict(flags))
    assert "lowest similarity at any randomised block: 0.20" in verdict
    assert (
        "- **Model randomisation** does **not** flag Random: the check is not trustworthy on this run. "
        "Methods that behave like the controls (fail): Gradient; pass: Grad-CAM." in verdict
    )
    assert "- **Data randomisation** flags every control: the check is trustworthy" in verdict

    no_controls = _flags("\n".join(SANITY.splitlines()[3:]))
    assert sanity_verdict(no_controls)[0].startswith("No model-free control (Fake-CAM, Edge, Random)")

    # data randomisation not run: no verdict on it
    frame = pd.DataFrame(sanity_rows())
    frame = frame[frame["variant"] != "data"]
    verdict = "\n".join(sanity_verdict(sanity_flags(frame, "cascading:conv1+bn1")))
    assert "Model randomisation" in verdict and "Data randomisation" not in verdict


def test_block_order_from_levels_and_from_rows(tmp_path):
    path = results_csv(tmp_path, sanity_rows())
    rows = read_results(path)
    assert rows["variant"].iloc[-3:].tolist() != list(BLOCKS)  # the file's order is by key, not by block
    assert block_order(rows[rows["metric"].str.startswith("sanity")]) == (list(BLOCKS), True)

    # a file without levels: cascading = independent only at the output block; deepest from sanity_fails
    vgg = ("classifier", "features.8", "features.4", "features.0")
    text = (
        "fakecam 1/1 1/1 1/1 1/1 1/1 1/1 1/1 1/1 1/1  1 1\n"
        "gradcam 0.5/0.5 0.4/0.4 0.3/0.3 0.2/0.2 0.5/0.5 0.6/0.6 0.7/0.7 0.8/0.8 0.1/0.1  0 0\n"
    )
    frame = pd.DataFrame(sanity_rows(text, vgg, model="toy_net", levels=False))
    assert block_order(frame.iloc[::-1]) == (list(vgg), False)
    assert block_order(pd.DataFrame(sanity_rows(text, vgg, model="toy_net"))) == (list(vgg), True)


def test_roar_without_random_control():
    rows = pd.DataFrame(
        [r for r in extra_rows() if r["metric"] == "roar_accuracy" and r["method"] != "random"]
    )
    assert roar_verdict(rows)[0].startswith("No random-map control in the ROAR rows")
    ties = pd.DataFrame(
        [_row("random", "k10", "roar_accuracy", 0.5), _row("gradcam", "k10", "roar_accuracy", 0.5)]
    )
    assert roar_verdict(ties)[0] == (
        "Lower accuracy than the random-map control at most k (beats random; k where lower, of k compared): "
        "none. Does not beat it: Grad-CAM (0 of 1)."  # equal is not lower
    )
    # re-trainings at least as accurate as the one with nothing removed: removal did not hurt
    chance = pd.concat([ties, pd.DataFrame([_row("original", "k00", "roar_accuracy", 0.5)])])
    assert roar_verdict(chance)[0].endswith(
        "Caution: 2 of 2 re-trainings with pixels removed are at least as accurate as the one with nothing "
        "removed (50.0%): removing pixels did not lower the accuracy there, so those differences reflect "
        "re-training noise, not the maps."
    )


def test_ids_match_the_stages():
    assert [c.metric for c in SANITY_COLUMNS] == list(METRIC_IDS)
    assert GOMEZ_FILLINGS == FILLINGS
    for column in GOMEZ_COLUMNS:
        name, filling = column.metric.rsplit("_", 1)
        assert filling in FILLINGS and METRICS.get(name).higher_is_better == column.higher_is_better
    assert len({c.metric for c in GOMEZ_COLUMNS}) == 14
    frame = pd.DataFrame(extra_rows())
    assert controls(frame) == {"fakecam", "edge", "random"}  # from the recorded families
    assert controls(frame.drop(columns="family")) == {"fakecam", "edge", "random"}  # older files: the paper


def test_missing_fails_row_reads_not_recorded():
    frame = pd.DataFrame(sanity_rows())
    frame = frame[~((frame["metric"] == "sanity_fails") & (frame["method"] == "edge"))]
    flags = sanity_flags(frame, "cascading:conv1+bn1")
    assert flags.loc[flags["method"] == "edge", "fails_model"].item() is None
    verdict = "\n".join(sanity_verdict(flags))
    assert "flags Fake-CAM, Random, not recorded for Edge." in verdict
