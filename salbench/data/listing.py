"""Image lists: ``relative/path,label`` CSV files (the ImageNet layout), ``ImageFolder`` trees and class
index files mapping class folders to model outputs.

Every listed image is kept (nothing is dropped silently); a malformed line, a label out of range or a
missing file is a one-line :class:`DataError` naming the file and the line.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from salbench.errors import DataError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One listed image.

    Attributes:
        image_id: stable id: the relative path without suffix (``val/ILSVRC2012_val_00000001``).
        path: absolute path of the image file.
        label: class index.
        source: ``file:line`` where it was listed (for error messages).
    """

    image_id: str
    path: Path
    label: int
    source: str

    @property
    def stem(self) -> str:
        return self.path.stem


def read_utf8(path: Path, what: str) -> str:
    """The text of ``path``; a file that is not UTF-8 is a :class:`DataError` naming its line and byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{what} {str(path)!r} line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text; save the "
            "file as UTF-8"
        ) from None


def read_list_csv(
    list_csv: str | Path, root: str | Path, num_classes: int | None = None
) -> list[ImageRecord]:
    """Parse a list of ``relative/path,label`` lines (blank lines and ``#`` comments ignored).

    A first line whose label is not an integer and whose path names no image file (``path,label``,
    ``filename,class``) is a header and skipped.

    Args:
        list_csv: the list file.
        root: folder the relative paths are relative to.
        num_classes: when given, labels must lie in ``[0, num_classes)``.

    Raises:
        DataError: missing list/root, malformed line, bad or out-of-range label, missing image, duplicate.
    """
    list_path, root_path = Path(list_csv), Path(root)
    if not root_path.is_dir():
        raise DataError(f"data root {str(root_path)!r} does not exist or is not a folder")
    if not list_path.is_file():
        raise DataError(f"image list {str(list_path)!r} does not exist")
    records: list[ImageRecord] = []
    seen: set[str] = set()
    first = True
    for lineno, raw in enumerate(read_utf8(list_path, "image list").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_path}:{lineno}"
        parts = [p.strip() for p in line.split(",")]
        if first and _is_header(parts):
            first = False
            continue
        first = False
        if len(parts) != 2 or not parts[0]:
            raise DataError(f"{where}: expected 'relative/path,label', got {line[:80]!r}")
        rel, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(f"{where}: label {label_text!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise DataError(f"{where}: label {label} out of range [0, {num_classes})")
        rel_posix = PurePosixPath(rel.replace("\\", "/"))
        if rel_posix.is_absolute() or ".." in rel_posix.parts:
            raise DataError(f"{where}: path {rel!r} must be relative to the data root")
        image_id = str(rel_posix.with_suffix(""))
        if image_id in seen:
            raise DataError(f"{where}: image {rel!r} listed twice")
        path = root_path / rel_posix
        if not path.is_file():
            raise DataError(f"{where}: image file {str(path)!r} does not exist")
        seen.add(image_id)
        records.append(ImageRecord(image_id, path, label, where))
    if not records:
        raise DataError(f"image list {str(list_path)!r} lists no images")
    return records


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_header(parts: list[str]) -> bool:
    """Whether a list's first line is a header: two fields, a label that is not an integer and a path
    field that names no image file (``path,label``)."""
    return (
        len(parts) == 2
        and bool(parts[0])
        and not _is_int(parts[1])
        and PurePosixPath(parts[0]).suffix.lower() not in IMAGE_SUFFIXES
    )


def scan_image_folder(
    root: str | Path, class_index: Mapping[str, int] | None = None, index_file: str = ""
) -> tuple[list[ImageRecord], list[str]]:
    """List an ``ImageFolder`` tree (``root/<class>/<image>``), classes in sorted order (torchvision's rule).

    Args:
        root: the tree.
        class_index: class folder -> label; None: the folder's position in sorted order.
        index_file: where ``class_index`` was read (for messages).

    Returns:
        ``(records, class folders)`` (folders in sorted order).

    Raises:
        DataError: a missing root, no class folders or images, a folder ``class_index`` does not name.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DataError(f"data root {str(root_path)!r} does not exist or is not a folder")
    classes = sorted(p.name for p in root_path.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"image folder {str(root_path)!r} has no class sub-folders")
    if class_index is not None:
        missing = [c for c in classes if c not in class_index]
        if missing:
            raise DataError(
                f"class index {index_file!r} does not name class folder {missing[0]!r} of image folder "
                f"{str(root_path)!r} ({len(missing)} folder(s) missing)"
            )
    records = []
    for position, name in enumerate(classes):
        label = position if class_index is None else int(class_index[name])
        for path in sorted((root_path / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                rel = path.relative_to(root_path).as_posix()
                records.append(ImageRecord(str(PurePosixPath(rel).with_suffix("")), path, label, rel))
    if not records:
        raise DataError(f"image folder {str(root_path)!r} holds no images")
    return records, classes


WNID = re.compile(r"n\d{8}")
"""An ImageNet class folder name: a WordNet noun id such as ``n01440764``."""


def read_class_index(path: str | Path) -> dict[str, tuple[int, str]]:
    """Read a class index file: class folder -> (model output index, class name).

    Formats: CSV lines ``folder,index`` (optional ``folder,index,name`` third field; blank lines, ``#``
    comments and a first line whose index is not an integer, a header, are skipped), a JSON object
    ``{"folder": index}``, or the Keras ``imagenet_class_index.json`` layout
    ``{"0": ["n01440764", "tench"], ...}``.

    Raises:
        DataError: naming the file (and line or key): a missing file, a malformed line, an index that is
            not an integer >= 0, a folder or an index given twice.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"class index {str(p)!r} does not exist")
    text = read_utf8(p, "class index")
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        entries = _json_entries(p, text)
    else:
        entries = _csv_entries(p, text)
    out: dict[str, tuple[int, str]] = {}
    owner: dict[int, str] = {}
    for where, folder, index, name in entries:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DataError(f"{where}: index {index!r} of class {folder!r} is not an integer >= 0")
        if folder in out:
            raise DataError(f"{where}: class folder {folder!r} is given twice")
        if index in owner:
            raise DataError(f"{where}: index {index} is given to {owner[index]!r} and {folder!r}")
        out[folder], owner[index] = (index, name or folder), folder
    if not out:
        raise DataError(f"class index {str(p)!r} maps no class folder")
    return out


def _json_entries(p: Path, text: str) -> list[tuple[str, str, object, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"class index {str(p)!r} line {exc.lineno} is not valid JSON") from None
    if not isinstance(data, dict):
        raise DataError(f"class index {str(p)!r} must hold a JSON object (folder -> index)")
    pairs = list(data.items())
    if pairs and all(_is_int(k) and isinstance(v, list) and len(v) == 2 for k, v in pairs):
        # Keras' imagenet_class_index.json: "index": [wnid, name]
        return [(f"{p} key {k!r}", str(v[0]), int(k), str(v[1])) for k, v in pairs]
    return [(f"{p} key {k!r}", str(k), v, "") for k, v in pairs]


def _csv_entries(p: Path, text: str) -> list[tuple[str, str, object, str]]:
    entries: list[tuple[str, str, object, str]] = []
    first = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{p}:{lineno}"
        parts = [x.strip() for x in line.split(",")]
        if len(parts) not in (2, 3) or not parts[0]:
            raise DataError(f"{where}: expected 'folder,index' (or 'folder,index,name'), got {line[:80]!r}")
        header, first = first and not _is_int(parts[1]), False
        if header:
            continue
        if not _is_int(parts[1]):
            raise DataError(f"{where}: index {parts[1]!r} of class {parts[0]!r} is not an integer")
        entries.append((where, parts[0], int(parts[1]), parts[2] if len(parts) == 3 else ""))
    return entries
