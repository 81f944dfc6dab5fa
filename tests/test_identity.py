"""Never a silent wrong number: every output is reused only for the inputs that produced it.

Each scenario below exited 0 with stale or mismatched numbers before outputs recorded their inputs;
now the stage recomputes or refuses with one ``error:`` line.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation import interpretable_recognition as recognition
from generation import baselines, cams, rise
from main import diagnostics
from salbench.models.embedded import EmbeddedResNet
from salbench.stages import evaluate as evaluate_stage
from salbench.stages.cli import main as salbench
from salbench.store.results import RESULT_COLUMNS, UNCERTAINTY_COLUMNS, read_results, upsert_results
from tests._tolerance import F32_PROB_REL
from tests.conftest import write_stage_config


@pytest.fixture
def run(tmp_path, imagenet_fixture):
    cfg = write_stage_config(tmp_path, imagenet_fixture, "groundtruth", "methods: {rise: {n_masks: 8}}\n")
    c = ["--config", str(cfg)]
    assert diagnostics.main(c) == 0 and baselines.main([*c, "--method", "fakecam"]) == 0
    assert cams.main([*c, "--method", "gradcam"]) == 0
    return c, tmp_path / "out" / "embedded_resnet", tmp_path


def _error(capsys) -> str:
    """The one ``error:`` line of the last command (log lines may precede it); no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _rows(root, method: str, metric: str = "insertion") -> pd.DataFrame:
    res = read_results(root / "results.csv")
    return res[(res["method"] == method) & (res["metric"] == metric)]


def test_another_protocol_is_refused_not_mislabelled(run, capsys):
    c, _model_dir, tmp = run
    assert recognition.main(c) == 0
    assert recognition.main([*c, "--protocol", "reference"]) == 2
    assert "made for protocol 'acml2024', this run has 'reference'" in _error(capsys)
    assert set(read_results(tmp / "out" / "results.csv")["protocol"]) == {"acml2024"}


def test_regenerated_maps_are_evaluated_again(run, tmp_path):
    c, model_dir, tmp = run
    assert rise.main(c) == 0 and recognition.main(c) == 0
    first = float(_rows(tmp / "out", "rise")["value"].iloc[0])
    cfg4 = tmp / "c4.yaml"
    cfg4.write_text((tmp / "c.yaml").read_text().replace("n_masks: 8", "n_masks: 4"))
    assert rise.main(["--config", str(cfg4), "--overwrite"]) == 0
    assert recognition.main(["--config", str(cfg4)]) == 0  # no --overwrite: the maps changed
    again = _rows(tmp / "out", "rise")
    assert len(again) == 1 and float(again["value"].iloc[0]) != first
    sidecar = json.loads((model_dir / "evaluation" / "groundtruth" / "rise_recognition.json").read_text())
    assert again["inputs"].iloc[0] == sidecar["key"]


def test_interrupted_run_resumed_with_another_batch_size(run, monkeypatch, capsys):
    c, model_dir, tmp = run
    real_merge = evaluate_stage.merge_parts

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_stage, "merge_parts", killed)
    assert recognition.main([*c, "--method", "gradcam"]) == 130  # parts of batch size 4 are left
    assert any((model_dir / "evaluation" / "groundtruth" / ".parts").rglob("*.csv"))
    monkeypatch.setattr(evaluate_stage, "merge_parts", real_merge)
    assert recognition.main([*c, "--method", "gradcam", "--batch-size", "3"]) == 0
    resumed = pd.read_csv(model_dir / "evaluation" / "groundtruth" / "gradcam_recognition.csv")
    shutil.rmtree(tmp / "out" / "embedded_resnet" / "evaluation")
    assert recognition.main([*c, "--method", "gradcam", "--batch-size", "3"]) == 0
    clean = pd.read_csv(model_dir / "evaluation" / "groundtruth" / "gradcam_recognition.csv")
    pd.testing.assert_frame_equal(resumed, clean)
    assert int(_rows(tmp / "out", "gradcam")["n_images"].iloc[0]) == 6


@pytest.mark.numeric
def test_reordered_image_list_pairs_maps_by_id(run, imagenet_fixture):
    c, model_dir, _tmp = run
    assert recognition.main([*c, "--method", "fakecam", "gradcam"]) == 0
    before = pd.read_csv(model_dir / "evaluation" / "groundtruth" / "gradcam_recognition.csv")
    lines = (imagenet_fixture / "val_list.csv").read_text().splitlines()
    (imagenet_fixture / "val_list.csv").write_text("\n".join(reversed(lines)) + "\n")
    assert diagnostics.main(c) == 0  # other image order: recomputed
    assert recognition.main([*c, "--method", "gradcam"]) == 0
    after = pd.read_csv(model_dir / "evaluation" / "groundtruth" / "gradcam_recognition.csv")
    assert after["image_id"].tolist() == before["image_id"].tolist()[::-1]
    # float32 passes in other batch compositions (probabilities ~1e-3 of a 1000-class model): relative
    # F32_PROB_REL on probabilities and their means (AUCs), 2 F32_PROB_REL absolute on (Y - O) / Y
    merged = before.merge(after, on="image_id", suffixes=("", "_r"))
    for col in ("base_prob", "masked_prob", "insertion", "deletion"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_r"], rtol=F32_PROB_REL, atol=0)
    np.testing.assert_allclose(
        merged["average_drop"], merged["average_drop_r"], rtol=0, atol=2 * F32_PROB_REL
    )


def test_a_store_holding_another_methods_maps_is_refused(run, capsys):
    c, model_dir, _tmp = run
    maps = model_dir / "maps" / "groundtruth"
    shutil.copytree(maps / "gradcam.zarr", maps / "random.zarr")
    assert recognition.main([*c, "--method", "random"]) == 2
    assert "random.zarr: made for method 'gradcam', this run has 'random'" in _error(capsys)


def test_another_checkpoint_recomputes_diagnostics_and_refuses_old_maps(run, capsys):
    c, model_dir, tmp = run
    assert recognition.main([*c, "--method", "gradcam"]) == 0
    torch.manual_seed(1)  # same architecture, other weights, same file name
    other = EmbeddedResNet(num_classes=1000)
    torch.save({"state_dict": other.state_dict(), "meta": {"num_classes": 1000}}, tmp / "model.pt")
    probs = pd.read_csv(model_dir / "diagnostics" / "diagnostics.csv")["groundtruth_prob"]
    assert diagnostics.main(c) == 0
    assert not np.allclose(
        pd.read_csv(model_dir / "diagnostics" / "diagnostics.csv")["groundtruth_prob"], probs
    )
    assert recognition.main([*c, "--method", "gradcam"]) == 2
    assert "gradcam.zarr: made for model_id" in _error(capsys)
    assert cams.main([*c, "--method", "gradcam"]) == 2  # the store refuses to mix models
    assert "attrs differ from the stored ones in ['model_id']" in _error(capsys)


def test_deleted_chunk_is_an_error_and_verify_resets_it(run, capsys):
    c, model_dir, _tmp = run
    store = model_dir / "maps" / "groundtruth" / "gradcam.zarr"
    chunk = next(p for p in (store / "maps").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    assert recognition.main([*c, "--method", "gradcam"]) == 2
    assert "read as missing maps (a deleted or damaged chunk); run `salbench verify`" in _error(capsys)
    assert salbench(["verify", *c]) == 0
    assert "gradcam.zarr: 6 rows reset to pending" in capsys.readouterr().out
    assert cams.main([*c, "--method", "gradcam"]) == 0 and recognition.main([*c, "--method", "gradcam"]) == 0


def test_nothing_to_evaluate_is_an_error(run, capsys):
    c, _, _ = run
    assert recognition.main([*c, "--method", "nosuch"]) == 2
    assert "nothing to evaluate: no complete map store of the methods nosuch" in _error(capsys)


def test_nan_weights_are_an_error_naming_the_checkpoint(run, capsys):
    c, _, tmp = run
    state = EmbeddedResNet(num_classes=1000).state_dict()
    state["conv1.weight"][0] = float("nan")
    torch.save({"state_dict": state, "meta": {"num_classes": 1000}}, tmp / "model.pt")
    assert diagnostics.main(c) == 2
    assert "model.pt: 27 values of 'conv1.weight' are NaN or inf" in _error(capsys)


def _upsert_many(path: str, worker: int) -> None:
    row = {c: "x" for c in RESULT_COLUMNS} | dict.fromkeys(UNCERTAINTY_COLUMNS, float("nan"))
    row |= {"value": 0.5, "n_images": 1, "n_skipped": 0, "level": 0, "higher_is_better": True}
    for i in range(40):
        upsert_results(path, [{**row, "metric": f"m{worker}_{i}"}])


def test_concurrent_upserts_lose_no_row(tmp_path):
    path = str(tmp_path / "results.csv")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_upsert_many, args=(path, w)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(read_results(path)) == 80


def _evaluate(argv: list[str]) -> int:
    return recognition.main(argv)


def test_two_evaluations_of_one_method_at_once(run):
    c, model_dir, tmp = run
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        codes = pool.map(_evaluate, [[*c, "--method", "gradcam"]] * 2)
    assert codes == [0, 0]
    assert len(_rows(tmp / "out", "gradcam")) == 1
    assert not (model_dir / "evaluation" / "groundtruth" / ".parts" / "gradcam_recognition").exists()
