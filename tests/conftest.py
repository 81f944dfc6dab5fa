"""Shared fixtures: a tiny ImageNet-layout data set written by the tests themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

torch.set_num_threads(min(2, torch.get_num_threads()))


def write_stage_config(tmp_path: Path, images: Path, label_sets: str, extra: str = "") -> Path:
    """Config of a stage test: the ImageNet-layout fixture at 64x64, a random 1000-class embedded ResNet
    checkpoint (seed 0), outputs under ``tmp_path/out``; ``extra``: further YAML lines."""
    from salbench.models.embedded import EmbeddedResNet

    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    torch.save(
        {"state_dict": EmbeddedResNet(num_classes=1000).state_dict(), "meta": {"num_classes": 1000}}, ckpt
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"run: {{output_root: {tmp_path / 'out'}, batch_size: 4, label_sets: [{label_sets}]}}\n"
        f"data: {{kind: imagenet, root: {images}, list_csv: val_list.csv, annotations: boxes, "
        "resize: 72, crop: 64}\n"
        f"model: {{name: embedded_resnet, checkpoint: {ckpt}}}\n" + extra
    )
    return cfg


def write_xml(path: Path, stem: str, width: int, height: int, boxes: list[tuple[int, int, int, int]]) -> None:
    objs = "".join(
        f"<object><name>n01440764</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    path.write_text(
        f"<annotation><folder>val</folder><filename>{stem}</filename><size><width>{width}</width>"
        f"<height>{height}</height><depth>3</depth></size>{objs}</annotation>"
    )


@pytest.fixture
def imagenet_fixture(tmp_path: Path) -> Path:
    """Six random-pixel PNG 'validation images', a list CSV and ILSVRC XML boxes."""
    return make_imagenet(tmp_path)


def make_imagenet(tmp_path: Path, n_images: int = 6) -> Path:
    """Write the :func:`imagenet_fixture` files (``n_images`` of them; widths cycle through six sizes)
    under ``tmp_path/imagenet`` and return that folder."""
    root = tmp_path / "imagenet"
    (root / "val").mkdir(parents=True)
    (root / "boxes").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n_images):
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        w, h = 80 + 8 * (i % 6), 64
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "val" / f"{stem}.png")
        write_xml(root / "boxes" / f"{stem}.xml", stem, w, h, [(4, 6, w // 2, h - 10)])
        lines.append(f"val/{stem}.png,{(7 * i) % 1000}")
    (root / "val_list.csv").write_text("\n".join(lines) + "\n")
    return root
