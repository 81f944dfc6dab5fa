"""``salbench explain``: image files in, a figure with every method's overlay (and metric values) out."""

from __future__ import annotations

import numpy as np
from PIL import Image

from salbench.stages.cli import main as salbench
from tests.conftest import write_stage_config


def test_explain_one_image_with_metrics(tmp_path, imagenet_fixture, capsys):
    cfg = write_stage_config(tmp_path, imagenet_fixture, "groundtruth")
    image = imagenet_fixture / "val" / "ILSVRC2012_val_00000001.png"
    out = tmp_path / "fig.png"
    argv = ["explain", "--config", str(cfg), "--image", str(image), "--method", "gradcam", "fakecam"]
    assert salbench([*argv, "--target", "7", "--metrics", "insertion", "sparseness", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"-> {out}" in text and "gradcam: I " in text and "Sparseness" in text
    with Image.open(out) as fig:
        pixels = np.asarray(fig.convert("RGB"))
    assert fig.size[0] > 2 * fig.size[1] and pixels.std() > 10  # three panels side by side, not blank
    # fake-CAM's map is all ones but one pixel: sparseness of |a| + 1e-7 is tiny and stated
    line = next(x for x in text.splitlines() if x.strip().startswith("fakecam:"))
    assert float(line.rsplit("Sparseness", 1)[1]) < 1e-3


def test_explain_errors_are_one_line(tmp_path, imagenet_fixture, capsys):
    cfg = write_stage_config(tmp_path, imagenet_fixture, "groundtruth")
    image = str(imagenet_fixture / "val" / "ILSVRC2012_val_00000001.png")
    base = ["explain", "--config", str(cfg), "--image", image]
    assert salbench([*base, "--method", "gradcam", "--target", "no such class"]) == 2
    assert "--target 'no such class' is neither a class index" in capsys.readouterr().err
    assert salbench([*base, "--method", "iba"]) == 2
    assert "give two or more" in capsys.readouterr().err
    assert salbench(["explain", "--config", str(cfg), "--image", str(tmp_path), "--method", "gradcam"]) == 2
    assert "cannot be read" in capsys.readouterr().err
