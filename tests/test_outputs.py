"""Outputs a user can rely on: the umask's permissions, 16-bit images read right, file-system errors
as one line with the completed work kept."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from salbench.data.transforms import Preprocess
from salbench.stages.cli import main as salbench
from salbench.store import outputs
from salbench.store.outputs import atomic_path, write_csv, write_text


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_csv(tmp_path / "b.csv", pd.DataFrame({"a": [1]}))
        with atomic_path(tmp_path / "c.bin") as tmp:
            tmp.write_bytes(b"1")
        (tmp_path / "plain.txt").write_text("x")  # what a normal write gives
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~mask
    for name in ("a.txt", "b.csv", "c.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_16_bit_grey_images_are_scaled_by_their_bit_depth(tmp_path):
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I")
        pixels = Preprocess(resize=0, crop=0).pixels(img)
    assert pixels.shape == (3, 32, 32)
    # 8-bit quantisation of value/65535: at most half a level (0.5/255) from the exact fraction
    expected = ramp.astype(np.float64) / 65535.0
    np.testing.assert_allclose(pixels[0].numpy(), expected, rtol=0, atol=0.5 / 255 + 1e-7)
    assert float((pixels > 0.99).float().mean()) < 0.01  # not the white image Pillow's convert gives


def test_a_full_disk_is_one_line_and_keeps_completed_work(tmp_path, imagenet_fixture, monkeypatch, capsys):
    from tests.conftest import write_stage_config

    cfg = write_stage_config(tmp_path, imagenet_fixture, "groundtruth")
    c = ["--config", str(cfg)]
    assert salbench(["diagnostics", *c]) == 0
    real = outputs.write_csv
    done = tmp_path / "out" / "embedded_resnet" / "diagnostics" / "diagnostics.csv"

    def full(path, frame):
        if str(path).endswith(".csv") and "maps" not in str(path) and path != done:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, frame)

    monkeypatch.setattr("salbench.stages.parts.write_csv", full)
    assert salbench(["generate", *c, "--method", "fakecam"]) == 0
    assert salbench(["evaluate", "recognition", *c]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "Traceback" not in err
    assert "No space left on device; completed work is kept" in line[0]
    assert done.is_file()  # the diagnostics written before are intact
    monkeypatch.setattr("salbench.stages.parts.write_csv", real)
    assert salbench(["evaluate", "recognition", *c]) == 0  # the rerun finishes the work
