"""Speed benchmarks (benchmarks/): the study-loop re-implementations compute salbench's numbers, the bare-cost
formula, and a ``--quick`` run of both scripts writes every row with the exact model passes per image."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks import bench_methods, bench_metrics
from benchmarks.common import COLUMNS, BareCost, Case, format_table, parse_ints
from salbench.errors import ConfigError
from salbench.methods.base import MethodContext
from salbench.methods.rise import Rise, RiseParams, generate_masks
from salbench.metrics.recognition import recognition_scores
from salbench.models.embedded import EmbeddedResNet
from tests._tolerance import double


class TinyNet(nn.Module):
    """conv -> ReLU -> global average -> linear: 3 logits of a (N,3,H,W) input."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _inputs(n: int = 3, size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, size, size, generator=g)
    maps = torch.rand(n, size, size, generator=g)
    return images, maps, torch.tensor([0, 2, 1])[:n]


def test_bare_cost_counts_a_backward_row_as_one_forward_backward() -> None:
    bare = BareCost(forward=0.5, forward_backward=2.0)
    assert bare.seconds(10, 4) == 6 * 0.5 + 4 * 2.0
    assert bare.seconds(3, 0) == 1.5


def test_parse_ints_names_the_flag() -> None:
    assert parse_ints("16, 128", "--batch-sizes") == (16, 128)
    with pytest.raises(ConfigError, match="--batch-sizes"):
        parse_ints("16,x", "--batch-sizes")
    with pytest.raises(ConfigError, match="--bare-batch-sizes"):
        parse_ints("0", "--bare-batch-sizes")


def test_bad_flags_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_metrics.main(["--only", "deletion_auc"]) == 2
    assert bench_methods.main(["--models", "vgg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --only: unknown ['deletion_auc']")
    assert err[1].startswith("error: --models: unknown ['vgg']")


@pytest.mark.numeric
@pytest.mark.parametrize("gpu_batch", [5, 32])
def test_study_rise_loop_equals_salbench_rise(gpu_batch: int) -> None:
    """Same masks, logits scores: the per-image all-class loop and salbench's batched target-only RISE give
    the same min-max maps. float64 model and images: the study loop is exact to ~1e-16 (then rounded to
    float32); salbench's RISE rounds logits to float32 (``Rise.scores``) and sums s M / (N p1) over the
    12 masks in float32: <= 13 * 2**-24 * max|logit| (5.8) * max(sum M) / (N p1) (1.45) ~ 6.5e-6,
    divided by the target map's span (>= 1.6) ~ 4e-6, plus a few 2**-24 of min-max rounding < 1e-5.
    The study's epsilon (2.2e-16 added to the span) is far below that."""
    model = double(TinyNet().eval())
    images, _, targets = _inputs()
    images = images.double()
    p = RiseParams(n_masks=12, grid_size=3, p1=0.3, max_batch=7)
    masks = generate_masks(p.n_masks, p.grid_size, p.p1, (8, 8), torch.Generator().manual_seed(4))
    ours = Rise(model, MethodContext(num_classes=3), p, masks=masks)(images, targets)
    with torch.no_grad():
        study = bench_methods.study_rise_maps(model, images, targets, masks, p.p1, gpu_batch)
    assert study.shape == (3, 8, 8) and float(study.std()) > 0.1
    torch.testing.assert_close(study, ours, atol=1e-5, rtol=0)


@pytest.mark.numeric
def test_study_causal_loop_equals_recognition_scores() -> None:
    """One model call per step (the RISE authors' loop) and salbench's batched engine give the same
    deletion (zero substrate) and insertion (blurred start) curves. float64 model and inputs: the two
    differ only in batch layout and blur call, ~1e-16 on probabilities, hence 1e-12."""
    model = double(TinyNet().eval())
    images, maps, targets = (t.double() if t.is_floating_point() else t for t in _inputs())
    ident = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    ours = recognition_scores(model, images, maps, targets, mean=ident[0], std=ident[1], step=5)
    with torch.no_grad():
        deletion, insertion = bench_metrics.study_causal_curves(model, images, maps, targets, step=5)
    assert deletion.shape == (3, 14)  # ceil(64 / 5) = 13 steps + the start
    np.testing.assert_allclose(deletion, ours["deletion_curve"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(insertion, ours["insertion_curve"], atol=1e-12, rtol=0)
    assert np.ptp(deletion, axis=1).min() > 1e-3  # the curves move: the comparison is not vacuous


# Exact model rows per image at the embedded model, 28 curve steps, acml2024 settings. Score-CAM: one
# forward for the activations, then one masked copy per channel of layer4 (the fc layer's inputs).
CHANNELS = EmbeddedResNet(num_classes=10).fc.in_features
METHOD_PASSES = {
    ("salbench", "rise"): (32, 0),
    ("study_loop", "rise"): (32, 0),
    ("salbench", "scorecam"): (1 + CHANNELS, 0),
    ("pytorch_grad_cam", "scorecam"): (1 + CHANNELS, 0),
    ("salbench", "integrated_gradients"): (100, 100),
    ("captum", "integrated_gradients"): (100, 100),
    ("salbench", "lime"): (40, 0),
    ("captum", "lime"): (40, 0),
    ("salbench", "gradcam"): (1, 1),
    ("pytorch_grad_cam", "gradcam"): (1, 1),
    ("salbench", "gradient"): (1, 1),
    ("captum", "gradient"): (1, 1),
}
METRIC_PASSES = {
    ("study_loop", "insertion_deletion"): (2 * 29, 0),
    ("salbench", "insertion_deletion"): (1 + 3 + 2 * 27, 0),  # masked image, 3 curve ends, 2 interiors
    ("torchcam", "insertion_deletion"): (1 + 1 + 2 * 27, 0),  # f(x), the shared all-baseline end
    ("saliency_maps_metrics", "insertion_deletion"): (2 * 29, 0),
    ("salbench", "insertion_deletion_further"): (1 + 2 * 27, 0),
    ("salbench", "ad_ai"): (2, 0),
    ("torchcam", "ad_ai"): (2, 0),
    ("salbench", "monotonicity"): (1 + 21 * 10, 0),  # f(x) + 21 groups x 10 samples
    ("quantus", "monotonicity"): (1 + 21 * 10, 0),
    ("salbench", "max_sensitivity"): (10, 10),
    ("quantus", "max_sensitivity"): (10, 10),
    ("salbench", "avg_sensitivity"): (10, 10),
    ("quantus", "avg_sensitivity"): (10, 10),
    # f(x), kept and removed images; the package evaluates f(x) in each of its two metrics
    ("salbench", "gomez_single_step"): (3, 0),
    ("saliency_maps_metrics", "gomez_single_step"): (4, 0),
    # 56 x 56 map cells, 16 per step (bound_max_step): 196 steps + the start
    ("salbench", "gomez_deletion"): (197, 0),
    ("saliency_maps_metrics", "gomez_deletion"): (197, 0),
    ("salbench", "gomez_insertion"): (197, 0),
    ("saliency_maps_metrics", "gomez_insertion"): (197, 0),
}


def _run_quick(script, tmp_path: Path) -> list[dict[str, str]]:
    out = tmp_path / f"{script.SCRIPT}.csv"
    threads = torch.get_num_threads()
    try:  # one thread: small ops on a shared 2-core machine are far faster without thread barriers
        assert script.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    with out.open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


@pytest.mark.parametrize(
    ("script", "expected"), [(bench_methods, METHOD_PASSES), (bench_metrics, METRIC_PASSES)]
)
def test_quick_run_writes_every_row_with_exact_passes(script, expected, tmp_path: Path) -> None:
    rows = _run_quick(script, tmp_path)
    bare = {(r["task"], int(r["batch_size"])) for r in rows if r["implementation"] == "bare"}
    assert bare == {("forward", 1), ("forward", 16), ("forward_backward", 1), ("forward_backward", 16)}
    timed = {(r["implementation"], r["task"]): r for r in rows if r["implementation"] != "bare"}
    assert set(timed) == set(expected)
    for key, (fwd, bwd) in expected.items():
        r = timed[key]
        assert r["status"] == "ok", (key, r["status"])
        assert (float(r["forward_rows_per_image"]), float(r["backward_rows_per_image"])) == (fwd, bwd), key
        assert float(r["passes_per_image"]) == fwd + bwd
        sec, bare_s = float(r["seconds_per_image"]), float(r["bare_seconds_per_image"])
        assert sec > 0 and bare_s > 0
        # csv writes repr (round-trips), so this is the very float64 quotient: equal; 1e-9 is slack only
        assert math.isclose(float(r["ratio_to_bare"]), sec / bare_s, rel_tol=1e-9)
        assert (r["model"], r["input_size"], r["n_images"], r["repeats"], r["threads"]) == (
            "embedded",
            "56",
            "2",
            "1",
            "1",
        )
    assert "ratio" in format_table(rows).splitlines()[0]


def test_failing_peer_becomes_an_error_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that raises is reported with status ``error: <one line>``; the other rows still run."""

    def broken(work, batch):
        def run(n):
            raise RuntimeError("peer exploded\nsecond line")

        return Case("torchcam", "ad_ai", batch, run)

    monkeypatch.setattr(bench_metrics, "_torchcam_ad_ai", broken)
    out = tmp_path / "m.csv"
    argv = ["--quick", "--threads", "1", "--only", "ad_ai", "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        assert bench_metrics.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    rows = {r["implementation"]: r for r in csv.DictReader(out.open()) if r["task"] == "ad_ai"}
    assert rows["torchcam"]["status"] == "error: RuntimeError: peer exploded second line"
    assert rows["torchcam"]["seconds_per_image"] == "nan"
    assert rows["salbench"]["status"] == "ok"
