"""A method that cannot apply to the model is skipped with one recorded line, never a traceback: checked
before any work (function level), recorded by generation (log, marker file, results.csv row), shown as
"not applicable" by the report, and cleared when a later run finds the method applicable."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from generation import cams, casme, gradients, iba
from main import diagnostics
from salbench.errors import ConfigError, NotApplicableError
from salbench.methods import METHODS, build_method
from salbench.methods.base import Preparation
from salbench.report.render import to_markdown
from salbench.report.results import RunKey, not_applicable, select_run
from salbench.report.tables import NA_LABEL, build_tables
from salbench.stages.generate import NOT_APPLICABLE
from salbench.store.layout import model_folder
from salbench.store.maps import MapStore
from salbench.store.results import read_results

LAYER_METHODS = [m for m in METHODS.names() if METHODS.get(m).family == "CAM"] + ["iba"]


class Flat(nn.Module):
    """No spatial layer a CAM could read: a 4x4 average pool, flattened, and a linear head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(x)))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("method_id", LAYER_METHODS)
def test_layer_methods_are_not_applicable_without_a_grid(method_id):
    """No target layer, or one whose output is a vector: NotApplicableError (a ConfigError, one line)
    from the check before any work; hooks removed, the model untouched."""
    model = Flat(10).eval()
    x = torch.randn(2, 3, 16, 16)
    for layer, pattern in [
        (None, "as configured: it needs a target layer"),
        (model.flatten, r"at target layer 'flatten': .* is neither a feature map"),
    ]:
        with pytest.raises(
            NotApplicableError, match=f"^{method_id} does not apply to Flat {pattern}"
        ) as info:
            method = build_method(method_id, model, target_layer=layer, num_classes=10)
            method.check_applies(x[:1])
        assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)
        assert _hooks(model) == 0 and not model.training
    grid = build_method(method_id, model, target_layer="pool", num_classes=10)  # (N, 3, 4, 4): a grid
    grid.check_applies(x[:1])
    grid.prepare(Preparation(lambda: [x], (16, 16)))
    assert grid(x, torch.tensor([1, 2]), torch.Generator().manual_seed(0)).shape == (2, 16, 16)


def test_every_other_method_applies_to_any_classifier():
    model = Flat(10).eval()
    x = torch.randn(1, 3, 16, 16)
    for method_id in METHODS.names():
        if method_id not in (*LAYER_METHODS, "casme"):
            build_method(method_id, model, num_classes=10).check_applies(x)  # does not raise


FLAT_SOURCE = textwrap.dedent(
    """
    from torch import nn


    class Flat(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(4)
            self.flatten = nn.Flatten()
            self.head = nn.Linear(48, num_classes)

        def forward(self, x):
            return self.head(self.flatten(self.pool(x)))


    def make(num_classes=1000):
        return Flat(num_classes)
    """
)


@pytest.fixture
def flat_run(tmp_path, imagenet_fixture, monkeypatch):
    """A user's model without a spatial layer (``na_flat:make``), the ImageNet-layout fixture, stage 1 run."""
    (tmp_path / "na_flat.py").write_text(FLAT_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"run: {{output_root: {tmp_path / 'out'}, batch_size: 4, label_sets: [groundtruth, least]}}\n"
        f"data: {{kind: imagenet, root: {imagenet_fixture}, list_csv: val_list.csv, annotations: boxes, "
        "resize: 72, crop: 64}\n"
        "model: {name: 'na_flat:make'}\n"
        "methods: {iba: {steps: 1, n_noise: 2}}\n"
    )
    assert diagnostics.main(["--config", str(cfg)]) == 0
    return cfg, tmp_path / "out"


def test_generation_skips_and_records_then_report_shows_not_applicable(flat_run, capsys):
    cfg, out = flat_run
    c = ["--config", str(cfg)]
    assert cams.main([*c, "--method", "gradcam", "scorecam"]) == 0
    assert iba.main(c) == 0
    assert casme.main(c) == 0  # no masker, and a Flat cannot be a masker's encoder
    assert gradients.main([*c, "--method", "gradient"]) == 0
    captured = capsys.readouterr()
    printed, logged = captured.out.splitlines(), captured.err.splitlines()
    for method_id in ("gradcam", "scorecam", "iba", "casme"):
        for label_set in ("groundtruth", "least"):
            lines = [ln for ln in printed if ln.split()[:2] == [label_set, method_id]]
            assert len(lines) == 1 and "not applicable: " in lines[0], (method_id, label_set, printed)
            marker = (
                out / model_folder("na_flat:make") / "maps" / label_set / f"{method_id}.{NOT_APPLICABLE}.json"
            )
            record = json.loads(marker.read_text())
            assert record["method"] == method_id and f"{method_id} does not apply to Flat" in record["reason"]
        warned = [ln for ln in logged if f"/{method_id}: not applicable, skipped" in ln]
        assert len(warned) == 2  # one warning per label set
        assert not (
            out / model_folder("na_flat:make") / "maps" / "groundtruth" / f"{method_id}.zarr"
        ).exists()
    assert MapStore.read_only(
        out / model_folder("na_flat:make") / "maps" / "least" / "gradient_smoothgrad.zarr"
    ).complete

    results = read_results(out / "results.csv")
    rows = results[results["metric"] == NOT_APPLICABLE]
    assert sorted(rows["method"].unique()) == ["casme", "gradcam", "iba", "scorecam"]
    assert (rows["value"] == 1).all() and (rows["n_skipped"] == 6).all() and len(rows) == 8
    assert set(rows.loc[rows["method"] == "gradcam", "family"]) == {"CAM"}

    from evaluation import interpretable_recognition

    assert interpretable_recognition.main(c) == 0
    frame = select_run(
        read_results(out / "results.csv"), RunKey("na_flat:make", rows["dataset"].iat[0], "acml2024")
    )
    assert not_applicable(frame) == ["casme", "gradcam", "iba", "scorecam"]
    table = build_tables(frame)["table2"]
    labels = dict(zip(table.rows["method"], table.rows["label"]))
    assert labels["gradcam"].endswith(NA_LABEL) and not labels["gradient_smoothgrad"].endswith(NA_LABEL)
    assert (
        table.rows.loc[table.rows["method"] == "iba"]
        .drop(columns=["family", "method", "label"])
        .isna()
        .all(axis=None)
    )
    line = next(ln for ln in to_markdown(table).splitlines() if f"Grad-CAM{NA_LABEL}" in ln)
    assert line.count("n/a") == len(table.columns)


def test_a_method_that_applies_again_clears_its_record(flat_run):
    """A target layer with a grid (the 4x4 pool) makes Grad-CAM applicable: marker removed, row 0."""
    cfg, out = flat_run
    c = ["--config", str(cfg), "--label-set", "groundtruth"]
    assert cams.main([*c, "--method", "gradcam"]) == 0
    marker = out / model_folder("na_flat:make") / "maps" / "groundtruth" / f"gradcam.{NOT_APPLICABLE}.json"
    assert marker.is_file()
    text = cfg.read_text().replace(
        "model: {name: 'na_flat:make'}", "model: {name: 'na_flat:make', target_layer: pool}"
    )
    cfg.write_text(text)
    assert cams.main([*c, "--method", "gradcam"]) == 0
    assert not marker.exists()
    assert MapStore.read_only(
        out / model_folder("na_flat:make") / "maps" / "groundtruth" / "gradcam.zarr"
    ).complete
    rows = read_results(out / "results.csv")
    row = rows[(rows["metric"] == NOT_APPLICABLE) & (rows["method"] == "gradcam")]
    assert row["value"].tolist() == [0.0] and not_applicable(rows) == []


def test_explain_skips_a_method_that_does_not_apply(flat_run, imagenet_fixture, tmp_path, capsys):
    from salbench.stages.cli import main as salbench

    cfg, _ = flat_run
    image = str(imagenet_fixture / "val" / "ILSVRC2012_val_00000001.png")
    out = tmp_path / "fig.png"
    argv = ["explain", "--config", str(cfg), "--image", image, "--method", "gradcam", "gradient"]
    assert salbench([*argv, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if ln.startswith("gradcam: not applicable, skipped: gradcam does not apply")]
    assert out.is_file()
