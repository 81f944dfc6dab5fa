from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from main import diagnostics as diag_script
from salbench.config import resolve_config
from salbench.data.images import FileImages
from salbench.data.sources import open_data
from salbench.methods.base import MethodContext
from salbench.runtime import setup_runtime
from salbench.stages.diagnostics import compute_diagnostics, read_targets
from salbench.stages.workspace import Workspace
from salbench.store.layout import RunLayout
from tests.conftest import REPO


class ChannelMeans(nn.Module):
    """logits = 2 * (mean R, mean G, mean B) of the normalised input: softmax known in closed form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x.mean(dim=(2, 3))


def _colour_folder(tmp_path):
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    for name, rgb in colours.items():
        (tmp_path / name).mkdir(parents=True)
        Image.new("RGB", (6, 6), rgb).save(tmp_path / name / "a.png")
    return tmp_path


def test_diagnostics_exact_softmax(tmp_path):
    root = _colour_folder(tmp_path / "data")
    cfg = resolve_config(
        None,
        {
            "run": {"output_root": str(tmp_path / "out"), "batch_size": 2},
            "data": {
                "kind": "imagefolder",
                "root": str(root),
                "resize": 6,
                "crop": 6,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
            },
        },
    )
    data = open_data(cfg)
    assert data.class_names == ("blue", "green", "red")
    ws = Workspace(
        cfg,
        setup_runtime(cfg.run),
        RunLayout.from_config(cfg),
        data,
        ChannelMeans(),
        {},
        "",
        MethodContext(),
        FileImages(data),
    )
    frame = compute_diagnostics(ws, progress=False)
    # blue image: normalised means (-1, -1, 1) -> logits (-2, -2, 2)
    e = math.exp
    p_hi, p_lo = e(2) / (e(2) + 2 * e(-2)), e(-2) / (e(2) + 2 * e(-2))
    row = frame.iloc[0]
    assert (
        row["groundtruth_label"] == 0 and row["predicted_label"] == 2
    )  # logits index RGB, labels sorted names
    # float32 softmax of exact small logits: exp, sum, division, ~4 roundings of 2**-24 relative, < 3e-7
    assert row["groundtruth_prob"] == pytest.approx(p_lo, abs=1e-6)
    assert row["predicted_prob"] == pytest.approx(p_hi, abs=1e-6)
    assert row["least_prob"] == pytest.approx(p_lo, abs=1e-6)
    assert row["least_label"] == 0  # tie between R and G: argmin takes the first
    assert frame["correct"].tolist() == [False, True, False]


def _imagenet_cfg(tmp_path, fixture):
    ckpt = tmp_path / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), ckpt)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"run: {{output_root: {tmp_path / 'out'}, batch_size: 4}}\n"
        f"data: {{kind: imagenet, root: {fixture}, list_csv: val_list.csv, annotations: boxes, "
        "resize: 72, crop: 64}\n"
        f"model: {{name: resnet18, checkpoint: {ckpt}}}\n"
    )
    return cfg


def test_diagnostics_stage_on_imagenet_layout(tmp_path, imagenet_fixture, capsys):
    cfg = _imagenet_cfg(tmp_path, imagenet_fixture)
    assert diag_script.main(["--config", str(cfg)]) == 0
    out = tmp_path / "out" / "resnet18" / "diagnostics"
    frame = pd.read_csv(out / "diagnostics.csv")
    assert len(frame) == 6 and frame["image_id"].iloc[0] == "val/ILSVRC2012_val_00000001"
    assert (frame["predicted_prob"] >= frame["groundtruth_prob"]).all()
    assert (frame["least_prob"] <= frame["groundtruth_prob"]).all()
    info = json.loads((out / "complete_info.json").read_text())
    assert list(info) == [
        "Filenames",
        "GroundtruthLabels",
        "GroundtruthProbs",
        "PredictedLabels",
        "PredictedProbs",
        "WorstLabels",
        "WorstProbs",
    ]
    assert info["GroundtruthLabels"] == [0, 7, 14, 21, 28, 35]
    assert (out / "config.yaml").is_file() and (out / "manifest.json").is_file()
    assert "top-1 accuracy" in capsys.readouterr().out
    mtime = (out / "diagnostics.csv").stat().st_mtime_ns
    assert diag_script.main(["--config", str(cfg)]) == 0  # rerun: reused, not rewritten
    assert (out / "diagnostics.csv").stat().st_mtime_ns == mtime
    targets, _ = read_targets(out / "diagnostics.csv", "least", frame["image_id"].tolist()[::-1])
    assert targets.tolist() == frame["least_label"].tolist()[::-1]


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, str(REPO / "main" / "diagnostics.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, imagenet_fixture):
    cfg = str(_imagenet_cfg(tmp_path, imagenet_fixture))
    lst = imagenet_fixture / "val_list.csv"
    good = lst.read_text()
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("run:\n  bacth_size: 3\n")
    broken = imagenet_fixture / "val" / "ILSVRC2012_val_00000003.png"
    cases = [
        (good, ["--config", cfg, "--data-root", str(tmp_path / "nope")], "data root"),
        (good + "val/ILSVRC2012_val_00000001.png;3\n", ["--config", cfg], "val_list.csv:7"),
        (good.replace(",35", ",1000"), ["--config", cfg], "val_list.csv:6: label 1000 out of range"),
        (good, ["--config", cfg, "--model", "resnet5000"], "unknown model 'resnet5000'"),
        (good, ["--config", str(bad_cfg)], "'run.bacth_size'"),
        (good, ["--config", cfg, "--weights", "NOPE", "--checkpoint", ""], "unknown weights 'NOPE'"),
        (good, ["--config", cfg, "--checkpoint", str(tmp_path / "none.pt")], "none.pt' does not exist"),
        (None, ["--config", cfg], "ILSVRC2012_val_00000003.png' cannot be read"),
    ]
    for text, args, expected in cases:
        if text is None:
            lst.write_text(good)
            broken.write_bytes(broken.read_bytes()[:60])  # truncated PNG
        else:
            lst.write_text(text)
        res = _run(args, tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (args, res.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert expected in lines[0] and "Traceback" not in res.stderr, lines[0]
