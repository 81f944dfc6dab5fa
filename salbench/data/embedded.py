"""Embedded default benchmark: deterministic shape classification with exact ground truth (SPEC section 2).

Each image shows ONE class-deciding object, a shape from :data:`CLASS_NAMES` with random size, position,
rotation, aspect, fill (solid, gradient or photographic texture) and contrast to its surroundings, on a
photographic background cropped from the sample images scikit-image ships inside its package (read from
``skimage.data.data_dir``; nothing is downloaded). Clutter of no class (random blobs, strokes, elongated
ellipses, dot clusters) is drawn behind the object; with probability ``occlusion_prob`` a blob or stroke is
drawn on top of it, hiding at most ``max_occlusion`` of its pixels, and the mask EXCLUDES the hidden
pixels. A fraction ``ambiguous_fraction`` of objects is morphed toward a neighbouring shape (rounded
square, truncated triangle, fat star, ...) and flagged ``<difficult>1</difficult>``. Gaussian pixel noise
is added last.

Layout under ``root`` (the ImageNet list layout, paths relative to ``root``)::

    classes.txt                  line i = name of class i
    train.csv val.csv eval.csv   "images/<split>/<split>_00000.png,<label>" lines, no header
    images/<split>/<id>.png      RGB uint8, image_size x image_size
    annotations/<split>/<id>.xml ILSVRC validation XML, one <object> (the class-deciding one)
    masks/<split>/<id>.png       L uint8: 255 on the visible pixels of that object, 0 elsewhere
    benchmark.json               seed, spec, class names, counts, conventions, format version

Box convention: ``xmin..xmax`` / ``ymin..ymax`` are 0-based pixel indices (x = column, y = row), both
ends inclusive; the box is the tight bounding box of the mask, so it always lies inside the image.

Determinism: image ``i`` of split ``s`` draws only from ``PCG64(SeedSequence(seed, spawn_key=(s, 1, i)))``
and the split's label order from ``spawn_key=(s, 0)``, so no image depends on the generation order;
PNGs are written by Pillow at a fixed compression level. Same seed + spec + library versions give
byte-identical files. The shapes themselves are drawn by :mod:`salbench.data.shapes`.

Longer than ~400 lines: the scene (textures, fills, contrast, clutter, occlusion, noise), its
deterministic per-image draws and the atomic install of a whole benchmark are one generator whose
parts are only meaningful together.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import skimage
import skimage.data
from PIL import Image
from scipy import ndimage

from salbench.data.shapes import CLASS_NAMES, clutter_mask, rasterise, shape_parts
from salbench.errors import ConfigError, DataError

_LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "val", "eval")
# Bundled in the scikit-image wheel (skimage/data/); every other skimage.data image is fetched by pooch.
_TEXTURES = (
    "brick.png", "grass.png", "gravel.png", "camera.png", "moon.png", "coins.png",
    "astronaut.png", "chelsea.png", "coffee.png", "ihc.png", "motorcycle_left.png", "rocket.jpg",
)  # fmt: skip
_PNG_LEVEL = 6


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """Size and difficulty knobs of the embedded benchmark; ranges are ``(low, high)`` uniform draws.

    With the defaults, ``EmbeddedResNet`` trained from scratch on the 3000 training images (Adam, lr 1e-3,
    batch 32, horizontal flips, 12 epochs) reached 83% top-1 on ``eval`` (seed 0), median confidence 0.96,
    10% quantile 0.52; most errors are hexagon -> disk and star -> arrow. ``rotation`` is the strongest
    knob (full rotation: no learning within 10 epochs), then clutter, contrast and ``object_scale``.

    Attributes:
        image_size: side of the square images in pixels (>= 32).
        n_train, n_val, n_eval: images per split (labels balanced to within one per class).
        object_scale: diameter of the object's bounding circle as a fraction of the side (the drawn
            shape's box spans about 0.7-1.0 of it).
        rotation: objects are rotated by ``U(-rotation, rotation)`` degrees from their upright pose
            (triangle apex up, arrow pointing right, ...); 180 = any orientation.
        aspect_jitter: the object's x/y scales are multiplied by ``a`` and ``1/a``, ``a`` in
            ``[1/(1+j), 1+j]`` (log-uniform).
        shape_variation: ordinary objects are morphed by ``t ~ U(0, shape_variation)`` (0 = canonical).
        ambiguous_fraction: share of objects morphed by ``t ~ U(0.6, 1)`` toward another shape.
        contrast: RGB distance (L2, pixel values in [0,1]) between the object's base colour and the mean
            colour of what it covers.
        texture_fill_prob, gradient_fill_prob: chance of a texture / linear-gradient fill (else solid),
            for the object and the clutter alike.
        n_clutter: number of clutter items behind the object (inclusive range).
        clutter_scale: diameter of a clutter item's extent as a fraction of the side.
        clutter_contrast: as ``contrast``, for clutter and occluders.
        occlusion_prob: chance of one occluder drawn over the object's outline.
        max_occlusion: largest share of the object's pixels an occluder may hide.
        noise_std: per-image standard deviation of additive Gaussian noise (pixel values in [0,1]).
        background_jitter: strength of the background's brightness/contrast/tint jitter.
    """

    image_size: int = 112
    n_train: int = 3000
    n_val: int = 300
    n_eval: int = 300
    object_scale: tuple[float, float] = (0.4, 0.6)
    rotation: float = 15.0
    aspect_jitter: float = 0.15
    shape_variation: float = 0.3
    ambiguous_fraction: float = 0.06
    contrast: tuple[float, float] = (0.3, 0.8)
    texture_fill_prob: float = 0.15
    gradient_fill_prob: float = 0.3
    n_clutter: tuple[int, int] = (1, 4)
    clutter_scale: tuple[float, float] = (0.08, 0.25)
    clutter_contrast: tuple[float, float] = (0.1, 0.4)
    occlusion_prob: float = 0.25
    max_occlusion: float = 0.25
    noise_std: tuple[float, float] = (0.0, 0.03)
    background_jitter: float = 0.25

    def __post_init__(self) -> None:
        for name, low in (("image_size", 32), ("n_train", 1), ("n_val", 1), ("n_eval", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"BenchmarkSpec.{name}: expected an integer >= {low}, got {value!r}")
        bounds = {
            "object_scale": (0.05, 0.95), "rotation": (0.0, 180.0), "aspect_jitter": (0.0, 0.5),
            "shape_variation": (0.0, 1.0), "ambiguous_fraction": (0.0, 1.0), "contrast": (0.0, 1.0),
            "texture_fill_prob": (0.0, 1.0), "gradient_fill_prob": (0.0, 1.0), "n_clutter": (0, 50),
            "clutter_scale": (0.02, 1.0), "clutter_contrast": (0.0, 1.0), "occlusion_prob": (0.0, 1.0),
            "max_occlusion": (0.0, 0.9), "noise_std": (0.0, 0.5), "background_jitter": (0.0, 0.5),
        }  # fmt: skip
        for name, (lo, hi) in bounds.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            ok = len(values) in (1, 2) and all(isinstance(v, (int, float)) and lo <= v <= hi for v in values)
            if not ok or (len(values) == 2 and values[0] > values[1]):
                raise ConfigError(
                    f"BenchmarkSpec.{name}: expected values in [{lo}, {hi}] (low <= high), got {value!r}"
                )
        if isinstance(self.n_clutter[0], float) or isinstance(self.n_clutter[1], float):
            raise ConfigError(f"BenchmarkSpec.n_clutter: expected integers, got {self.n_clutter!r}")
        if self.texture_fill_prob + self.gradient_fill_prob > 1.0:
            raise ConfigError("BenchmarkSpec.texture_fill_prob + gradient_fill_prob must not exceed 1")
        if self.object_scale[1] * (1.0 + self.aspect_jitter) > 0.95:
            raise ConfigError("BenchmarkSpec.object_scale: high * (1 + aspect_jitter) must not exceed 0.95")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BenchmarkSpec:
        """Build from a YAML/JSON mapping (lists become tuples); unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"BenchmarkSpec: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _fill(
    rng: np.random.Generator, base: np.ndarray, shape: tuple[int, int], spec: BenchmarkSpec, textures: tuple
) -> np.ndarray:
    """Fill (h,w,3) float32 around the colour ``base``: solid, linear gradient or zero-mean texture."""
    kind = rng.random()
    if kind < spec.texture_fill_prob:
        detail = _background(rng, textures, shape, 0.0)
        return base + rng.uniform(0.4, 1.0) * (detail - detail.mean((0, 1)))
    if kind < spec.texture_fill_prob + spec.gradient_fill_prob:
        (h, w), angle = shape, rng.uniform(0.0, 2.0 * np.pi)
        ramp = (
            np.cos(angle) * (np.arange(w) - w / 2)[None, :] + np.sin(angle) * (np.arange(h) - h / 2)[:, None]
        )
        return base + (ramp / spec.image_size)[..., None] * rng.normal(0.0, 0.3, 3).astype(np.float32)
    return np.broadcast_to(base, (*shape, 3))


def _base_colour(rng: np.random.Generator, reference: np.ndarray, contrast: float) -> np.ndarray:
    """A colour at RGB distance ``contrast`` from ``reference``, in the direction that clips least."""
    u = rng.normal(size=3)
    u /= np.linalg.norm(u) + 1e-12
    candidates = (reference + contrast * u, reference - contrast * u)
    return min(candidates, key=lambda c: float(np.abs(c - np.clip(c, 0.0, 1.0)).sum())).astype(np.float32)


def _paste(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, contrast: tuple[float, float], spec, textures
) -> None:
    """Paint ``mask`` (S,S) of ``img`` (S,S,3) with a fill contrasting with what it covers (in place)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    inside, target = mask[window], img[window]
    base = _base_colour(rng, target[inside].mean(0), rng.uniform(*contrast))
    target[inside] = np.clip(_fill(rng, base, inside.shape, spec, textures)[inside], 0.0, 1.0)


@functools.lru_cache(maxsize=2)
def _load_textures(size: int) -> tuple[tuple[Image.Image, bool], ...]:
    """Bundled scikit-image photographs as ``(RGB image, was_grayscale)``, short side <= 3 * ``size``."""
    out = []
    for name in _TEXTURES:
        path = Path(skimage.data.data_dir) / name
        try:
            with Image.open(path) as im:
                im.load()
                rgb, gray = im.convert("RGB"), im.mode == "L"
        except OSError as exc:
            raise DataError(f"background texture {str(path)!r} is unreadable ({exc})") from None
        factor = 3 * size / min(rgb.size)
        if factor < 1.0:  # pre-shrunk once so that per-image crops resize fast
            new_size = (round(rgb.width * factor), round(rgb.height * factor))
            rgb = rgb.resize(new_size, Image.Resampling.LANCZOS)
        out.append((rgb, gray))
    return tuple(out)


def _background(
    rng: np.random.Generator, textures: tuple, shape: tuple[int, int], jitter: float
) -> np.ndarray:
    """Random crop (25-75% of the short side), resize, rot90/flip, colour jitter: (h,w,3) float32."""
    tex, gray = textures[rng.integers(len(textures))]
    k = int(rng.integers(4))
    out_h, out_w = shape[::-1] if k % 2 else shape
    side = rng.uniform(0.25, 0.75) * min(tex.size) / max(out_h, out_w)
    box_w, box_h = side * out_w, side * out_h
    x0, y0 = rng.uniform(0.0, tex.width - box_w), rng.uniform(0.0, tex.height - box_h)
    crop = tex.resize((out_w, out_h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + box_w, y0 + box_h))
    img = np.rot90(np.asarray(crop, dtype=np.float32) / 255.0, k)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if not gray:
        img = img[..., rng.permutation(3)]
    gains = 1.0 + rng.uniform(-1.0, 1.0, 3) * (2.0 * jitter if gray else jitter)
    mean = img.mean()
    img = (img - mean) * (1.0 + rng.uniform(-jitter, jitter)) + mean * (1.0 + rng.uniform(-jitter, jitter))
    return np.clip(img * gains.astype(np.float32), 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Sample:
    image: np.ndarray  # (S,S,3) uint8
    mask: np.ndarray  # (S,S) bool, visible pixels of the class-deciding object
    difficult: bool
    occluded: bool


def _occlude(
    rng: np.random.Generator, img: np.ndarray, obj: np.ndarray, spec: BenchmarkSpec, textures
) -> np.ndarray:
    """Draw a blob or stroke across the object's outline; return the still-visible object mask (S,S)."""
    size = spec.image_size
    ys, xs = np.nonzero(obj & ~ndimage.binary_erosion(obj))
    k = int(rng.integers(len(ys)))
    centre = np.array([xs[k], ys[k]], dtype=np.float64)
    radius = rng.uniform(*spec.clutter_scale) * size / 2
    kind = ("blob", "stroke")[int(rng.integers(2))]
    area = int(obj.sum())
    for _ in range(4):
        occ = clutter_mask(rng, kind, centre, radius, size)
        hidden = int((occ & obj).sum())
        if 0 < hidden <= spec.max_occlusion * area:
            _paste(rng, img, occ, spec.clutter_contrast, spec, textures)
            return obj & ~occ
        radius *= 0.7
    return obj


def _render(rng: np.random.Generator, label: int, spec: BenchmarkSpec, textures: tuple) -> _Sample:
    """One image of class ``label``: background, clutter behind, object, optional occluder, noise."""
    size = spec.image_size
    img = _background(rng, textures, (size, size), spec.background_jitter)
    for _ in range(int(rng.integers(spec.n_clutter[0], spec.n_clutter[1] + 1))):
        kind = ("blob", "stroke", "ellipse", "dots")[int(rng.integers(4))]
        radius = rng.uniform(*spec.clutter_scale) * size / 2
        mask = clutter_mask(rng, kind, rng.uniform(0.0, size - 1.0, 2), radius, size)
        if mask.any():
            _paste(rng, img, mask, spec.clutter_contrast, spec, textures)
    difficult = bool(rng.random() < spec.ambiguous_fraction)
    morph = rng.uniform(0.6, 1.0) if difficult else rng.uniform(0.0, spec.shape_variation)
    stretch = np.exp(rng.uniform(-1.0, 1.0) * np.log1p(spec.aspect_jitter))
    radius = rng.uniform(*spec.object_scale) * size / 2
    margin = radius * max(stretch, 1.0 / stretch) + 1.0
    centre = rng.uniform(margin, size - 1.0 - margin, 2)
    parts = shape_parts(CLASS_NAMES[label], morph)
    angle = np.deg2rad(rng.uniform(-spec.rotation, spec.rotation))
    obj = rasterise(parts, centre, radius, angle, stretch, size)
    if not obj.any():
        raise RuntimeError(f"empty object mask for class {CLASS_NAMES[label]!r} (radius {radius:.1f} px)")
    _paste(rng, img, obj, spec.contrast, spec, textures)
    visible = _occlude(rng, img, obj, spec, textures) if rng.random() < spec.occlusion_prob else obj
    img += rng.uniform(*spec.noise_std) * rng.standard_normal(img.shape, dtype=np.float32)
    image = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return _Sample(image, visible, difficult, bool((obj & ~visible).any()))


_XML = """<annotation>
\t<folder>{split}</folder>
\t<filename>{ident}</filename>
\t<source><database>salbench_embedded</database></source>
\t<size><width>{size}</width><height>{size}</height><depth>3</depth></size>
\t<segmented>1</segmented>
\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<occluded>{occluded:d}</occluded>
\t\t<difficult>{difficult:d}</difficult>
\t\t<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>
\t</object>
</annotation>
"""


def _write_sample(root: Path, split: str, ident: str, label: int, sample: _Sample) -> None:
    """Image PNG, mask PNG and ILSVRC XML of one sample."""
    for folder, array in (("images", sample.image), ("masks", sample.mask * np.uint8(255))):
        Image.fromarray(array).save(root / folder / split / f"{ident}.png", compress_level=_PNG_LEVEL)
    rows, cols = np.nonzero(sample.mask)
    xml = _XML.format(
        split=split, ident=ident, size=sample.mask.shape[0], name=CLASS_NAMES[label],
        occluded=sample.occluded, difficult=sample.difficult,
        xmin=cols.min(), ymin=rows.min(), xmax=cols.max(), ymax=rows.max(),
    )  # fmt: skip
    (root / "annotations" / split / f"{ident}.xml").write_text(xml, encoding="utf-8", newline="\n")


def _split_labels(seed: int, split_index: int, n: int) -> np.ndarray:
    """Balanced labels (class counts differ by at most one) in a seeded random order: (n,) int64."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(split_index, 0))))
    classes = rng.permutation(len(CLASS_NAMES))
    return rng.permutation(classes[np.arange(n) % len(CLASS_NAMES)])


def _write_split(root: Path, seed: int, spec: BenchmarkSpec, split_index: int, progress: bool) -> dict:
    """All samples, the list CSV and the manifest entry of one split."""
    split = SPLITS[split_index]
    n = getattr(spec, f"n_{split}")
    for sub in ("images", "masks", "annotations"):
        (root / sub / split).mkdir(parents=True)
    textures = _load_textures(spec.image_size)
    labels = _split_labels(seed, split_index, n)
    lines, n_difficult, n_occluded = [], 0, 0
    for i, label in enumerate(labels.tolist()):
        ss = np.random.SeedSequence(seed, spawn_key=(split_index, 1, i))
        sample = _render(np.random.Generator(np.random.PCG64(ss)), label, spec, textures)
        ident = f"{split}_{i:05d}"
        _write_sample(root, split, ident, label, sample)
        lines.append(f"images/{split}/{ident}.png,{label}\n")
        n_difficult += sample.difficult
        n_occluded += sample.occluded
        if progress and ((i + 1) % 500 == 0 or i + 1 == n):
            _LOG.info("embedded benchmark: %s %d/%d images", split, i + 1, n)
    (root / f"{split}.csv").write_text("".join(lines), encoding="utf-8", newline="\n")
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).tolist()
    return dict(csv=f"{split}.csv", count=n, per_class=counts, difficult=n_difficult, occluded=n_occluded)


def _identity(seed: int, spec: BenchmarkSpec) -> dict:
    """What a reusable benchmark must match, in its JSON form."""
    spec_json = json.loads(json.dumps(dataclasses.asdict(spec)))
    return dict(format_version=FORMAT_VERSION, seed=seed, spec=spec_json, class_names=list(CLASS_NAMES))


def read_manifest(root: str | Path) -> dict | None:
    """``benchmark.json`` of a complete benchmark under ``root``, or ``None`` when absent or incomplete.

    Complete means: the manifest parses, has this module's format version, and every split's CSV exists
    with as many lines as the manifest counts (the manifest is written last, before the atomic rename).
    """
    path = Path(root) / "benchmark.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format_version") != FORMAT_VERSION:
            return None
        for info in manifest["splits"].values():
            with open(Path(root) / info["csv"], encoding="utf-8") as fh:
                if sum(1 for _ in fh) != info["count"]:
                    return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest


def _install(tmp: Path, root: Path, identity: dict, overwrite: bool) -> dict | None:
    """Move the finished ``tmp`` tree to ``root``; return a concurrent writer's identical result, if any."""
    old = None
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    elif root.exists() and overwrite:
        old = root.with_name(f"{root.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        root.rename(old)
    try:
        tmp.rename(root)
    except OSError:
        other = read_manifest(root)
        if other is not None and {k: other.get(k) for k in identity} == identity:
            shutil.rmtree(tmp, ignore_errors=True)
            return other
        raise DataError(f"benchmark root {str(root)!r} appeared while generating; not overwritten") from None
    if old is not None and old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()
    return None


def generate_benchmark(
    root: str | Path,
    seed: int,
    spec: BenchmarkSpec | None = None,
    progress: bool = False,
    *,
    overwrite: bool = False,
) -> dict:
    """Generate the embedded benchmark under ``root`` (layout in the module docstring), atomically.

    Everything is written to a sibling ``<root>.tmp-*`` directory, ``benchmark.json`` last, which is then
    renamed to ``root``; an interrupted run leaves only that temporary directory, never a ``root`` that
    looks complete. If ``root`` already holds a complete benchmark of the same seed and spec, nothing is
    written and its manifest is returned at once.

    Args:
        root: output directory.
        seed: non-negative integer seed of everything drawn.
        spec: size and difficulty knobs (default ``BenchmarkSpec()``).
        progress: log progress every 500 images (INFO).
        overwrite: replace a ``root`` holding anything else (otherwise that is an error).

    Returns:
        The manifest (contents of ``benchmark.json``).

    Raises:
        ConfigError: bad seed or spec.
        DataError: ``root`` exists, is not empty and is not this benchmark (and ``overwrite`` is off).
    """
    spec = BenchmarkSpec() if spec is None else spec
    if not isinstance(spec, BenchmarkSpec):
        raise ConfigError(f"spec: expected a BenchmarkSpec, got {type(spec).__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
    root, seed = Path(root), int(seed)
    identity = _identity(seed, spec)
    existing = read_manifest(root)
    if existing is not None and {k: existing.get(k) for k in identity} == identity:
        return existing
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and not overwrite:
        raise DataError(
            f"benchmark root {str(root)!r} exists and is not a complete benchmark of seed {seed} with this "
            "spec; remove it, choose another root, or overwrite"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-", dir=root.parent))
    try:
        (tmp / "classes.txt").write_text(
            "".join(f"{c}\n" for c in CLASS_NAMES), encoding="utf-8", newline="\n"
        )
        splits = {split: _write_split(tmp, seed, spec, k, progress) for k, split in enumerate(SPLITS)}
        manifest = {
            **identity,
            "generator": "salbench.data.embedded",
            "splits": splits,
            "box_convention": "0-based pixels, xmin..xmax and ymin..ymax inclusive, tight box of the mask",
            "mask_convention": "255 = visible pixels of the class-deciding object (occluded pixels excluded)",
            "textures": [f"skimage.data/{name}" for name in _TEXTURES],
            "versions": {
                "numpy": np.__version__,
                "pillow": PIL.__version__,
                "scikit-image": skimage.__version__,
            },
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (tmp / "benchmark.json").write_text(text, encoding="utf-8", newline="\n")
        other = _install(tmp, root, identity, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return other if other is not None else manifest


def load_mask(path: str | Path) -> np.ndarray:
    """Read an object mask PNG as a bool array (H,W): ``True`` where the pixel value is >= 128.

    Raises:
        DataError: naming the file when it is missing or unreadable.
    """
    p = Path(path)
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("L"))
    except (OSError, ValueError) as exc:
        raise DataError(f"mask {str(p)!r} is missing or unreadable ({exc})") from None
    return arr >= 128
