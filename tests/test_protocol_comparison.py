"""Two protocols side by side: the differences, their tests, the rank agreement, the compare command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from salbench.report.protocols import protocol_differences
from salbench.stats import summarise_mean
from salbench.store.results import upsert_results

N = 16
IDS = [f"img{k:02d}" for k in range(N)]


def _run(protocol: str, shift: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Insertion and sparseness of three methods on 16 images; ``shift`` moves a method's insertion."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.3, 0.5, N)
    rows, per_image = [], []
    for k, method in enumerate(("gradcam", "rise", "gradient")):
        insertion = base + 0.1 * (2 - k) + shift.get(method, 0.0) + 0.001 * np.arange(N)
        for metric, values in (("insertion", insertion), ("sparseness", np.full(N, 0.2 + 0.1 * k))):
            s = summarise_mean(values)
            rows.append(
                {
                    "model": "m",
                    "dataset": "d",
                    "label_set": "groundtruth",
                    "method": method,
                    "augmentation": "none",
                    "variant": "none",
                    "metric": metric,
                    "value": float(values.mean()),
                    "n_images": N,
                    "n_skipped": 0,
                    "higher_is_better": True,
                    "protocol": protocol,
                    **s.columns(),
                }
            )
        per_image.append(
            pd.DataFrame(
                {"label_set": "groundtruth", "method": method, "image_id": IDS, "insertion": insertion}
            )
        )
    return pd.DataFrame(rows), pd.concat(per_image, ignore_index=True)


def test_differences_are_paired_on_images_and_ranks_compared():
    a, per_a = _run("acml2024", {})
    b, per_b = _run("reference", {"rise": 0.3})  # RISE +30 points on every image: now first
    cells, ranks = protocol_differences(a, b, per_a, per_b)
    ins = cells[cells["metric"] == "insertion"].set_index("method")
    assert ins.loc["rise", "difference"] == pytest.approx(30.0)
    # the per-image differences of the same images (all about -0.3, float rounding decides their ties)
    pick = per_a["method"] == "rise"
    want = stats.wilcoxon(
        per_a.loc[pick, "insertion"].to_numpy() - per_b.loc[pick, "insertion"].to_numpy()
    ).pvalue
    assert want < 1e-3
    assert ins.loc["rise", "p_value"] == pytest.approx(want, rel=1e-6)
    assert ins.loc["rise", "significant"] and not ins.loc["gradcam", "significant"]
    assert ins.loc["gradcam", "p_value"] == 1.0 and ins.loc["gradcam", "test"].startswith("Wilcoxon")
    # Holm over the 6 comparisons (3 methods x 2 metrics): RISE's p is the smallest, x 6
    assert ins.loc["rise", "p_holm"] == pytest.approx(min(1.0, 6 * want), rel=1e-6)
    # rankings: insertion gradcam > rise > gradient becomes rise > gradcam > gradient: tau = 1/3
    tau = ranks.set_index("metric")["kendall_tau"]
    assert tau["insertion"] == pytest.approx(1 / 3) and tau["sparseness"] == pytest.approx(1.0)
    spars = cells[cells["metric"] == "sparseness"]
    assert (spars["difference"] == 0).all() and set(spars["test"]) == {"no spread recorded"}


def test_report_of_a_compared_run_has_the_protocol_section(tmp_path):
    from salbench.stages.report import load_other_protocols, load_per_image

    a, per_a = _run("acml2024", {})
    b, per_b = _run("reference", {"rise": 0.3})
    root = tmp_path / "run"
    upsert_results(root / "results.csv", a.to_dict("records"))
    upsert_results(root / "protocols" / "reference" / "results.csv", b.to_dict("records"))
    for folder, per in ((root, per_a), (root / "protocols" / "reference", per_b)):
        ev = folder / "m" / "evaluation" / "groundtruth"
        ev.mkdir(parents=True)
        for method, part in per.groupby("method"):
            part.drop(columns=["label_set", "method"]).assign(
                base_prob=0.5, average_drop=0.1, average_gain=0.1, deletion=0.2
            ).to_csv(ev / f"{method}_recognition.csv", index=False)
    others = load_other_protocols(root, ["m"])
    assert list(others) == ["reference"] and len(others["reference"][1]) == 3 * N
    from salbench.report.markdown import build_report

    build_report(root / "results.csv", root / "report", per_image=load_per_image(root, ["m"]), others=others)
    text = (root / "report" / "REPORT.md").read_text()
    assert "### acml2024 vs reference" in text
    assert "| I | 3 | 0.33 | RISE +30.0 |" in text
    table = pd.read_csv(root / "report" / "tables" / "protocol_comparison.csv")
    assert {"value_acml2024", "ci_low_reference", "p_holm"} <= set(table.columns)


def test_compare_runs_each_protocol_in_its_folder_with_shared_data_and_models(tmp_path, monkeypatch):
    """The command runs the pipeline once per protocol (the other under protocols/<name>/ with the
    benchmark and models linked in), then rebuilds the first run's report."""
    from salbench.stages import pipeline

    calls = []
    root = tmp_path / "run"

    def fake_pipeline(argv):
        calls.append(list(argv))
        out = argv[argv.index("--output-root") + 1] if "--output-root" in argv else None
        if out == str(root) and "--protocol" in argv and argv[-1] == "acml2024":
            (root / "benchmark").mkdir(parents=True, exist_ok=True)
            (root / "models").mkdir(parents=True, exist_ok=True)
        return 0

    reports = []
    monkeypatch.setattr(pipeline, "run_pipeline", fake_pipeline)

    class _Report:
        def main(self, argv, *args, **kwargs):
            reports.append(list(argv))
            return 0

    class _Commands:
        def get(self, name):
            assert name == "report"
            return _Report()

    monkeypatch.setattr(pipeline, "load_commands", _Commands)
    rc = pipeline.run_comparison(
        ["--output-root", str(root), "--limit", "4", "--protocols", "acml2024", "reference"]
    )
    assert rc == 0 and len(calls) == 2
    assert calls[0][-2:] == ["--protocol", "acml2024"] and "--protocols" not in calls[0]
    assert calls[1][-4:] == [
        "--protocol",
        "reference",
        "--output-root",
        str(root / "protocols" / "reference"),
    ]
    assert (root / "protocols" / "reference" / "benchmark").resolve() == (root / "benchmark").resolve()
    assert (root / "protocols" / "reference" / "models").is_symlink()
    assert reports and reports[0][-2:] == ["--protocol", "acml2024"]
