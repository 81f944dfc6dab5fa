"""Stage 3, Gomez et al.'s metrics (evaluation/gomez_metrics.py) on a tiny ImageNet-layout workspace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation import gomez_metrics
from generation import baselines, cams
from main import diagnostics
from salbench.metrics.gomez import curve_scores, single_step_scores
from salbench.stages.cli import config_from_args
from salbench.stages.diagnostics import read_targets
from salbench.stages.workspace import open_workspace
from salbench.store.maps import MapStore
from salbench.store.results import RESULT_COLUMNS
from tests.conftest import write_stage_config

IDS = [f"{m}_{f}" for m in ("iic", "ad_gomez", "add", "dauc", "dc", "iauc", "ic") for f in ("black", "blur")]
LOWER_IS_BETTER = {"ad_gomez_black", "ad_gomez_blur", "dauc_black", "dauc_blur"}


@pytest.fixture
def run_cfg(tmp_path, imagenet_fixture):
    # 16 curve steps of 256 pixels instead of ~200 of 20 (the package cap): a fast test
    cfg = write_stage_config(
        tmp_path, imagenet_fixture, "groundtruth", "metrics: {gomez: {max_step_nb: 16}}\n"
    )
    c = ["--config", str(cfg)]
    assert diagnostics.main(c) == 0
    assert baselines.main([*c, "--method", "fakecam", "edge"]) == 0
    assert cams.main([*c, "--method", "gradcam"]) == 0
    return cfg, tmp_path / "out"


def _expected(cfg, method: str) -> pd.DataFrame:
    """The 14 columns computed directly with salbench.metrics.gomez on the stage's batches of 4."""
    args = gomez_metrics.build_parser().parse_args(["--config", str(cfg)])
    ws = open_workspace(config_from_args(args))
    targets, _ = read_targets(ws.layout.diagnostics_csv, "groundtruth", ws.images.ids)
    store = MapStore.read_only(ws.layout.maps("groundtruth", method))
    stats = {"mean": ws.context.mean, "std": ws.context.std}
    parts = []
    for start in range(0, len(ws.images), 4):
        rows = np.arange(start, min(start + 4, len(ws.images)))
        x, t = ws.images.load(rows), torch.as_tensor(targets[rows])
        maps = torch.from_numpy(store.read(rows))
        cols, base = {}, None
        for f in ("black", "blur"):
            single = single_step_scores(ws.model, x, maps, t, filling=f, base_probs=base, **stats)
            base = torch.from_numpy(single["base_prob"])
            dele = curve_scores(ws.model, x, maps, t, game="deletion", filling=f, max_step_nb=16, **stats)
            ins = curve_scores(ws.model, x, maps, t, game="insertion", filling=f, max_step_nb=16, **stats)
            for key, out in (("iic", single), ("ad_gomez", single), ("add", single)):
                cols[f"{key}_{f}"] = out[key]
            cols |= {f"dauc_{f}": dele["dauc"], f"dc_{f}": dele["dc"]}
            cols |= {f"iauc_{f}": ins["iauc"], f"ic_{f}": ins["ic"]}
        parts.append(pd.DataFrame(cols))
    return pd.concat(parts, ignore_index=True)[IDS]


def test_gomez_stage_writes_the_fourteen_metrics(run_cfg, capsys):
    cfg, out = run_cfg
    c = ["--config", str(cfg), "--label-set", "groundtruth", "--method", "fakecam", "edge", "gradcam"]
    assert gomez_metrics.main(c) == 0
    assert "iauc_blur" in capsys.readouterr().out
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    folder = out / "embedded_resnet" / "evaluation" / "groundtruth"
    for method in ("fakecam", "edge", "gradcam"):
        per_image = pd.read_csv(folder / f"{method}_gomez.csv", dtype={"image_id": str})
        ties = [f"iic_tie_{f}" for f in ("black", "blur")]  # 1: O and Y within iic_tolerance
        assert sorted(per_image.columns) == sorted(["image_id", *IDS, *ties]) and len(per_image) == 6
        assert per_image[ties].isin([0.0, 1.0]).all().all()
        expected = _expected(cfg, method)
        np.testing.assert_array_equal(per_image[IDS].to_numpy(), expected.to_numpy())
        rows = results[results.method == method].set_index("metric")
        assert set(rows.index) == set(IDS)
        for metric in IDS:
            values = expected[metric].to_numpy()
            finite = np.isfinite(values)
            assert rows.loc[metric, "value"] == pytest.approx(values[finite].mean(), rel=1e-12)
            assert rows.loc[metric, "n_images"] == finite.sum()
            assert rows.loc[metric, "n_skipped"] == (~finite).sum()
            assert rows.loc[metric, "higher_is_better"] == (metric not in LOWER_IS_BETTER)
            assert rows.loc[metric, "label_set"] == "groundtruth"
            # bootstrap interval of the mean (ends are resample means: within the values' range)
            low, high = rows.loc[metric, "ci_low"], rows.loc[metric, "ci_high"]
            assert values[finite].min() <= low <= rows.loc[metric, "value"] <= high <= values[finite].max()
            assert rows.loc[metric, "std"] == pytest.approx(np.std(values[finite], ddof=1), rel=1e-12)
            if metric.startswith("iic_"):  # the near ties among the averaged images are counted
                tie = per_image[metric.replace("iic_", "iic_tie_")].to_numpy()
                assert rows.loc[metric, "n_ties"] == (tie[finite] == 1.0).sum()
            else:
                assert np.isnan(rows.loc[metric, "n_ties"])
    # Fake-CAM keeps every pixel but one: the kept image is the image, so AD is ~0
    fake = results[results.method == "fakecam"].set_index("metric")
    assert fake.loc["ad_gomez_black", "value"] == pytest.approx(0.0, abs=0.02)
    # rerun: nothing recomputed
    before = (folder / "gradcam_gomez.csv").stat().st_mtime_ns
    assert gomez_metrics.main(c) == 0
    assert (folder / "gradcam_gomez.csv").stat().st_mtime_ns == before


def test_gomez_stage_rejects_unknown_config_key(run_cfg, capsys):
    cfg, _ = run_cfg
    bad = cfg.with_name("bad.yaml")
    bad.write_text(cfg.read_text().replace("max_step_nb: 16", "max_steps: 16"))
    assert gomez_metrics.main(["--config", str(bad), "--method", "fakecam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "metrics.gomez.max_steps" in err[0] and err[0].startswith("error:")
