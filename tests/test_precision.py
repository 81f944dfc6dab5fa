"""Reduced-precision passes (``--precision``) and the image loader's worker processes (``--workers``).

Precision: ``pass_precision`` autocasts only the forward-only passes of re-inference metrics and
sampling methods. ``fp32`` must leave every number bit-identical (no autocast at all); gradients are
never autocast, so a gradient map under ``bf16`` is bit-identical too; a sampling method's map and a
metric's probabilities under ``bf16`` must differ from float32 (the autocast took effect) yet stay close.
How close, from the arithmetic: bf16 keeps 8 significant bits, so each rounded operand is off by at
most 2^-9 relative; the random EmbeddedResNet used here has 9 convolution/linear layers, each rounding its
inputs and weights (2 operands, accumulation in float32), so its logits are off by about
9 * 2 * 2^-9 ~ 3.5% of their scale (|logit| < 1 for this untrained model at 32x32: < 0.035). A
softmax probability moves by at most 2 * max|dz| * p <= 0.07 * p; the tests allow 0.1 * p. Maps are
min-max rescaled weighted sums of masks whose weights move like probabilities: allowed 0.1 absolute.

Workers: the same decoding code runs in the worker processes, so the images are bit-identical.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from salbench.config import resolve_config
from salbench.data.images import ArrayImages, FileImages, loader_workers, save_array_images, stream
from salbench.data.sources import open_data
from salbench.errors import DataError
from salbench.methods.base import Preparation
from salbench.methods.factory import build_method
from salbench.metrics.engine import target_probs
from salbench.metrics.gomez import SingleStepParams
from salbench.metrics.recognition import RecognitionParams
from salbench.models.embedded import EmbeddedResNet
from salbench.scoped import current_precision, pass_precision
from salbench.stages.cli import main as salbench
from tests.conftest import make_imagenet, write_stage_config


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return EmbeddedResNet(num_classes=10).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


TARGETS = torch.tensor([0, 3, 5, 9])


def test_fp32_is_no_autocast_and_bf16_moves_probabilities_within_its_rounding(model, images):
    plain = target_probs(model, images, TARGETS)
    with pass_precision("fp32"):
        assert torch.equal(target_probs(model, images, TARGETS), plain)
    with pass_precision("bf16"):
        assert current_precision() == "bf16"
        low = target_probs(model, images, TARGETS)
    assert current_precision() == "fp32"
    assert low.dtype == torch.float32
    assert not torch.equal(low, plain)
    assert ((low - plain).abs() <= 0.1 * plain).all(), (low, plain)


def test_gradients_stay_float32_and_sampling_methods_follow_the_precision(model, images):
    gen = [torch.Generator().manual_seed(i) for i in range(len(images))]
    grad = build_method("gradient", model, num_classes=10)
    rise = build_method("rise", model, num_classes=10, n_masks=16, max_batch=32)
    rise.prepare(Preparation(lambda: [images], (32, 32)))
    reference = grad(images, TARGETS), rise(images, TARGETS, gen)
    with pass_precision("bf16"):
        gen = [torch.Generator().manual_seed(i) for i in range(len(images))]
        low = grad(images, TARGETS), rise(images, TARGETS, gen)
    assert torch.equal(low[0], reference[0])
    assert low[1].dtype == torch.float32
    assert not torch.equal(low[1], reference[1])
    assert (low[1] - reference[1]).abs().max() <= 0.1


def test_tie_tolerances_are_raised_to_the_precision_floor():
    """Twice the unit roundoff of the pass precision: bf16 2**-7, fp16 2**-10; fp32 keeps the preset's
    1e-5 and a tolerance already above the floor is kept."""
    params = RecognitionParams()
    assert params.at_precision("fp32") is params
    assert params.at_precision("bf16").ai_tolerance == 2**-7
    assert params.at_precision("fp16").ai_tolerance == 2**-10
    assert RecognitionParams(ai_tolerance=0.05).at_precision("bf16").ai_tolerance == 0.05
    assert SingleStepParams().at_precision("bf16").iic_tolerance == 2**-7
    assert dataclasses.replace(params.at_precision("bf16"), ai_tolerance=1e-5) == params  # nothing else


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp8"), pass_precision("fp8"):
        pass


def test_workers_decode_the_same_images_in_order(tmp_path: Path):
    source = FileImages(_data(tmp_path))
    batches = [np.array([3, 0]), np.array([5]), np.array([1, 2, 4])]
    alone = list(stream(source, batches, "cpu", workers=0))
    pooled = list(stream(source, batches, "cpu", workers=2))
    assert [x.shape[0] for x in pooled] == [2, 1, 3]
    for a, b in zip(alone, pooled, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(alone[2], source.load(np.array([1, 2, 4])))


def test_an_unreadable_image_in_a_worker_is_the_one_line_error(tmp_path: Path):
    data = _data(tmp_path)
    source = FileImages(data)
    source.source.records[2].path.write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        list(stream(source, [np.array([0, 1]), np.array([2, 3])], "cpu", workers=2))
    assert "cannot be read" in str(err.value) and "\n" not in str(err.value)
    assert "DataLoader" not in str(err.value)


def test_memory_mapped_arrays_stream_through_workers(tmp_path: Path):
    arr = np.arange(5 * 3 * 4 * 4, dtype=np.float32).reshape(5, 3, 4, 4)
    save_array_images(tmp_path / "a", arr, [f"i{k}" for k in range(5)], np.zeros(5), {})
    got = list(stream(ArrayImages(tmp_path / "a"), [np.array([4, 1]), np.array([0])], "cpu", workers=1))
    assert torch.equal(got[0], torch.from_numpy(arr[[4, 1]])) and torch.equal(
        got[1], torch.from_numpy(arr[[0]])
    )


def test_automatic_workers(monkeypatch):
    assert loader_workers(-1, "cpu") == 0 and loader_workers(3, "cpu") == 3
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert loader_workers(-1, "cuda") == 7  # 16 CPUs / 2 processes, one left to the process itself
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loader_workers(-1, "cuda") == 8  # at most MAX_AUTO_WORKERS


def test_stages_record_the_precision_and_recompute_when_it_changes(tmp_path: Path):
    images = make_imagenet(tmp_path, 4)
    cfg = write_stage_config(tmp_path, images, "groundtruth", "methods: {rise: {n_masks: 8}}\n")
    out = tmp_path / "out"
    flags = ["--config", str(cfg), "--output-root", str(out), "--progress", "off"]
    assert salbench(["diagnostics", *flags]) == 0
    assert (
        salbench(["generate", "--method", "rise", "gradcam", "--precision", "bf16", "--workers", "1", *flags])
        == 0
    )
    maps = out / "embedded_resnet" / "maps" / "groundtruth"
    attrs = {
        m: json.loads((maps / f"{m}.zarr" / "zarr.json").read_text())["attributes"]
        for m in ("rise", "gradcam")
    }
    assert attrs["rise"]["precision"] == "bf16" and attrs["gradcam"]["precision"] == "fp32"
    assert salbench(["evaluate", "recognition", "--method", "gradcam", "--precision", "bf16", *flags]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results.loc[results["method"] == "gradcam", "precision"]) == {"bf16"}
    sidecar = out / "embedded_resnet" / "evaluation" / "groundtruth" / "gradcam_recognition.json"
    first = json.loads(sidecar.read_text())["key"]
    recorded = json.loads(sidecar.read_text())["inputs"]["params"][0]
    assert recorded["ai_tolerance"] == 2**-7  # bf16's near-tie floor, recorded with the outputs
    diag = pd.read_csv(out / "embedded_resnet" / "diagnostics" / "diagnostics.csv")["groundtruth_prob"]
    per_image = pd.read_csv(sidecar.with_suffix(".csv"))["base_prob"]
    # under bf16, Y is f(x) computed in bf16 (compared with O in one precision), not stage 1's fp32 value
    assert not np.array_equal(per_image.to_numpy(), diag.to_numpy())
    assert (np.abs(per_image - diag) <= 0.1 * diag).all()
    assert salbench(["evaluate", "recognition", "--method", "gradcam", *flags]) == 0
    assert json.loads(sidecar.read_text())["key"] != first  # fp32 recomputed, not reused
    assert json.loads(sidecar.read_text())["inputs"]["params"][0]["ai_tolerance"] == 1e-5  # the preset's
    per_image = pd.read_csv(sidecar.with_suffix(".csv"))["base_prob"]
    assert np.array_equal(per_image.to_numpy(), diag.to_numpy())  # fp32: stage 1's Y, as written
    results = pd.read_csv(out / "results.csv")
    assert set(results.loc[results["method"] == "gradcam", "precision"]) == {"fp32"}


def _data(tmp_path: Path):
    images = make_imagenet(tmp_path, 6)
    return open_data(resolve_config(write_stage_config(tmp_path, images, "groundtruth")))
