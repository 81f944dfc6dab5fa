"""``salbench plan``: what a rerun would compute, read from the run folder alone."""

from __future__ import annotations

import numpy as np

from salbench.config import CONFIG_DIR, resolve_config
from salbench.stages import plan
from salbench.store.layout import RunLayout
from salbench.store.maps import MapStore


def test_plan_reports_missing_partial_and_done_work(tmp_path, capsys):
    root = tmp_path / "run"
    cfg = resolve_config(CONFIG_DIR / "embedded.yaml", {"run": {"output_root": str(root)}})
    layout = RunLayout.from_config(cfg)
    ids = [f"img{i}" for i in range(40)]
    done = MapStore.open(layout.maps("groundtruth", "gradcam"), ids, (8, 8), chunk_rows=8)
    done.write(np.arange(40), np.zeros((40, 8, 8), np.float32))
    partial = MapStore.open(layout.maps("predicted", "gradcam"), ids, (8, 8), chunk_rows=8)
    partial.write(np.arange(16), np.zeros((16, 8, 8), np.float32))
    evaluation = layout.evaluation_dir("groundtruth")
    evaluation.mkdir(parents=True)
    for suffix in (".csv", ".json"):
        (evaluation / f"gradcam_localization{suffix}").write_text("x")

    lines = plan.plan_lines(cfg)
    text = "\n".join(lines)
    cams = next(i for i, line in enumerate(lines) if "maps: CAMs" in line)
    assert lines[cams].endswith("20 of 21 stores to compute")  # 7 CAMs x 3 label sets, one complete
    assert "predicted: gradcam (16/40 rows), gradcampp" in lines[cams + 2]
    assert lines[cams + 1].endswith(
        "groundtruth: gradcampp, xgradcam, layercam, eigengradcam, scorecam, ablationcam"
    )
    assert "  1/5 diagnostics" in text and "to run" in text
    # 22 ground-truth stores are expected; one is localized
    assert any(
        "localization" in line and line.endswith("21 of 22 (label set, method) to score") for line in lines
    )
    assert lines[-1].endswith("step(s) with work left")

    assert plan.main(["--output-root", str(root)]) == 0
    assert "predicted: gradcam (16/40 rows)" in capsys.readouterr().out
