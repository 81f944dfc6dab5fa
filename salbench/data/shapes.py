"""The embedded benchmark's shapes: the ten class-deciding objects and the clutter, as pixel masks.

Each class is an outline (:func:`shape_parts`: polygons, with holes for the ring and the crescent)
parametrised by a morph ``t`` toward a neighbouring shape (rounded square, truncated triangle, ...);
:func:`rasterise` fills it at image resolution (scanline fill, even-odd rule) and :func:`clutter_mask`
draws the objects of no class (blobs, strokes, ellipses, dot clusters). Pure functions of their
arguments and the generator they are given.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "disk", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent", "arrow", "heart",
)  # fmt: skip


def _angles(n: int = 96) -> np.ndarray:
    return np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)


def _radial(r: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _circle(r: float = 1.0, cx: float = 0.0) -> np.ndarray:
    return _radial(np.full(96, r), _angles()) + np.array([cx, 0.0])


def shape_parts(name: str, t: float) -> list[tuple[np.ndarray, bool]]:
    """Polygons ``(K,2)`` (x, y) inside the unit disk, each flagged ``hole``; ``t`` in [0,1] morphs the
    canonical shape (t=0) toward a neighbouring one (t=1): disk->rounded triangle, square->superellipse,
    triangle->hexagon, star->decagon, cross->square, ring->disk, hexagon->disk, crescent->bitten disk,
    arrow->triangle, heart->disk."""
    a = _angles()
    if name == "disk":
        return [(_radial(1.0 - 0.2 * t * (1.0 + np.cos(3 * a)) / 2, a), False)]
    if name == "square":
        u = _radial(np.ones_like(a), a)
        return [(0.72 * np.sign(u) * np.abs(u) ** (2.0 / (12.0 - 9.0 * t)), False)]
    if name == "triangle":
        v, cut = _radial(np.ones(3), -np.pi / 2 + np.arange(3) * 2 * np.pi / 3), 0.3 * t
        pts = [v[k] + cut * (v[(k + j) % 3] - v[k]) for k in range(3) for j in (-1, 1)]
        return [(np.array(pts), False)]
    if name == "star":
        k = np.arange(10)
        return [(_radial(np.where(k % 2 == 0, 1.0, 0.4 + 0.4 * t), k * np.pi / 5 - np.pi / 2), False)]
    if name == "cross":
        w = 0.25 + 0.3 * t
        arm = np.sqrt(1.0 - w * w)
        quarter = np.array([[arm, -w], [arm, w], [w, w]])
        rot = np.array([[0.0, -1.0], [1.0, 0.0]])
        return [(np.concatenate([quarter @ np.linalg.matrix_power(rot, k).T for k in range(4)]), False)]
    if name == "ring":
        return [(_circle(), False), (_circle(0.55 - 0.35 * t), True)]
    if name == "hexagon":
        r_hex = np.cos(np.pi / 6) / np.cos(np.mod(a, np.pi / 3) - np.pi / 6)
        return [(_radial((1.0 - 0.8 * t) * r_hex + 0.8 * t, a), False)]
    if name == "crescent":
        return [(_circle(), False), (_circle(0.8, 0.5 + 0.8 * t), True)]
    if name == "arrow":
        x0, hs, hw = -0.95 + 0.85 * t, 0.22, 0.65
        pts = [[x0, -hs], [-0.05, -hs], [-0.05, -hw], [0.95, 0.0], [-0.05, hw], [-0.05, hs], [x0, hs]]
        return [(np.array(pts), False)]
    if name == "heart":
        c = np.cos
        heart = np.stack([16 * np.sin(a) ** 3, -13 * c(a) + 5 * c(2 * a) + 2 * c(3 * a) + c(4 * a)], 1)
        heart = heart - (heart.max(0) + heart.min(0)) / 2
        heart /= np.linalg.norm(heart, axis=1).max()
        return [((1.0 - 0.6 * t) * heart + 0.6 * t * 0.85 * np.stack([np.sin(a), -np.cos(a)], 1), False)]
    raise ValueError(f"unknown shape {name!r}")


def scanline_fill(xy: np.ndarray, size: int) -> np.ndarray:
    """Even-odd polygon fill at pixel centres: pixel (row r, col c) is set when point (x=c, y=r) is inside.

    ``xy`` (K,2) vertices in pixel units; returns (S,S) bool. Each edge crossing a row's centre line at
    ``x`` toggles every column ``>= ceil(x)``, so a cumulative parity gives the interior exactly.
    """
    mask = np.zeros((size, size), dtype=bool)
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(max(0, int(np.ceil(y0.min()))), min(size - 1, int(np.floor(y0.max()))) + 1)
    if rows.size == 0:
        return mask
    r = rows[:, None].astype(np.float64)
    crosses = (y0 <= r) != (y1 <= r)
    xs = x0 + (r - y0) / np.where(y1 == y0, 1.0, y1 - y0) * (x1 - x0)
    hit_row, hit_edge = np.nonzero(crosses)
    toggles = np.zeros((rows.size, size + 1), dtype=np.int32)
    np.add.at(toggles, (hit_row, np.clip(np.ceil(xs[hit_row, hit_edge]), 0, size).astype(int)), 1)
    mask[rows] = np.cumsum(toggles[:, :size], axis=1) % 2 == 1
    return mask


def rasterise(
    parts: list[tuple[np.ndarray, bool]], centre, radius: float, angle: float, stretch: float, size: int
) -> np.ndarray:
    """Scale (x by ``stretch``, y by ``1/stretch``), rotate, place: (S,S) bool; holes carve later parts."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mask = np.zeros((size, size), dtype=bool)
    for pts, hole in parts:
        part = scanline_fill((pts * [stretch, 1.0 / stretch]) @ rot.T * radius + centre, size)
        mask = mask & ~part if hole else mask | part
    return mask


def distance_mask(points: np.ndarray, ends: np.ndarray, widths: np.ndarray, size: int) -> np.ndarray:
    """Pixels within ``widths[k]`` of segment ``points[k] -> ends[k]`` (K,2 each, x/y): (S,S) bool."""
    mask = np.zeros((size, size), dtype=bool)
    lo = np.clip(np.floor(np.minimum(points, ends).min(0) - widths.max()), 0, size).astype(int)
    hi = np.clip(np.ceil(np.maximum(points, ends).max(0) + widths.max()) + 1, 0, size).astype(int)
    if (hi <= lo).any():
        return mask
    yy, xx = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32)
    pix = np.stack([xx.ravel(), yy.ravel()], 1)[:, None, :]
    seg = ends - points
    t = np.clip(((pix - points) * seg).sum(-1) / np.maximum((seg * seg).sum(-1), 1e-9), 0.0, 1.0)
    diff = pix - (points + t[..., None] * seg)
    near = ((diff * diff).sum(-1) <= widths * widths).any(1)
    mask[lo[1] : hi[1], lo[0] : hi[0]] = near.reshape(hi[1] - lo[1], hi[0] - lo[0])
    return mask


def clutter_mask(
    rng: np.random.Generator, kind: str, centre: np.ndarray, radius: float, size: int
) -> np.ndarray:
    """A distractor of no class, within about ``radius`` of ``centre``: (S,S) bool."""
    if kind == "blob":
        a = _angles(64)
        k = np.arange(2, 6)[:, None]
        r = 1.0 + (rng.uniform(0.0, 0.3, (4, 1)) * np.cos(k * a + rng.uniform(0, 2 * np.pi, (4, 1)))).sum(0)
        r = np.maximum(r / r.max(), 0.15)
        return rasterise([(_radial(r, a), False)], centre, radius, 0.0, 1.0, size)
    if kind == "ellipse":
        parts = [(_circle() * [1.0, rng.uniform(0.2, 0.45)], False)]
        return rasterise(parts, centre, radius, rng.uniform(0.0, np.pi), 1.0, size)
    if kind == "stroke":
        pts = centre + radius * rng.uniform(-1.0, 1.0, (int(rng.integers(2, 5)) + 1, 2))
        width = rng.uniform(1.0, max(1.5, 0.035 * size))
        return distance_mask(pts[:-1], pts[1:], np.full(len(pts) - 1, width), size)
    dots = centre + radius * rng.uniform(-1.0, 1.0, (int(rng.integers(5, 14)), 2))
    return distance_mask(dots, dots, rng.uniform(1.0, 1.0 + 0.03 * size, len(dots)), size)
