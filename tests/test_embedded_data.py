"""Embedded benchmark generator: determinism, layout, labels, boxes vs masks, XML, atomic reuse."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon2mask

from salbench.data import embedded, shapes
from salbench.data.embedded import (
    CLASS_NAMES,
    SPLITS,
    BenchmarkSpec,
    generate_benchmark,
    load_mask,
    read_manifest,
)
from salbench.errors import ConfigError, DataError

SIZE = 48
TINY = BenchmarkSpec(image_size=SIZE, n_train=20, n_val=10, n_eval=10)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _records(root: Path, split: str) -> list[tuple[str, int]]:
    lines = (root / f"{split}.csv").read_text(encoding="utf-8").splitlines()
    return [(path, int(label)) for path, label in (line.split(",") for line in lines)]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "embedded"
    generate_benchmark(root, 7, TINY)
    return root


def test_same_seed_gives_identical_bytes_and_another_seed_differs(bench: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_benchmark(again, 7, TINY)
    assert _tree(again) == _tree(bench)
    other = tmp_path / "other"
    generate_benchmark(other, 8, TINY)
    a, b = _tree(bench), _tree(other)
    assert a.keys() == b.keys()
    images = [k for k in a if k.startswith("images/")]
    assert len(images) == 40
    assert all(a[k] != b[k] for k in images)


def test_layout_and_list_format(bench: Path) -> None:
    assert (bench / "classes.txt").read_text(encoding="utf-8") == "".join(f"{c}\n" for c in CLASS_NAMES)
    assert len(CLASS_NAMES) >= 10 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    top = {p.name for p in bench.iterdir()}
    assert top == {
        "classes.txt",
        "benchmark.json",
        "images",
        "masks",
        "annotations",
        *(f"{s}.csv" for s in SPLITS),
    }
    for split, n in zip(SPLITS, (20, 10, 10)):
        records = _records(bench, split)
        assert [r[0] for r in records] == [f"images/{split}/{split}_{i:05d}.png" for i in range(n)]
        assert re.fullmatch(
            rf"(images/{split}/{split}_\d{{5}}\.png,\d+\n)+", (bench / f"{split}.csv").read_text()
        )
        for path, _ in records:
            with Image.open(bench / path) as im:
                assert (im.mode, im.size, im.format) == ("RGB", (SIZE, SIZE), "PNG")
            with Image.open(bench / path.replace("images/", "masks/", 1)) as mk:
                assert (mk.mode, mk.size) == ("L", (SIZE, SIZE))
                assert set(np.unique(np.asarray(mk)).tolist()) == {0, 255}
            assert (bench / "annotations" / split / f"{Path(path).stem}.xml").is_file()
        assert len(list((bench / "images" / split).iterdir())) == n


def test_labels_in_range_and_balanced(bench: Path) -> None:
    manifest = json.loads((bench / "benchmark.json").read_text())
    assert manifest["seed"] == 7 and manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["spec"] == json.loads(json.dumps(dataclasses.asdict(TINY)))
    for split, n in zip(SPLITS, (20, 10, 10)):
        labels = np.array([label for _, label in _records(bench, split)])
        counts = np.bincount(labels, minlength=len(CLASS_NAMES))
        assert labels.min() >= 0 and labels.max() < len(CLASS_NAMES)
        assert counts.tolist() == [n // len(CLASS_NAMES)] * len(CLASS_NAMES)
        assert manifest["splits"][split]["per_class"] == counts.tolist()
        assert manifest["splits"][split]["count"] == n
    # not sorted by class: the order is drawn
    assert [label for _, label in _records(bench, "train")] != sorted(
        label for _, label in _records(bench, "train")
    )


def test_xml_box_is_tight_box_of_mask(bench: Path) -> None:
    manifest = json.loads((bench / "benchmark.json").read_text())
    for split in SPLITS:
        n_occluded = n_difficult = 0
        for path, label in _records(bench, split):
            ident = Path(path).stem
            root = ET.parse(bench / "annotations" / split / f"{ident}.xml").getroot()
            assert root.tag == "annotation"
            assert (root.findtext("folder"), root.findtext("filename")) == (split, ident)
            size = [int(root.findtext(f"size/{t}")) for t in ("width", "height", "depth")]
            assert size == [SIZE, SIZE, 3]
            objects = root.findall("object")
            assert len(objects) == 1 and objects[0].findtext("name") == CLASS_NAMES[label]
            box = [int(objects[0].findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
            mask = load_mask(bench / "masks" / split / f"{ident}.png")
            assert mask.dtype == np.bool_ and mask.shape == (SIZE, SIZE) and mask.sum() >= 4
            rows, cols = np.nonzero(mask)
            assert box == [cols.min(), rows.min(), cols.max(), rows.max()]
            assert 0 <= box[0] <= box[2] < SIZE and 0 <= box[1] <= box[3] < SIZE
            n_occluded += int(objects[0].findtext("occluded"))
            n_difficult += int(objects[0].findtext("difficult"))
        assert n_occluded == manifest["splits"][split]["occluded"]
        assert n_difficult == manifest["splits"][split]["difficult"]


def test_mask_is_exactly_the_visible_object(tmp_path: Path) -> None:
    # Solid fills and no noise: every mask pixel carries the object's one colour, even when an occluder
    # (always drawn here) covers part of the object; the ring just outside the mask almost never does.
    spec = dataclasses.replace(
        TINY,
        image_size=64,
        texture_fill_prob=0.0,
        gradient_fill_prob=0.0,
        noise_std=(0.0, 0.0),
        occlusion_prob=1.0,
    )
    root = tmp_path / "solid"
    manifest = generate_benchmark(root, 3, spec)
    assert manifest["splits"]["train"]["occluded"] >= 10
    same_outside, outside = 0, 0
    for path, _ in _records(root, "train"):
        image = np.asarray(Image.open(root / path)).reshape(-1, 3)
        mask = load_mask(root / path.replace("images/", "masks/", 1))
        colours = np.unique(image[mask.ravel()], axis=0)
        assert len(colours) == 1
        ring = (ndimage.binary_dilation(mask) & ~mask).ravel()
        same_outside += int((image[ring] == colours[0]).all(1).sum())
        outside += int(ring.sum())
    assert same_outside <= 0.02 * outside


def test_ambiguous_fraction_controls_difficult_flag(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    small = dataclasses.replace(TINY, n_train=10, n_val=1, n_eval=1)
    with caplog.at_level(logging.INFO, logger="salbench.data.embedded"):
        every = generate_benchmark(
            tmp_path / "a", 1, dataclasses.replace(small, ambiguous_fraction=1.0), True
        )
    assert "train 10/10 images" in caplog.text
    none = generate_benchmark(tmp_path / "b", 1, dataclasses.replace(small, ambiguous_fraction=0.0))
    assert [every["splits"][s]["difficult"] for s in SPLITS] == [10, 1, 1]
    assert [none["splits"][s]["difficult"] for s in SPLITS] == [0, 0, 0]


def test_reuse_of_complete_benchmark_is_a_noop(bench: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in bench.rglob("*")}
    expected = json.loads((bench / "benchmark.json").read_text())

    def fail(*args, **kwargs):
        raise AssertionError("nothing may be rendered when the benchmark is reused")

    monkeypatch.setattr(embedded, "_render", fail)
    assert generate_benchmark(bench, 7, TINY) == expected
    assert {p: p.stat().st_mtime_ns for p in bench.rglob("*")} == before
    assert not list(bench.parent.glob("embedded.tmp-*"))


def test_interrupted_generation_leaves_nothing_that_looks_complete(
    bench: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "bench"
    calls = {"n": 0}
    real_write = embedded._write_sample

    def crash_after_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        real_write(*args, **kwargs)

    monkeypatch.setattr(embedded, "_write_sample", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        generate_benchmark(root, 7, TINY)
    assert not root.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(embedded, "_write_sample", real_write)
    # A run killed hard leaves its temporary directory (here even with a manifest): never taken as root.
    shutil.copytree(bench, tmp_path / "bench.tmp-killed")
    assert read_manifest(root) is None
    generate_benchmark(root, 7, TINY)
    assert _tree(root) == _tree(bench)


def test_partial_or_foreign_root_is_refused_unless_overwrite(bench: Path, tmp_path: Path) -> None:
    root = tmp_path / "bench"
    shutil.copytree(bench, root)
    lines = (root / "train.csv").read_text().splitlines(keepends=True)
    (root / "train.csv").write_text("".join(lines[:-1]))
    assert read_manifest(root) is None
    with pytest.raises(DataError, match="bench"):
        generate_benchmark(root, 7, TINY)
    generate_benchmark(root, 7, TINY, overwrite=True)
    assert _tree(root) == _tree(bench)
    with pytest.raises(DataError, match="seed 9"):
        generate_benchmark(root, 9, TINY)
    assert generate_benchmark(root, 9, TINY, overwrite=True)["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_benchmark(empty, 7, TINY)["seed"] == 7
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="file"):
        generate_benchmark(tmp_path / "file", 7, TINY)


def test_spec_and_seed_validation() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        BenchmarkSpec(image_size=16)
    with pytest.raises(ConfigError, match="object_scale"):
        BenchmarkSpec(object_scale=(0.5, 0.3))
    with pytest.raises(ConfigError, match="n_clutter"):
        BenchmarkSpec(n_clutter=(1.5, 3))
    with pytest.raises(ConfigError, match="fill_prob"):
        BenchmarkSpec(texture_fill_prob=0.6, gradient_fill_prob=0.6)
    assert BenchmarkSpec.from_dict({"image_size": 64, "contrast": [0.2, 0.4]}) == BenchmarkSpec(
        image_size=64, contrast=(0.2, 0.4)
    )
    with pytest.raises(ConfigError, match="bogus"):
        BenchmarkSpec.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="seed"):
        generate_benchmark("unused", -1, TINY)


def test_load_mask_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.png"):
        load_mask(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png"):
        load_mask(tmp_path / "bad.png")
    Image.fromarray(np.array([[0, 127], [128, 255]], dtype=np.uint8), "L").save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").tolist() == [[False, False], [True, True]]


def test_textures_are_bundled_with_scikit_image() -> None:
    for name in embedded._TEXTURES:
        assert (Path(skimage.data.data_dir) / name).is_file(), name
    textures = embedded._load_textures(SIZE)
    assert len(textures) == len(embedded._TEXTURES)
    assert all(min(im.size) <= 3 * SIZE and im.mode == "RGB" for im, _ in textures)


def test_rasterised_shapes_match_skimage_polygon2mask() -> None:
    # Pixel-centre inclusion, like skimage.draw.polygon2mask: identical masks, holes included.
    size, radius, centre = 96, 38.0, np.array([47.3, 48.1])
    for name in CLASS_NAMES:
        for morph, angle, stretch in ((0.0, 0.0, 1.0), (0.5, 0.7, 1.2), (1.0, 2.9, 0.85)):
            parts = shapes.shape_parts(name, morph)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            expected = np.zeros((size, size), dtype=bool)
            for pts, hole in parts:
                xy = (pts * [stretch, 1.0 / stretch]) @ rot.T * radius + centre
                assert hole or np.linalg.norm(pts, axis=1).max() <= 1.0 + 1e-9, name  # inside the unit disk
                part = polygon2mask((size, size), xy[:, ::-1])
                expected = expected & ~part if hole else expected | part
            got = shapes.rasterise(parts, centre, radius, angle, stretch, size)
            assert np.array_equal(got, expected), (name, morph)
    square = np.array([[1.5, 1.5], [4.5, 1.5], [4.5, 3.5], [1.5, 3.5]])  # centres x 2..4, y 2..3
    assert np.argwhere(shapes.scanline_fill(square, 6)).tolist() == [
        [r, c] for r in (2, 3) for c in (2, 3, 4)
    ]


def test_shapes_have_the_expected_area_and_are_distinct() -> None:
    size, radius, centre = 128, 50.0, np.array([63.5, 63.5])
    masks = {
        name: shapes.rasterise(shapes.shape_parts(name, 0.0), centre, radius, 0.0, 1.0, size)
        for name in CLASS_NAMES
    }
    # areas of the unit shapes (96-gon disk; 5-pointed star = 10 triangles r1 r2 sin(36 deg) / 2) at r = 50:
    # pixel-centre sampling of a region this size is within 1% of its area.
    disk = np.pi * radius**2 * (96 / (2 * np.pi)) * np.sin(2 * np.pi / 96)
    assert masks["disk"].sum() == pytest.approx(disk, rel=0.01)
    assert masks["ring"].sum() == pytest.approx(disk * (1.0 - 0.55**2), rel=0.01)
    star = 5 * radius * (0.4 * radius) * np.sin(np.pi / 5)
    assert masks["star"].sum() == pytest.approx(star, rel=0.01)
    for i, a in enumerate(CLASS_NAMES):
        for b in CLASS_NAMES[i + 1 :]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.9, (a, b, iou)
        morphed = shapes.rasterise(shapes.shape_parts(a, 1.0), np.array([15.5, 15.5]), 9.0, 0.5, 1.2, 32)
        assert morphed.sum() >= 40, a  # >= 40 of the ~pi 9^2 = 254 pixels of the bounding disk


@pytest.mark.slow
def test_generation_speed_budget(tmp_path: Path) -> None:
    # Budget: 3600 images at 112x112 in under 60 s on one core, i.e. < 16.7 ms of CPU per image.
    spec = BenchmarkSpec(n_train=300, n_val=30, n_eval=30)
    embedded._load_textures(spec.image_size)
    start = time.process_time()
    generate_benchmark(tmp_path / "speed", 0, spec)
    assert (time.process_time() - start) / 360 < 60.0 / 3600
