"""Stage 5, the report: read what the evaluation stages left on disk and hand it to :mod:`salbench.report`.

The report itself is built from ``results.csv``; this stage reads the per-image values, curves, map
stores, images and manifests that some of its figures and its provenance section draw on:

* per-image recognition CSVs ``<root>/<model>/evaluation/<label_set>/<method>_recognition.csv``
  (``image_id, base_prob, masked_prob, average_drop, average_increase, average_gain, insertion,
  deletion``),
* insertion/deletion curves ``<method>_curves.npz`` (arrays ``image_ids``, ``insertion``,
  ``deletion``, each curve (n_images, n_steps + 1)), read without unpickling,
* stage manifests ``**/manifest.json`` (configuration, protocol, versions, timings),
* images and maps for Figure 1 (map stores and the run's image list).

Everything here is optional input: a missing file means "not computed in this run", not an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from salbench.errors import DataError, SalbenchError
from salbench.report import build_report
from salbench.report.figures import PER_IMAGE_COLUMNS, Figure1Inputs, pick_best_worst
from salbench.report.presentation import paper_methods
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.reuse import reuse_summary
from salbench.stats import DEFAULT_BOOTSTRAP, Bootstrap, percentile_intervals
from salbench.store.layout import RunLayout, model_folder
from salbench.store.outputs import write_run_record
from salbench.store.results import read_results

log = logging.getLogger(__name__)
RECOGNITION_SUFFIX = "_recognition.csv"
CURVES_SUFFIX = "_curves.npz"


def evaluation_dir(root: Path, model: str, label_set: str) -> Path:
    return Path(root) / model_folder(model) / "evaluation" / label_set


def load_per_image(
    root: str | Path, models: Iterable[str], label_sets: Sequence[str] = ("groundtruth",)
) -> pd.DataFrame | None:
    """Every per-image recognition CSV of ``models`` x ``label_sets``, with ``model, label_set, method``.

    Returns:
        The concatenated rows, or None when no such file exists.

    Raises:
        DataError: a file lacks one of the required columns.
    """
    frames = []
    for model in models:
        for label_set in label_sets:
            for path in sorted(evaluation_dir(Path(root), model, label_set).glob(f"*{RECOGNITION_SUFFIX}")):
                frame = pd.read_csv(path, dtype={"image_id": str})
                missing = [c for c in PER_IMAGE_COLUMNS if c not in (*frame.columns, "method")]
                if missing:
                    raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
                frame.insert(0, "method", path.name[: -len(RECOGNITION_SUFFIX)])
                frame.insert(0, "label_set", label_set)
                frame.insert(0, "model", model)
                frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def mean_curves(
    method: str, curves: dict[str, np.ndarray], settings: Bootstrap = DEFAULT_BOOTSTRAP
) -> pd.DataFrame:
    """Mean insertion/deletion curve over images (NaN curves of skipped images ignored), with the
    percentile bootstrap interval of the mean at every point (the band of the curves figure).

    Args:
        method: method id.
        curves: ``insertion`` / ``deletion`` -> (n_images, n_points) probabilities.

    Returns:
        Columns ``method, curve, fraction, value, n_images, ci_low, ci_high``; ``fraction`` = step /
        (n_points - 1), the share of pixels changed (the last step may change fewer than ``step`` pixels).
    """
    parts = []
    for kind in ("insertion", "deletion"):
        arr = np.asarray(curves.get(kind, np.empty((0, 0))), dtype=float)
        if arr.ndim != 2 or arr.shape[1] < 2:
            continue
        finite = np.isfinite(arr).all(axis=1)
        if not finite.any():
            continue
        mean = arr[finite].mean(axis=0)
        if finite.sum() >= 2 and settings.resamples:
            low, high = percentile_intervals(arr[finite].T, settings)
        else:
            low = high = np.full(arr.shape[1], np.nan)
        parts.append(
            pd.DataFrame(
                {
                    "method": method,
                    "curve": kind,
                    "fraction": np.linspace(0.0, 1.0, arr.shape[1]),
                    "value": mean,
                    "n_images": int(finite.sum()),
                    "ci_low": low,
                    "ci_high": high,
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def load_curves(
    root: str | Path,
    models: Iterable[str],
    label_set: str = "groundtruth",
    settings: Bootstrap = DEFAULT_BOOTSTRAP,
) -> pd.DataFrame | None:
    """Mean curves per model and method from the ``<method>_curves.npz`` files, or None if there are none."""
    frames = []
    for model in models:
        for path in sorted(evaluation_dir(Path(root), model, label_set).glob(f"*{CURVES_SUFFIX}")):
            try:
                with np.load(path, allow_pickle=False) as npz:
                    curves = {k: npz[k] for k in ("insertion", "deletion") if k in npz.files}
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: unreadable curves file ({exc})") from None
            frame = mean_curves(path.name[: -len(CURVES_SUFFIX)], curves, settings)
            if not frame.empty:
                frame.insert(0, "model", model)
                frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def collect_manifests(root: str | Path) -> dict[str, Any]:
    """``relative path -> manifest`` of every ``manifest.json`` under ``root`` except the report's own."""
    root = Path(root)
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("manifest.json")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("report/"):
            continue
        try:
            out[rel] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping unreadable manifest %s (%s)", path, exc)
    return out


def _pixels(source: Any, record: Any) -> np.ndarray:
    """(H,W,3) pixels in [0,1] after the run's resize and crop (no normalisation; grey repeated)."""
    from PIL import Image

    try:
        with Image.open(record.path) as img:
            img.load()
            pixels = source.preprocess.pixels(img).numpy().transpose(1, 2, 0)
            return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels  # grey shown as grey
    except (OSError, ValueError) as exc:
        raise DataError(f"{record.source}: image {str(record.path)!r} cannot be read ({exc})") from None


def _read_maps(path: Path, wanted: Sequence[str]) -> dict[str, np.ndarray]:
    from salbench.store.maps import MapStore

    try:
        store = MapStore.read_only(path)
        index = {image_id: k for k, image_id in enumerate(store.ids)}
        present = [i for i in wanted if i in index]
        return dict(zip(present, store.read([index[i] for i in present])))
    except SalbenchError as exc:
        log.warning("figure 1: map store skipped (%s)", exc)
        return {}


def _as_generated(cfg: Any, store: Path) -> Any:
    """``cfg`` with the input preprocessing the maps of ``store`` were generated with (the resolved
    ``channels``, ``resize``, ``crop``, ``mean``, ``std`` in its attrs), so pixels and maps align."""
    from salbench.store.maps import MapStore

    try:
        data = MapStore.read_only(store).attrs.get("data") or {}
    except SalbenchError:
        return cfg
    fields = {k: data[k] for k in ("channels", "resize", "crop") if isinstance(data.get(k), int)}
    fields |= {k: tuple(data[k]) for k in ("mean", "std") if isinstance(data.get(k), list) and data[k]}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **fields)) if fields else cfg


def load_figure1_inputs(
    cfg: Any, per_image: pd.DataFrame | None, label_set: str = "groundtruth", methods: Sequence[str] = ()
) -> Figure1Inputs | None:
    """Images and maps of the best/worst image per metric for ``cfg``'s model, or None when unavailable.

    Picks come from :func:`~salbench.report.figures.pick_best_worst` on the per-image recognition
    rows; maps from the stores ``<root>/<model>/maps/<label_set>/<method>.zarr``; pixels from the run's
    image list after resize and crop, before normalisation.
    """
    from salbench.data.sources import open_data
    from salbench.store.layout import RunLayout

    stores = sorted((RunLayout.from_config(cfg).model_dir / "maps" / label_set).glob("*.zarr"))
    if per_image is None or not stores:
        return None
    rows = per_image[per_image["label_set"] == label_set]
    if "model" in rows.columns:
        rows = rows[rows["model"] == cfg.model.name]
    picks = pick_best_worst(rows)
    wanted = sorted({i for pair in picks.values() for i in pair})
    try:
        data = open_data(_as_generated(cfg, stores[0]))
        records = {r.image_id: r for r in data.records}
        images = {i: _pixels(data, records[i]) for i in wanted if i in records}
    except (SalbenchError, OSError) as exc:
        log.warning("figure 1 skipped: %s", exc)
        return None
    chosen = list(methods) or paper_methods([p.name[: -len(".zarr")] for p in stores])
    maps = {
        path.name[: -len(".zarr")]: _read_maps(path, wanted) for path in stores if path.name[:-5] in chosen
    }
    maps = {m: v for m, v in maps.items() if v}
    values = {
        (str(r["method"]), str(r["image_id"]), metric): float(r[metric])
        for _, r in rows[rows["image_id"].astype(str).isin(wanted)].iterrows()
        for metric in picks
    }
    if not (images and maps and picks):
        return None
    return Figure1Inputs(images, maps, picks, values, tuple(m for m in chosen if m in maps))


PROTOCOLS_DIR = "protocols"
"""``<output_root>/protocols/<protocol>/``: the same run under another protocol (``salbench compare``)."""


def load_other_protocols(
    root: str | Path, models: Iterable[str], label_sets: Sequence[str] = ("groundtruth",)
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame | None]]:
    """protocol -> (results rows, per-image rows) of every ``<root>/protocols/<protocol>/`` run folder."""
    out = {}
    for folder in sorted((Path(root) / PROTOCOLS_DIR).glob("*/results.csv")):
        frame = read_results(folder, missing_ok=False)
        per_image = load_per_image(folder.parent, models, label_sets)
        for protocol in sorted(set(frame["protocol"])):
            out[str(protocol)] = (frame[frame["protocol"] == protocol], per_image)
    return out


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("--results", help="results CSV to report on (default <output_root>/results.csv)")
    p.add_argument("--out-dir", help="report folder (default <output_root>/report)")
    p.add_argument("--no-figure1", action="store_true", help="skip Figure 1 (reads images and map stores)")
    p.add_argument(
        "--figure1-methods", nargs="+", help="map store ids shown in Figure 1 (default: the paper's methods)"
    )


def run_report(
    cfg: Any, results: Path, out: Path, figure1: bool = True, figure1_methods: Sequence[str] = ()
) -> Path:
    """Build ``out/REPORT.md`` (tables, figures, claims) from ``results`` and the run's files; its path."""
    layout = RunLayout.from_config(cfg)
    models = sorted(set(read_results(results, missing_ok=False)["model"]))
    per_image = load_per_image(layout.root, models, cfg.run.label_sets)
    fig1 = load_figure1_inputs(cfg, per_image, methods=figure1_methods) if figure1 else None
    others = load_other_protocols(layout.root, models, cfg.run.label_sets)
    path = build_report(
        results,
        out,
        {"manifests": collect_manifests(layout.root), "reuse": reuse_summary(layout.model_dir)},
        per_image=per_image,
        curves=load_curves(layout.root, models, settings=Bootstrap.from_run(cfg.run)),
        figure1_inputs=None if fig1 is None else {cfg.model.name: fig1},
        intervals=Bootstrap.from_run(cfg.run),
        others=others,
    )
    write_run_record(out, cfg, None, "report", extra={"results": str(results)})
    return path


def _run(args: argparse.Namespace, options: Options) -> int:
    configure_logging(args.verbose)
    cfg = config_from_args(args)
    layout = RunLayout.from_config(cfg)
    results = Path(args.results) if args.results else layout.results_csv
    out = Path(args.out_dir) if args.out_dir else layout.report_dir
    print(run_report(cfg, results, out, not args.no_figure1, args.figure1_methods or ()))
    return 0


HELP = "stage 5: the study's tables, figures and claims from results.csv"
COMMAND = register(Command("report", HELP, _arguments, _run, label_sets=False))
