"""``salbench plan --costs``: the planner's pass counts equal the passes a real run of the tiny workspace
counts (:func:`salbench.scoped.count_passes`), exact numbers on hand-computable settings, exact scaling
with ``--n-images``, and one-line errors."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from generation import cams, gradients, rise
from main import diagnostics
from salbench.config import CONFIG_DIR, resolve_config
from salbench.methods import METHODS
from salbench.metrics.fidelity import MonotonicityParams
from salbench.metrics.recognition import RecognitionParams
from salbench.metrics.robustness import SensitivityParams
from salbench.scoped import count_passes
from salbench.stages import costs, plan
from salbench.stages.calibration import Timing, plan_model
from salbench.stages.evaluate import evaluate
from salbench.stages.kinds import KINDS
from salbench.stages.workspace import open_workspace
from salbench.store.maps import MapStore
from tests.conftest import make_imagenet, write_stage_config

N = 6  # images of the tiny workspace
LABEL_SETS = ("groundtruth", "least")
# hand-computable settings: IG 5 steps, RISE 8 masks, 2 samples per monotonicity group / sensitivity
EXTRA = (
    "methods: {integrated_gradients: {n_steps: 5, internal_batch_size: 7}, rise: {n_masks: 8}}\n"
    "metrics: {monotonicity: {nr_samples: 2}, sensitivity: {nr_samples: 2}}\n"
)
GENERATED = {
    "gradient_smoothgrad": "gradient",
    "integrated_gradients_smoothgrad": "integrated_gradients",
    "gradcam": "gradcam",
    "scorecam": "scorecam",
    "rise": "rise",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on 2 shared cores the tiny model runs several times faster than with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny workspace after diagnostics and generation of five methods on two label sets."""
    base = tmp_path_factory.mktemp("costs")
    path = write_stage_config(base, make_imagenet(base), ", ".join(LABEL_SETS), EXTRA)
    c = ["--config", str(path)]
    assert diagnostics.main(c) == 0
    assert gradients.main([*c, "--method", "gradient", "integrated_gradients"]) == 0
    assert cams.main([*c, "--method", "gradcam", "scorecam"]) == 0
    assert rise.main(c) == 0
    cfg = resolve_config(path)
    return path, cfg, plan_model(cfg, "cpu").shape


def _rows(cfg, shape, n=N):
    return costs.cost_rows(cfg, shape, n)


def _counted(cfg, store_id):
    """Forward and backward rows generation recorded for ``store_id``, summed over the label sets."""
    root = cfg.run.output_root
    paths = [f"{root}/embedded_resnet/maps/{ls}/{store_id}.zarr" for ls in LABEL_SETS]
    runs = [MapStore.read_only(p).attrs for p in paths]
    assert all(a["last_run"]["n_computed"] == N for a in runs)
    return costs.Passes(
        sum(a["last_run"]["forward_rows"] for a in runs), sum(a["last_run"]["backward_rows"] for a in runs)
    )


def test_generation_passes_equal_the_counted_ones(tiny):
    _, cfg, shape = tiny
    rows = {r.method: r for r in _rows(cfg, shape) if r.group == "generation" and r.stage.startswith("2/5")}
    assert shape.layer_channels == 64  # layer4[-1] of the embedded ResNet
    expected = {
        "gradient_smoothgrad": costs.Passes(1, 1),
        "integrated_gradients_smoothgrad": costs.Passes(5, 5),  # 2 x 5 "model passes/image"
        "gradcam": costs.Passes(1, 1),
        "scorecam": costs.Passes(1 + 64, 0),
        "rise": costs.Passes(8, 0),
    }
    for store_id, passes in expected.items():
        row = rows[store_id]
        assert row.passes == passes, store_id
        assert row.units == N * len(LABEL_SETS)
        assert row.total == _counted(cfg, store_id), store_id
    assert rows["integrated_gradients_smoothgrad"].passes.total == 10
    assert rows["integrated_gradients_smoothgrad"].passes.equivalents == 15


def _planned_evaluation(cfg, shape, kind, label_sets):
    """The planner's rows of evaluation ``kind`` over the generated stores of ``label_sets``."""
    stores = {
        ls: {s: costs.method_passes(m, costs.method_params(cfg, m), shape) for s, m in GENERATED.items()}
        for ls in label_sets
    }
    rows = costs.evaluation_rows("t", kind, costs.kind_params(kind, cfg), stores, shape, N)
    total = costs.Passes()
    for r in rows:
        total = total + r.total
    return rows, total


def _evaluate_counted(cfg, kind):
    ws = open_workspace(cfg)
    with count_passes(ws.model) as counted:
        evaluate(ws, kind, list(GENERATED), progress=False)
    return costs.Passes(counted.forward_rows, counted.backward_rows)


def test_recognition_passes_equal_the_counted_ones(tiny):
    _, cfg, shape = tiny
    kind = KINDS["recognition"]
    rows, total = _planned_evaluation(cfg, shape, kind, LABEL_SETS)
    # 64x64: 28 steps of 147 pixels; per method 1 masked image + 2 x 27 curve interiors, 3 curve ends shared
    per_method = {r.method: r.passes for r in rows}
    assert per_method[costs.SHARED] == costs.Passes(3)
    assert {per_method[s] for s in GENERATED} == {costs.Passes(55)}
    assert total == _evaluate_counted(cfg, kind)


def test_monotonicity_and_sensitivity_passes_equal_the_counted_ones(tiny):
    _, cfg, shape = tiny
    for explainer in ("gradient", "method"):  # acml2024 re-explains with gradients, reference with the method
        run = dataclasses.replace(cfg.run, label_sets=("groundtruth",))
        metrics = {**cfg.metrics, "sensitivity": {**cfg.metrics["sensitivity"], "explainer": explainer}}
        c = dataclasses.replace(cfg, run=run, metrics=metrics)
        kind = KINDS["complexity"]
        rows, total = _planned_evaluation(c, shape, kind, ("groundtruth",))
        got = {(r.method, r.group): r.passes for r in rows}
        # 3 x 64 x 64 entries in groups of 512 (the divisor of 12,288 nearest 64 * 64 * 32 / 224 = 585):
        # 24 groups x 2 samples per method; the image once per image for every method
        assert got[("gradcam", "monotonicity")] == costs.Passes(24 * 2)
        assert got[(costs.SHARED, "monotonicity")] == costs.Passes(1)
        # the image and its black baseline once per image for every method, none per method
        assert got[(costs.SHARED, "completeness")] == costs.Passes(2)
        assert got[(costs.ALL, "completeness")] == costs.Passes()
        if explainer == "gradient":  # the noisy copies' gradients, once per image for every method
            assert got[(costs.SHARED, "sensitivity")] == costs.Passes(2, 2)
            assert got[(costs.ALL, "sensitivity")] == costs.Passes()
        else:
            assert got[("rise", "sensitivity")] == costs.Passes(2 * 8)
            assert got[("scorecam", "sensitivity")] == costs.Passes(2 * 65)
            assert got[("integrated_gradients_smoothgrad", "sensitivity")] == costs.Passes(10, 10)
        assert total == _evaluate_counted(c, kind), explainer


def test_hand_computed_counts_at_224():
    shape = costs.Shape((224, 224), 3, 2048)
    scorecam = costs.method_params(resolve_config(), "scorecam")
    assert costs.method_passes("scorecam", scorecam, shape) == costs.Passes(2049)
    mono = costs.monotonicity_passes(MonotonicityParams(), shape)
    assert mono == costs.Passes(211)  # the study's 21 groups x 10 samples + the image
    assert costs.recognition_passes(RecognitionParams(), (224, 224)) == (costs.Passes(55), costs.Passes(3))
    assert costs.sensitivity_passes(SensitivityParams(), costs.Passes(99)) == costs.Passes(10, 10)
    ig = METHODS.get("integrated_gradients").params_cls(n_steps=5)
    assert costs.method_passes("integrated_gradients", ig, shape) == costs.Passes(5, 5)


def test_every_method_and_pipeline_group_has_a_count():
    shape = costs.Shape((64, 64), 3, 8)
    for method in METHODS.names():
        costs.method_passes(method, METHODS.get(method).params_cls(), shape)
    cfg = resolve_config()
    for kind in ("recognition", "complexity", "localization"):
        for run, params in zip(KINDS[kind].runs, costs.kind_params(KINDS[kind], cfg)):
            costs.group_passes(run.group.name, params, shape, costs.Passes(1, 1))
    no_layer = costs.Shape((64, 64), 3, None, "no grid layer")
    with pytest.raises(costs.NotApplicableError, match="no grid layer"):
        costs.method_passes("gradcam", METHODS.get("gradcam").params_cls(), no_layer)


def test_n_images_scales_every_total_exactly(tiny):
    _, cfg, shape = tiny
    small, large = _rows(cfg, shape), _rows(cfg, shape, 50_000)
    assert [(r.stage, r.method, r.group, r.passes) for r in small] == [
        (r.stage, r.method, r.group, r.passes) for r in large
    ]
    for a, b in zip(small, large):
        assert b.units * N == a.units * 50_000
        assert b.total.forward * N == a.total.forward * 50_000
    # the embedded default transforms 8 images per variant, however many are explained
    embedded = resolve_config(CONFIG_DIR / "embedded.yaml")
    rows = _rows(embedded, shape, 50_000)
    aug = [r.units for r in rows if r.stage.startswith("4/5") and r.method == "rise"]
    assert set(aug) == {8}


def test_timing_pairs_forwards_with_backwards():
    t = Timing("cpu", 4, 1, forward_s=1.0, forward_backward_s=3.0)
    assert t.seconds(costs.Passes(5, 5)) == 15.0
    assert t.seconds(costs.Passes(7, 0), scale=4.0) == 28.0


def test_costs_command_prints_and_writes(tiny, capsys):
    path, cfg, _ = tiny
    assert plan.main(["--config", str(path), "--costs", "--calibration-batches", "1"]) == 0
    out = capsys.readouterr().out
    assert "integrated_gradients_smoothgrad" in out and "64 CPUs" in out and "total" in out
    frame = pd.read_csv(f"{cfg.run.output_root}/{plan.COSTS_CSV}")
    maps = frame[frame.stage.str.startswith("2/5") & (frame.group == "generation")]
    ig = maps[maps.method == "integrated_gradients_smoothgrad"]
    assert ig.forward_per_unit.tolist() == [5.0] and ig.units.tolist() == [N * 2]
    assert (frame.forward == frame.forward_per_unit * frame.units).all()
    assert (frame.seconds >= 0).all()

    (frame_path := plan.Path(cfg.run.output_root) / plan.COSTS_CSV).unlink()
    argv = ["--config", str(path), "--costs", "--n-images", "50000", "--no-write"]
    assert plan.main([*argv, "--calibration-batches", "1"]) == 0
    assert "50,000 images" in capsys.readouterr().out and not frame_path.exists()


def test_given_times_replace_the_calibration(tiny, capsys):
    """--per-image-ms plans for a device one does not have: seconds = the passes at the given times."""
    path, cfg, _ = tiny
    argv = ["--config", str(path), "--costs", "--n-images", "1000", "--per-image-ms", "2", "5"]
    assert plan.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 device " in out and "8 devices" in out and "not measured here: forward 2 ms/image" in out
    frame = pd.read_csv(f"{cfg.run.output_root}/{plan.COSTS_CSV}")
    frame = frame[~frame.stage.str.startswith("4/5")]  # resized augmentation variants scale their passes
    both = frame[["forward", "backward"]].min(axis=1)
    expected = both * 0.005 + (frame.forward - both) * 0.002 + (frame.backward - both) * 0.003
    assert len(frame) > 5 and (frame.seconds > 0).any()
    assert ((frame.seconds - expected).abs() <= 1e-12 * expected).all()  # float64 sums of a few terms


def test_costs_without_data_need_n_images(tmp_path, capsys):
    """The study's ImageNet config plans offline from --n-images alone (a small model stands in here)."""
    flags = [
        "--config",
        str(CONFIG_DIR / "acml2024_resnet50.yaml"),
        "--output-root",
        str(tmp_path / "run"),
        "--model",
        "embedded_resnet",
        "--weights",
        "",
        "--batch-size",
        "2",
        "--costs",
        "--no-write",
        "--calibration-batches",
        "1",
    ]
    assert plan.main([*flags, "--n-images", "10"]) == 0
    out = capsys.readouterr().out
    assert "untrained embedded_resnet" in out and "input 3x224x224" in out
    assert plan.main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot count the run's images")
    assert err[0].endswith("give --n-images N")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--costs", "--n-images", "0"], "error: --n-images must be >= 1, got 0"),
        (["--n-images", "5"], "error: --n-images goes with --costs"),
        (["--no-write"], "error: --no-write goes with --costs"),
        (["--costs", "--calibration-batches", "0"], "error: --calibration-batches must be >= 1, got 0"),
        (
            ["--per-image-ms", "1", "2"],
            "error: --per-image-ms F FB goes with --costs, with 0 < F <= FB (milliseconds)",
        ),
        (
            ["--costs", "--per-image-ms", "2", "1"],
            "error: --per-image-ms F FB goes with --costs, with 0 < F <= FB (milliseconds)",
        ),
    ],
)
def test_bad_flags_are_one_line(tmp_path, capsys, argv, message):
    assert plan.main(["--output-root", str(tmp_path), *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]
