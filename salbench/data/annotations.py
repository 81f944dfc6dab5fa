"""ILSVRC validation bounding-box XML files (one per image, boxes in original pixel coordinates)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from salbench.errors import DataError


@dataclasses.dataclass(frozen=True)
class Annotation:
    """Boxes of one image.

    Attributes:
        width: image width the boxes refer to.
        height: image height.
        boxes: (K,4) int64 ``xmin, ymin, xmax, ymax``, inclusive pixel coordinates.
        names: the ``<name>`` of each object (WordNet id on ImageNet, class name on the embedded set).
    """

    width: int
    height: int
    boxes: np.ndarray
    names: tuple[str, ...]


def _int(node: ET.Element, tag: str, path: Path) -> int:
    text = node.findtext(tag)
    if text is None:
        raise DataError(f"annotation {str(path)!r}: missing <{tag}>")
    try:
        return round(float(text))
    except ValueError:
        raise DataError(f"annotation {str(path)!r}: <{tag}> is not a number: {text!r}") from None


def read_annotation(path: str | Path) -> Annotation:
    """Parse one ILSVRC XML file and validate its boxes against ``<size>``.

    Raises:
        DataError: naming the file when it is missing, not XML, or a box lies outside the image.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"annotation {str(p)!r} does not exist")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise DataError(f"annotation {str(p)!r} is not valid XML ({exc})") from None
    size = root.find("size")
    if size is None:
        raise DataError(f"annotation {str(p)!r}: missing <size>")
    width, height = _int(size, "width", p), _int(size, "height", p)
    boxes, names = [], []
    for k, obj in enumerate(root.findall("object")):
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"annotation {str(p)!r}: object {k} has no <bndbox>")
        box = [_int(bnd, t, p) for t in ("xmin", "ymin", "xmax", "ymax")]
        x0, y0, x1, y1 = box
        # ILSVRC files use inclusive coordinates and sometimes reach ``width``/``height`` (1-based
        # edges); those are clipped to the last pixel, anything further out is an error.
        if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
            raise DataError(f"annotation {str(p)!r}: box {k} {box} lies outside the {width}x{height} image")
        boxes.append([x0, y0, min(x1, width - 1), min(y1, height - 1)])
        names.append((obj.findtext("name") or "").strip())
    arr = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return Annotation(width, height, arr, tuple(names))
