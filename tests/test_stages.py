"""End-to-end stage tests on a tiny ImageNet-layout fixture: diagnostics -> generation -> evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation import complexity_analysis, interpretable_recognition, localization
from generation import baselines, cams, gradients, rise
from main import diagnostics
from salbench.store.maps import MapStore
from salbench.store.results import RESULT_COLUMNS
from tests.conftest import write_stage_config


@pytest.fixture
def run_cfg(tmp_path, imagenet_fixture):
    cfg = write_stage_config(
        tmp_path,
        imagenet_fixture,
        "groundtruth, least",
        "methods: {integrated_gradients: {n_steps: 4}, rise: {n_masks: 8}}\n",
    )
    assert diagnostics.main(["--config", str(cfg)]) == 0
    return cfg, tmp_path / "out" / "embedded_resnet"


def test_generation_then_evaluation(run_cfg, capsys):
    cfg, model_dir = run_cfg
    c = ["--config", str(cfg)]
    assert baselines.main([*c]) == 0
    assert (
        gradients.main([*c, "--method", "gradient", "integrated_gradients", "--deprocess", "jacobgil"]) == 0
    )
    assert cams.main([*c, "--method", "gradcam"]) == 0
    assert rise.main([*c]) == 0
    out = capsys.readouterr().out
    assert "model passes/image" in out
    store = MapStore.read_only(model_dir / "maps" / "least" / "integrated_gradients_jacobgil.zarr")
    assert store.complete and store.read_all().shape == (6, 64, 64)
    assert store.attrs["method"]["params"]["deprocess"] == "jacobgil"
    assert store.attrs["method"]["params"]["train_mode"] is True  # acml2024 preset, recorded
    fake = MapStore.read_only(model_dir / "maps" / "groundtruth" / "fakecam.zarr").read_all()
    expected = np.ones((64, 64), np.float32)
    expected[0, 0] = 0
    assert (fake == expected).all()
    # second run: nothing recomputed
    assert cams.main([*c, "--method", "gradcam"]) == 0
    assert "complete, skipped" in capsys.readouterr().out

    assert interpretable_recognition.main([*c]) == 0
    rec = pd.read_csv(model_dir / "evaluation" / "groundtruth" / "fakecam_recognition.csv")
    assert list(rec.columns[:3]) == ["image_id", "base_prob", "masked_prob"] and len(rec) == 6
    curves = np.load(model_dir / "evaluation" / "groundtruth" / "gradcam_curves.npz", allow_pickle=False)
    assert curves["insertion"].shape == (6, 29) and curves["deletion"].shape == (6, 29)
    assert complexity_analysis.main([*c, "--label-set", "groundtruth", "--method", "fakecam", "gradcam"]) == 0
    cx = pd.read_csv(model_dir / "evaluation" / "groundtruth" / "fakecam_complexity.csv")
    np.testing.assert_allclose(cx["effective_complexity"], 64 * 64 - 1)
    np.testing.assert_allclose(
        cx["complexity"], np.log(64 * 64), atol=1e-3
    )  # coarse: log(n / (n - 1)) = 2.4e-4
    assert localization.main([*c, "--method", "fakecam"]) == 0

    results = pd.read_csv(model_dir.parent / "results.csv")  # a bare read: no empty "none" values
    assert list(results.columns) == RESULT_COLUMNS
    text = results.select_dtypes(exclude="number")
    assert not text.isna().any().any(), text.columns[text.isna().any()].tolist()
    assert set(results.variant) == {"none"} and set(results.augmentation) == {"none"}
    assert results["value"].dtype == np.float64 and results["n_images"].dtype == np.int64
    assert results["higher_is_better"].dtype == bool
    fc = results[(results.method == "fakecam") & (results.label_set == "groundtruth")].set_index("metric")
    # Fake-CAM keeps every pixel but one: the masked image is the image, so AD ~ 0 and AG ~ 0
    assert fc.loc["average_drop", "value"] == pytest.approx(0, abs=0.02)
    assert fc.loc["average_gain", "value"] == pytest.approx(0, abs=0.02)
    assert fc.loc["energy_pointing_game", "n_images"] == 6
    methods = set(results[results.metric == "insertion"].method)
    assert {"fakecam", "random", "edge", "gradcam", "rise", "gradient_jacobgil"} <= methods
    assert set(results.protocol) == {"acml2024"}


def test_evaluation_resumes_from_parts(run_cfg):
    cfg, model_dir = run_cfg
    c = ["--config", str(cfg), "--label-set", "groundtruth"]
    assert baselines.main([*c, "--method", "fakecam"]) == 0
    assert interpretable_recognition.main([*c]) == 0
    final = model_dir / "evaluation" / "groundtruth" / "fakecam_recognition.csv"
    first = pd.read_csv(final)
    # simulate a run killed after its first batch: one part on disk, no merged output
    final.unlink()
    parts = model_dir / "evaluation" / "groundtruth" / ".parts" / "fakecam_recognition"
    parts.mkdir(parents=True)
    first.iloc[:4].to_csv(parts / "000000.csv", index=False)
    np.savez(
        parts / "000000.npz",
        image_ids=first.image_id[:4].to_numpy().astype(str),
        insertion=np.zeros((4, 29)),
        deletion=np.zeros((4, 29)),
    )
    assert interpretable_recognition.main([*c]) == 0
    again = pd.read_csv(final)
    pd.testing.assert_frame_equal(first, again)
    assert not parts.exists()


def test_augmented_two_methods_two_variants(run_cfg):
    from augmented import evaluate as aug_eval
    from augmented import generate as aug_gen

    cfg, model_dir = run_cfg
    c = ["--config", str(cfg), "--variant", "mixup_32", "rotation_45", "--method", "fakecam", "gradcam"]
    assert aug_gen.main([*c, "--n-images", "5"]) == 0
    assert aug_eval.main(c) == 0
    results = pd.read_csv(model_dir.parent / "results.csv")
    aug = results[results.augmentation != "none"]
    assert set(zip(aug.augmentation, aug.variant)) == {("mixup", "mixup_32"), ("rotation", "rotation_45")}
    # the classifier's own accuracy on each variant's images (method "model"), then the maps' metrics
    model = aug[aug.method == "model"]
    assert set(model.metric) == {"top1_accuracy", "chance_accuracy"} and (model.n_images == 5).all()
    assert (model.loc[model.metric == "chance_accuracy", "value"] == 1 / 1000).all()
    aug = aug[aug.method != "model"]
    assert set(aug.method) == {"fakecam", "gradcam"} and set(aug.label_set) == {"groundtruth"}
    assert set(aug.metric) == {"average_drop", "average_increase", "average_gain", "insertion", "deletion"}
    assert (aug.n_images == 5).all()
    # every method of a variant explained byte-identical inputs
    for name in ("mixup/mixup_32", "rotation/rotation_45"):
        folder = model_dir / "augmented" / name
        hashes = {
            MapStore.read_only(folder / "maps" / "groundtruth" / f"{m}.zarr").attrs["inputs_hash"]
            for m in ("fakecam", "gradcam")
        }
        assert len(hashes) == 1 and None not in hashes
    summary = pd.read_csv(model_dir / "augmented" / "summary.csv", keep_default_na=False)
    assert "mean" in set(summary.variant)
    # a rerun materialises nothing new and recomputes no map
    before = (model_dir / "augmented" / "mixup" / "mixup_32" / "images" / "images.npy").stat().st_mtime_ns
    assert aug_gen.main([*c, "--n-images", "5"]) == 0
    after = (model_dir / "augmented" / "mixup" / "mixup_32" / "images" / "images.npy").stat().st_mtime_ns
    assert before == after
