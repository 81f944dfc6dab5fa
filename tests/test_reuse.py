"""A label set copies the maps and scores an earlier one computed for the same image and target.

The stage tests' workspace (a random embedded ResNet at 64x64, batches of 4) on 8 images whose listed
classes are set to the model's own predictions for 5 of them, so ``predicted`` shares its target with
``groundtruth`` on exactly those 5. One output root runs with reuse (the default), one with
``--no-reuse``, from the same diagnostics; sensitivity re-explains with the method under test
(per-image, per-sample generators), as the reference protocol does.

What is exact and why: a copied row is the earlier row's bytes. Every random draw is seeded per
(image, target) (:mod:`salbench.rng`), and without reuse a shared row is computed in the same aligned
batch (same images, same shapes) as the earlier label set computed it, where only other rows' targets
differ; no kernel mixes rows (eval-mode model, input gradients only), so it is the same bytes too.
The rows reuse computes alone (different target) run in a smaller batch, where CPU kernels may block
the work differently: they are compared within 1e-4 on maps in [0, 1] (float32 sums of at most
3*3*64 = 576 products per convolution output, 576 * 2^-24 ~ 3.4e-5 relative, doubled for the min-max
rescaling) and their scores within 1e-5 absolute or relative (float32 model outputs; one per-image
score of ~1852 came out 1.2e-7 relative apart).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from salbench import rng
from salbench.stages.cli import main as salbench
from salbench.stages.diagnostics import read_targets
from salbench.store.maps import MapStore
from tests.conftest import make_imagenet, write_stage_config

N_IMAGES = 8
SHARED = [0, 1, 2, 4, 7]  # images whose listed class is the model's prediction
METHODS = ("gradcam", "random", "smoothgrad", "lime")
STORES = ("gradcam", "random", "smoothgrad_smoothgrad", "lime")  # store ids (gradients: + deprocessing)
EXTRA = (
    "methods: {smoothgrad: {n_samples: 3}, lime: {n_samples: 8}}\n"
    "metrics: {monotonicity: {nr_samples: 2}, sensitivity: {nr_samples: 2, explainer: method}}\n"
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Config and the output roots ``reuse`` / ``no_reuse`` after generation and evaluation."""
    tmp = tmp_path_factory.mktemp("reuse")
    images = make_imagenet(tmp, N_IMAGES)
    cfg = write_stage_config(tmp, images, "groundtruth, predicted", EXTRA)
    probe = tmp / "probe"
    assert salbench(["diagnostics", "--config", str(cfg), "--output-root", str(probe)]) == 0
    ids = pd.read_csv(probe / "embedded_resnet" / "diagnostics" / "diagnostics.csv", dtype={"image_id": str})
    predicted, _ = read_targets(
        probe / "embedded_resnet" / "diagnostics" / "diagnostics.csv", "predicted", list(ids["image_id"])
    )
    lines = (images / "val_list.csv").read_text().split()
    relabelled = []
    for i, line in enumerate(lines):
        path, _ = line.split(",")
        label = int(predicted[i]) if i in SHARED else (int(predicted[i]) + 1 + i) % 1000
        relabelled.append(f"{path},{label}")
    (images / "val_list.csv").write_text("\n".join(relabelled) + "\n")
    out = {"cfg": cfg}
    for name, flags in (("reuse", []), ("no_reuse", ["--no-reuse"])):
        root = tmp / name
        common = ["--config", str(cfg), "--output-root", str(root), *flags]
        if name == "reuse":
            assert salbench(["diagnostics", *common]) == 0
        else:
            shutil.copytree(tmp / "reuse", root)
            shutil.rmtree(root / "embedded_resnet" / "maps", ignore_errors=True)
            shutil.rmtree(root / "embedded_resnet" / "evaluation", ignore_errors=True)
            (root / "results.csv").unlink(missing_ok=True)
        assert salbench(["generate", "--method", *METHODS, *common]) == 0
        for kind in ("recognition", "complexity"):
            assert salbench(["evaluate", kind, *common]) == 0
        out[name] = root
    return out


def _maps(root: Path, label_set: str, method: str) -> np.ndarray:
    return MapStore.read_only(root / "embedded_resnet" / "maps" / label_set / f"{method}.zarr").read_all()


def _targets(root: Path, label_set: str) -> np.ndarray:
    csv = root / "embedded_resnet" / "diagnostics" / "diagnostics.csv"
    ids = pd.read_csv(csv, dtype={"image_id": str})["image_id"].tolist()
    return read_targets(csv, label_set, ids)[0]


def test_the_fixture_shares_targets_on_the_chosen_images(runs):
    same = _targets(runs["reuse"], "groundtruth") == _targets(runs["reuse"], "predicted")
    assert np.flatnonzero(same).tolist() == SHARED


@pytest.mark.parametrize("method", STORES)
def test_maps_copied_where_targets_agree_and_equal_to_computing_them(runs, method):
    gt, pred = _maps(runs["reuse"], "groundtruth", method), _maps(runs["reuse"], "predicted", method)
    plain = _maps(runs["no_reuse"], "predicted", method)
    np.testing.assert_array_equal(pred[SHARED], gt[SHARED])  # copied
    np.testing.assert_array_equal(plain[SHARED], gt[SHARED])  # computed in the same batch: same bytes
    others = [i for i in range(N_IMAGES) if i not in SHARED]
    np.testing.assert_allclose(pred[others], plain[others], rtol=0, atol=1e-4)
    store = MapStore.read_only(runs["reuse"] / "embedded_resnet" / "maps" / "predicted" / f"{method}.zarr")
    last = store.attrs["last_run"]
    assert (last["n_reused"], last["reused_from"], last["n_computed"]) == (5, "groundtruth", 3)
    assert store.attrs["seeding"] == rng.SEEDING
    plain_store = runs["no_reuse"] / "embedded_resnet" / "maps" / "predicted" / f"{method}.zarr"
    assert MapStore.read_only(plain_store).attrs["last_run"]["n_reused"] == 0


@pytest.mark.parametrize("kind", ["recognition", "complexity"])
def test_scores_copied_where_targets_and_maps_agree(runs, kind):
    folder = {name: runs[name] / "embedded_resnet" / "evaluation" for name in ("reuse", "no_reuse")}
    manifest = json.loads((folder["reuse"] / "predicted" / f"{kind}_manifest.json").read_text())
    plain_manifest = json.loads((folder["no_reuse"] / "predicted" / f"{kind}_manifest.json").read_text())
    for method in STORES:
        gt = pd.read_csv(folder["reuse"] / "groundtruth" / f"{method}_{kind}.csv", dtype={"image_id": str})
        pred = pd.read_csv(folder["reuse"] / "predicted" / f"{method}_{kind}.csv", dtype={"image_id": str})
        plain = pd.read_csv(
            folder["no_reuse"] / "predicted" / f"{method}_{kind}.csv", dtype={"image_id": str}
        )
        assert (
            list(pred.columns) == list(plain.columns)
            and pred["image_id"].tolist() == plain["image_id"].tolist()
        )
        pd.testing.assert_frame_equal(pred.iloc[SHARED], gt.iloc[SHARED])
        pd.testing.assert_frame_equal(plain.iloc[SHARED], gt.iloc[SHARED])
        others = [i for i in range(N_IMAGES) if i not in SHARED]
        numeric = pred.columns.drop("image_id")
        np.testing.assert_allclose(
            pred.iloc[others][numeric].to_numpy(float),
            plain.iloc[others][numeric].to_numpy(float),
            rtol=1e-5,
            atol=1e-5,
        )
        assert manifest["reused_rows"][method] == 5 and manifest["reused_from"][method] == "groundtruth"
        assert plain_manifest["reused_rows"][method] == 0
    if kind == "recognition":
        for method in STORES:
            with (
                np.load(folder["reuse"] / "predicted" / f"{method}_curves.npz") as a,
                np.load(folder["no_reuse"] / "predicted" / f"{method}_curves.npz") as b,
            ):
                assert a.files == b.files
                for k in a.files:
                    if k != "image_ids":
                        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-5)
                        np.testing.assert_array_equal(a[k][SHARED], b[k][SHARED])


def test_results_agree_with_and_without_reuse(runs):
    a = pd.read_csv(runs["reuse"] / "results.csv")
    b = pd.read_csv(runs["no_reuse"] / "results.csv")
    a, b = a[a["method"].isin(STORES)], b[b["method"].isin(STORES)]  # not the diagnostics' rows
    keys = ["label_set", "method", "metric"]
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[keys], b[keys])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-5, atol=1e-5)
    gt = a[a["label_set"] == "groundtruth"].reset_index(drop=True)
    plain_gt = b[b["label_set"] == "groundtruth"].reset_index(drop=True)
    np.testing.assert_array_equal(gt["value"], plain_gt["value"])  # nothing to copy from: identical


def test_per_image_generators_draw_what_the_image_draws_in_any_batch():
    gens = lambda ids, t: rng.row_generators(0, "random", ids, t)  # noqa: E731
    both = rng.rand(gens(["a", "b"], [3, 4]), (2, 5, 5), 0)
    alone = rng.rand(gens(["b"], [4]), (1, 5, 5), 0)
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=0)
    other_target = rng.rand(gens(["b"], [5]), (1, 5, 5), 0)
    assert not torch.equal(alone, other_target)
    assert (
        rng.draw_seeds(gens(["a", "b"], [3, 4]), 2, 2**31)[1] == rng.draw_seeds(gens(["b"], [4]), 1, 2**31)[0]
    )
    with pytest.raises(ValueError, match="2 generators for 3 images"):
        rng.rand(gens(["a", "b"], [3, 4]), (3, 5, 5), 0)


def test_an_earlier_output_made_from_other_inputs_is_not_copied(runs, tmp_path):
    """Scores are copied only from an earlier evaluation complete for the inputs it has now: with the
    ground-truth output's recorded key changed (as after its maps or parameters changed), the
    predicted label set computes every row."""
    root = tmp_path / "copy"
    shutil.copytree(runs["reuse"], root)
    evaluation = root / "embedded_resnet" / "evaluation"
    sidecar = evaluation / "groundtruth" / "gradcam_recognition.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "key": "stale"}))
    shutil.rmtree(evaluation / "predicted")
    flags = ["--config", str(runs["cfg"]), "--output-root", str(root), "--label-set", "predicted"]
    assert salbench(["evaluate", "recognition", "--method", "gradcam", *flags]) == 0
    manifest = json.loads((evaluation / "predicted" / "recognition_manifest.json").read_text())
    assert manifest["reused_rows"] == {"gradcam": 0}
    fresh = pd.read_csv(evaluation / "predicted" / "gradcam_recognition.csv", dtype={"image_id": str})
    gt = pd.read_csv(evaluation / "groundtruth" / "gradcam_recognition.csv", dtype={"image_id": str})
    pd.testing.assert_frame_equal(fresh.iloc[SHARED], gt.iloc[SHARED])  # computed: the same values
