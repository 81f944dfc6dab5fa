"""Localization metrics: how well a map points at the annotated object.

Boxes are given per image as a (K,4) array/tensor of ``xmin, ymin, xmax, ymax`` *inclusive* pixel
coordinates in the map's frame (a box ``0,0,0,0`` is the top-left pixel); an image may have several
boxes, whose union is the object region. Masks (embedded benchmark) are (N,H,W) bool object masks.

Conventions, shared by all functions here:

* Binarisation (LE, OM, IoU): pixels strictly above the map's mean (CASME's ``binarize_mask``, the study's
  localization code). A constant map has no such pixel: its LE/OM/IoU are NaN (skipped).
* Box of a map (LE, OM): the tight box of the largest 4-connected component of the binarised map (CAM,
  Zhou et al. 2016, and the study's CASME code); ties between equally large components go to the one
  whose first pixel comes first in raster order. ``component="all"`` boxes every binarised pixel instead.
* Pointing point (SPG): the first maximal pixel in raster (row-major) order; a constant map has no
  maximum to point with and scores NaN. (The study's code counted a hit if *any* tied maximum was inside.)
* IoU counts pixels: a box covers ``(xmax - xmin + 1) * (ymax - ymin + 1)`` of them.
* Non-finite maps score NaN everywhere; an image with no box scores NaN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from salbench.errors import DataError
from salbench.metrics.base import (
    MetricDef,
    MetricGroup,
    MetricInputs,
    MetricParams,
    Scores,
    register,
    to_numpy,
)

BoxList = Sequence[torch.Tensor | np.ndarray]
Component = Literal["largest", "all"]


def _check_maps(maps: torch.Tensor) -> torch.Tensor:
    if maps.ndim != 3:
        raise DataError(f"maps: expected shape (N,H,W), got {tuple(maps.shape)}")
    return maps.detach().to(torch.float64)


def pad_boxes(boxes: BoxList, n: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image boxes into (N,K,4) long plus a (N,K) validity mask, checking every box.

    Raises:
        DataError: wrong count/shape, ``xmin > xmax`` / ``ymin > ymax``, or a box outside the H x W frame.
    """
    if len(boxes) != n:
        raise DataError(f"boxes: {len(boxes)} box lists for {n} maps")
    arrays = [torch.as_tensor(np.asarray(b), dtype=torch.long).reshape(-1, 4) for b in boxes]
    k = max((a.shape[0] for a in arrays), default=0)
    out = torch.zeros(n, max(k, 1), 4, dtype=torch.long)
    valid = torch.zeros(n, max(k, 1), dtype=torch.bool)
    for i, a in enumerate(arrays):
        if a.numel():
            x0, y0, x1, y1 = a.unbind(1)
            bad = (x0 > x1) | (y0 > y1) | (x0 < 0) | (y0 < 0) | (x1 >= width) | (y1 >= height)
            if bool(bad.any()):
                row = a[int(bad.nonzero()[0])].tolist()
                raise DataError(f"boxes[{i}]: box {row} is empty or outside the {width}x{height} map")
        out[i, : a.shape[0]] = a
        valid[i, : a.shape[0]] = True
    return out, valid


def boxes_to_masks(boxes: BoxList, height: int, width: int) -> torch.Tensor:
    """(N,H,W) bool union of each image's boxes."""
    padded, valid = pad_boxes(boxes, len(boxes), height, width)
    ys = torch.arange(height).view(1, 1, -1, 1)
    xs = torch.arange(width).view(1, 1, 1, -1)
    x0, y0, x1, y1 = (padded[..., j].view(*padded.shape[:2], 1, 1) for j in range(4))
    inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1) & valid.view(*valid.shape, 1, 1)
    return inside.any(dim=1)


def _energy(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    total = maps.flatten(1).sum(1)
    inside = (maps * region.to(maps)).flatten(1).sum(1)
    return torch.where(total != 0, inside / torch.where(total != 0, total, 1.0), torch.nan)


def energy_pointing_game(maps: torch.Tensor, boxes: BoxList) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020, sec. 5.2):
    ``sum(m inside the union of boxes) / sum(m)``.

    Maps are used as given (expected non-negative, e.g. min-max normalised). (N,) float64; NaN for an
    all-zero map or an image without boxes.
    """
    m = _check_maps(maps)
    region = boxes_to_masks(boxes, *m.shape[1:]).to(m.device)
    return _masked_nan(_energy(m, region), m, region)


def energy_pointing_game_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """:func:`energy_pointing_game` with an object mask (N,H,W) bool instead of boxes."""
    m = _check_maps(maps)
    region = _check_masks(masks, m)
    return _masked_nan(_energy(m, region), m, region)


def _check_masks(masks: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    if masks.shape != maps.shape:
        raise DataError(f"masks: expected shape {tuple(maps.shape)}, got {tuple(masks.shape)}")
    return masks.to(device=maps.device, dtype=torch.bool)


def _masked_nan(values: torch.Tensor, maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """NaN where the map is not finite or the image has no ground-truth region."""
    ok = torch.isfinite(maps).flatten(1).all(1) & region.flatten(1).any(1)
    return torch.where(ok, values, torch.nan)


def _pointing_point(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N,) row, column of the first raster-order maximum, and whether the map is non-constant."""
    flat = maps.flatten(1)
    idx = torch.argmax(flat, dim=1)  # first maximal index (documented torch behaviour)
    varying = flat.amax(1) > flat.amin(1)
    return idx // maps.shape[2], idx % maps.shape[2], varying


def pointing_game(maps: torch.Tensor, boxes: BoxList, tolerance: float = 0.0) -> torch.Tensor:
    """Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", IJCV 2018):
    1 if the map's maximum (module conventions) lies in a box, else 0.

    Args:
        maps: (N,H,W).
        boxes: per image (K,4) inclusive boxes.
        tolerance: a hit also counts within this Euclidean pixel distance of a box (Zhang et al. use
            15 px at ImageNet resolution; SPEC and the study: 0).

    Returns:
        (N,) float64 in {0, 1}; NaN for a constant or non-finite map or an image without boxes.
    """
    m = _check_maps(maps)
    padded, valid = pad_boxes(boxes, m.shape[0], *m.shape[1:])
    padded, valid = padded.to(m.device), valid.to(m.device)
    row, col, varying = _pointing_point(m)
    row, col = row.view(-1, 1).to(torch.float64), col.view(-1, 1).to(torch.float64)
    x0, y0, x1, y1 = padded.to(torch.float64).unbind(2)
    dx = torch.clamp(torch.maximum(x0 - col, col - x1), min=0.0)
    dy = torch.clamp(torch.maximum(y0 - row, row - y1), min=0.0)
    hit = ((dx**2 + dy**2 <= tolerance**2) & valid).any(1).to(torch.float64)
    ok = varying & valid.any(1) & torch.isfinite(m).flatten(1).all(1)
    return torch.where(ok, hit, torch.nan)


def pointing_game_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """:func:`pointing_game` (tolerance 0) with an object mask (N,H,W) bool: is the maximum on the object?"""
    m = _check_maps(maps)
    region = _check_masks(masks, m)
    row, col, varying = _pointing_point(m)
    hit = region[torch.arange(m.shape[0], device=m.device), row, col].to(torch.float64)
    return _masked_nan(torch.where(varying, hit, torch.nan), m, region)


def binarise(maps: torch.Tensor) -> torch.Tensor:
    """(N,H,W) bool: pixels strictly above their map's mean (all False for a constant map)."""
    m = _check_maps(maps)
    return m > m.flatten(1).mean(1).view(-1, 1, 1)


def map_boxes(maps: torch.Tensor, component: Component = "largest") -> torch.Tensor:
    """(N,4) long tight box ``xmin, ymin, xmax, ymax`` of each binarised map (module conventions).

    Rows are -1 where nothing is above the mean (constant map). Connected components are labelled on
    the CPU with ``scipy.ndimage.label`` (4-connectivity), one call per image (no model involved).
    """
    binary = binarise(maps).cpu().numpy()
    out = torch.full((binary.shape[0], 4), -1, dtype=torch.long)
    for i, b in enumerate(binary):
        if not b.any():
            continue
        if component == "largest":
            labels, _ = ndimage.label(b)
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0  # background
            b = labels == int(np.argmax(sizes))  # argmax: smallest label among ties = first in raster order
        elif component != "all":
            raise DataError(f"component: {component!r} is not one of largest, all")
        ys, xs = np.nonzero(b)
        out[i] = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()])
    return out


def max_box_iou(pred: torch.Tensor, boxes: BoxList, height: int, width: int) -> torch.Tensor:
    """(N,) float64 largest pixel IoU of each predicted box (N,4; -1 rows give NaN) with the image's boxes."""
    padded, valid = pad_boxes(boxes, pred.shape[0], height, width)
    p = pred.view(-1, 1, 4).to(torch.float64)
    g = padded.to(torch.float64)
    iw = (torch.minimum(p[..., 2], g[..., 2]) - torch.maximum(p[..., 0], g[..., 0]) + 1).clamp(min=0)
    ih = (torch.minimum(p[..., 3], g[..., 3]) - torch.maximum(p[..., 1], g[..., 1]) + 1).clamp(min=0)
    inter = iw * ih
    area_p = (p[..., 2] - p[..., 0] + 1) * (p[..., 3] - p[..., 1] + 1)
    area_g = (g[..., 2] - g[..., 0] + 1) * (g[..., 3] - g[..., 1] + 1)
    iou = torch.where(valid, inter / (area_p + area_g - inter), 0.0).amax(1)
    return torch.where((pred[:, 0] >= 0) & valid.any(1), iou, torch.nan)


def _error(iou: torch.Tensor, iou_threshold: float | None) -> torch.Tensor:
    if iou_threshold is None:
        return 1.0 - iou
    return torch.where(torch.isnan(iou), torch.nan, 1.0 - (iou >= iou_threshold).to(torch.float64))


def localization_error(
    maps: torch.Tensor,
    boxes: BoxList,
    *,
    component: Component = "largest",
    iou_threshold: float | None = None,
) -> torch.Tensor:
    """Localization error: ``1 - max_k IoU(box of the binarised map, box_k)`` (ILSVRC localization with
    CAM-style boxes, Zhou et al., CVPR 2016; module conventions).

    Args:
        maps: (N,H,W).
        boxes: per image (K,4) inclusive boxes.
        component: ``"largest"`` connected component (default) or ``"all"`` binarised pixels.
        iou_threshold: None gives the numeric ``1 - IoU`` (SPEC); a value ``t`` gives the ILSVRC
            thresholded error ``1 - [IoU >= t]`` (ILSVRC: t = 0.5; the study's code used ``IoU > 0.5``).

    Returns:
        (N,) float64; NaN for a constant or non-finite map or an image without boxes.
    """
    m = _check_maps(maps)
    iou = max_box_iou(map_boxes(m, component), boxes, *m.shape[1:])
    finite = torch.isfinite(m).flatten(1).all(1).cpu()
    return _error(torch.where(finite, iou, torch.nan), iou_threshold)


def official_metric(
    maps: torch.Tensor,
    boxes: BoxList,
    correct: torch.Tensor,
    *,
    component: Component = "largest",
    iou_threshold: float | None = None,
) -> torch.Tensor:
    """Official metric (CASME, Dabkowski & Gal / Zolna et al.): :func:`localization_error` for correctly
    classified images (``correct`` (N,) bool, top-1), 1 otherwise. (N,) float64."""
    le = localization_error(maps, boxes, component=component, iou_threshold=iou_threshold)
    if correct.shape != le.shape:
        raise DataError(f"correct: expected shape {tuple(le.shape)}, got {tuple(correct.shape)}")
    return torch.where(correct.cpu().bool(), le, 1.0)


def iou_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pixel IoU between the binarised map (all pixels above the mean) and the object mask (N,H,W) bool.

    (N,) float64; NaN for a constant or non-finite map or an empty object mask.
    """
    m = _check_maps(maps)
    region = _check_masks(masks, m)
    b = binarise(m)
    inter = (b & region).flatten(1).sum(1).to(torch.float64)
    union = (b | region).flatten(1).sum(1).to(torch.float64)
    iou = torch.where(b.flatten(1).any(1), inter / union.clamp(min=1), torch.nan)
    return _masked_nan(iou, m, region)


@dataclasses.dataclass(frozen=True)
class LocalizationParams(MetricParams):
    """Localization parameters.

    Attributes:
        tolerance: pointing-game tolerance in pixels (0: the maximum must lie inside a box).
        component: how LE/OM turn the binarised map into a box (:func:`map_boxes`).
        iou_threshold: None: LE is the numeric ``1 - IoU``; 0.5: ILSVRC's thresholded error.
    """

    tolerance: float = 0.0
    component: Component = "largest"
    iou_threshold: float | None = None


def _localization(inputs: MetricInputs, params: LocalizationParams, wanted: frozenset[str]) -> Scores:
    """Every metric whose regions are given (boxes and/or masks), on the CPU."""
    m, boxes, masks, out = inputs.maps.cpu(), inputs.boxes, inputs.masks, {}
    le = {"component": params.component, "iou_threshold": params.iou_threshold}
    fns: dict[str, Callable[[], torch.Tensor]] = {}
    if boxes is not None:
        fns["energy_pointing_game"] = lambda: energy_pointing_game(m, boxes)
        fns["pointing_game"] = lambda: pointing_game(m, boxes, params.tolerance)
        fns["localization_error"] = lambda: localization_error(m, boxes, **le)
        if inputs.correct is not None:
            fns["official_metric"] = lambda: official_metric(m, boxes, torch.as_tensor(inputs.correct), **le)
    if masks is not None:
        masks = torch.as_tensor(masks)
        fns["energy_pointing_game_mask"] = lambda: energy_pointing_game_mask(m, masks)
        fns["pointing_game_mask"] = lambda: pointing_game_mask(m, masks)
        fns["iou_mask"] = lambda: iou_mask(m, masks)
    for name, fn in fns.items():
        if name in wanted:
            out[name] = to_numpy(fn())
    return out


def _loc(name: str, higher: bool, display: str, doc: str, requires: tuple[str, ...]) -> MetricDef:
    return MetricDef(name, "localization", higher, "localization", display, doc, requires)


LOCALIZATION = register(
    MetricGroup(
        "localization",
        "localization",
        LocalizationParams,
        _localization,
        needs_model=False,
        accepts=("boxes", "masks", "correct"),
    ),
    _loc(
        "energy_pointing_game",
        True,
        "EPG",
        "Energy pointing game (Score-CAM, sec. 4.3): share of saliency inside the boxes.",
        ("boxes",),
    ),
    _loc(
        "pointing_game",
        True,
        "SPG",
        "Pointing game (Zhang et al., ECCV 2016): the maximum lies in a box.",
        ("boxes",),
    ),
    _loc(
        "localization_error",
        False,
        "LE",
        "Localization error: 1 - max IoU of the binarised map's box "
        "with a ground-truth box (ILSVRC; Grad-CAM sec. 4.1).",
        ("boxes",),
    ),
    _loc(
        "official_metric",
        False,
        "OM",
        "Official metric: LE for correctly classified images, 1 otherwise.",
        ("boxes", "correct"),
    ),
    _loc("energy_pointing_game_mask", True, "EPG (mask)", "EPG with the object mask as region.", ("masks",)),
    _loc(
        "pointing_game_mask", True, "SPG (mask)", "Pointing game with the object mask as region.", ("masks",)
    ),
    _loc("iou_mask", True, "IoU (mask)", "IoU of the binarised map with the object mask.", ("masks",)),
)
