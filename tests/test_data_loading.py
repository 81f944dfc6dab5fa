from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from salbench.data.annotations import read_annotation
from salbench.data.listing import read_list_csv, scan_image_folder
from salbench.data.transforms import Preprocess
from salbench.errors import DataError
from tests.conftest import write_xml


def test_list_csv_records(imagenet_fixture):
    recs = read_list_csv(imagenet_fixture / "val_list.csv", imagenet_fixture, 1000)
    assert [r.label for r in recs] == [0, 7, 14, 21, 28, 35]
    assert recs[0].image_id == "val/ILSVRC2012_val_00000001"
    assert recs[0].stem == "ILSVRC2012_val_00000001"
    assert recs[2].source.endswith("val_list.csv:3")


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("val/ILSVRC2012_val_00000001.png", r"val_list.csv:2: expected 'relative/path,label'"),
        ("val/ILSVRC2012_val_00000001.png,abc", r"val_list.csv:2: label 'abc' is not an integer"),
        ("val/ILSVRC2012_val_00000002.png,1000", r"val_list.csv:2: label 1000 out of range \[0, 1000\)"),
        ("val/nothere.png,3", r"val_list.csv:2: image file .*nothere.png' does not exist"),
        ("../x.png,3", r"must be relative"),
        ("val/ILSVRC2012_val_00000001.png,2", r"listed twice"),
    ],
)
def test_list_csv_errors_name_file_and_line(imagenet_fixture, line, pattern):
    lst = imagenet_fixture / "val_list.csv"
    lst.write_text("val/ILSVRC2012_val_00000001.png,0\n" + line + "\n")
    with pytest.raises(DataError, match=pattern):
        read_list_csv(lst, imagenet_fixture, 1000)


def test_missing_root_and_list(tmp_path):
    with pytest.raises(DataError, match=r"data root .* does not exist"):
        read_list_csv(tmp_path / "l.csv", tmp_path / "nope")
    with pytest.raises(DataError, match=r"image list .* does not exist"):
        read_list_csv(tmp_path / "l.csv", tmp_path)


def test_image_folder_sorted_classes(tmp_path):
    for cls, n in (("zebra", 2), ("ant", 1)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (4, 4)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "ant" / "notes.txt").write_text("x")
    recs, classes = scan_image_folder(tmp_path)
    assert classes == ["ant", "zebra"]
    assert [(r.image_id, r.label) for r in recs] == [("ant/0", 0), ("zebra/0", 1), ("zebra/1", 1)]


def test_annotation_parse_and_errors(tmp_path):
    p = tmp_path / "a.xml"
    write_xml(p, "a", 100, 50, [(10, 5, 99, 49), (0, 0, 100, 50)])
    ann = read_annotation(p)
    assert (ann.width, ann.height) == (100, 50)
    np.testing.assert_array_equal(ann.boxes, [[10, 5, 99, 49], [0, 0, 99, 49]])  # edge clipped
    write_xml(p, "a", 100, 50, [(10, 5, 120, 49)])
    with pytest.raises(DataError, match=r"a.xml'?: box 0 \[10, 5, 120, 49\] lies outside the 100x50 image"):
        read_annotation(p)
    p.write_text("<annotation><size>")
    with pytest.raises(DataError, match="not valid XML"):
        read_annotation(p)


def test_preprocess_pixels_resize_crop_normalise():
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[2:6, 2:6] = 255
    pre = Preprocess(resize=8, crop=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = pre(Image.fromarray(arr))
    assert x.shape == (3, 4, 4)
    torch.testing.assert_close(x, torch.ones(3, 4, 4))  # the white centre, (1 - .5) / .5


def test_box_transform_through_resize_and_crop():
    pre = Preprocess(resize=256, crop=224)
    # 512x512 image: scale 0.5, crop offset 16. Pixels 100..299 -> continuous [50, 150) -> [34, 134).
    out = pre.boxes(np.array([[100, 100, 299, 299]]), 512, 512)
    np.testing.assert_array_equal(out, [[34, 34, 133, 133]])
    # a box entirely in the cropped-away border comes back empty (xmin > xmax)
    out = pre.boxes(np.array([[0, 0, 20, 20]]), 512, 512)
    assert out[0, 0] > out[0, 2]
    # non-square image: x scale 256/1024, y scale 256/256
    out = pre.boxes(np.array([[0, 16, 1023, 239]]), 1024, 256)
    np.testing.assert_array_equal(out, [[0, 0, 223, 223]])


def test_mask_transform_nearest():
    m = np.zeros((8, 8), dtype=np.uint8)
    m[0:4, 0:4] = 255
    out = Preprocess(resize=4, crop=2).mask(Image.fromarray(m))
    np.testing.assert_array_equal(out.numpy(), [[True, False], [False, False]])
