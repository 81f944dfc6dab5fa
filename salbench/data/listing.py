"""Image lists: ``relative/path,label`` CSV files (the ImageNet layout) and ``ImageFolder`` trees.

Every listed image is kept (nothing is dropped silently); a malformed line, a label out of range or a
missing file is a one-line :class:`DataError` naming the file and the line.
"""

from __future__ import annotations

import dataclasses
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
    for lineno, raw in enumerate(read_utf8(list_path, "image list").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_path}:{lineno}"
        parts = [p.strip() for p in line.split(",")]
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


def scan_image_folder(root: str | Path) -> tuple[list[ImageRecord], list[str]]:
    """List an ``ImageFolder`` tree (``root/<class>/<image>``), classes in sorted order (torchvision's rule).

    Returns:
        ``(records, class_names)``.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DataError(f"data root {str(root_path)!r} does not exist or is not a folder")
    classes = sorted(p.name for p in root_path.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"image folder {str(root_path)!r} has no class sub-folders")
    records = []
    for label, name in enumerate(classes):
        for path in sorted((root_path / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                rel = path.relative_to(root_path).as_posix()
                records.append(ImageRecord(str(PurePosixPath(rel).with_suffix("")), path, label, rel))
    if not records:
        raise DataError(f"image folder {str(root_path)!r} holds no images")
    return records, classes
