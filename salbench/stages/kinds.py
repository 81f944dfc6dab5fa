"""The evaluation kinds of stage 3, as (per-batch compute, summarised columns) pairs.

Parameters come from the config's ``metrics`` section (protocol preset < config file):
``recognition`` (step, substrate, blur), ``monotonicity``, ``sensitivity`` (``explainer``:
``gradient`` = the acml2024 plain-gradient re-explanation, ``method`` = re-run the method under test as
the reference protocol does), ``completeness``, ``localization``, ``gomez`` (``clamp_mask``,
``bound_max_step``, ``max_step_nb``; absent: the saliency-maps-metrics package defaults).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from salbench.errors import ConfigError
from salbench.methods import SaliencyMethod
from salbench.metrics import METRICS
from salbench.metrics.complexity import complexity, effective_complexity, sparseness
from salbench.metrics.fidelity import black_baseline, completeness, monotonicity
from salbench.metrics.gomez import (
    FILLINGS,
    DeletionParams,
    SingleStepParams,
    curve_scores,
    single_step_scores,
)
from salbench.metrics.localization import (
    energy_pointing_game,
    energy_pointing_game_mask,
    iou_mask,
    localization_error,
    official_metric,
    pointing_game,
    pointing_game_mask,
)
from salbench.metrics.recognition import RecognitionParams, StartCache, recognition_scores
from salbench.metrics.robustness import nan_reduce, saliency_explainer, sensitivity_ratios
from salbench.stages.evaluate import Batch, Kind
from salbench.stages.generate import batch_generator
from salbench.stages.workspace import Workspace
from salbench.store.maps import MapStore

RECOGNITION_COLUMNS = ("average_drop", "average_increase", "average_gain", "insertion", "deletion")


def _np(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _recognition_state(ws: Workspace, label_set: str) -> dict:
    return {"cache": StartCache(), "params": RecognitionParams(**ws.cfg.metric_params("recognition"))}


def _recognition(ws: Workspace, batch: Batch, method: str, maps: torch.Tensor, state: dict):
    params: RecognitionParams = state["params"]
    kwargs = params.as_kwargs()
    kwargs["max_batch"] = ws.cfg.run.max_batch
    out = recognition_scores(
        ws.model,
        batch.images,
        maps,
        batch.targets,
        mean=ws.context.mean,
        std=ws.context.std,
        base_probs=batch.base_probs,
        curves=True,
        cache=state["cache"],
        ids=batch.ids,
        **kwargs,
    )
    cols = {k: out[k] for k in ("base_prob", "masked_prob", *RECOGNITION_COLUMNS)}
    return cols, {"insertion": out["insertion_curve"], "deletion": out["deletion_curve"]}


RECOGNITION = Kind("recognition", _recognition, RECOGNITION_COLUMNS, _recognition_state)


def method_from_store(ws: Workspace, store_path: Any, progress: bool = False) -> SaliencyMethod:
    """The saliency method that produced a store (name and params from its attributes), prepared for the
    run exactly as generation prepared it (the same RISE masks, IBA statistics over the same images)."""
    desc = MapStore.read_only(store_path).attrs["method"]
    method = ws.method(desc["name"], desc["params"])
    method.prepare(ws.preparation(desc=f"{method.store_id}: prepare", progress=progress))
    return method


def _complexity_state(ws: Workspace, label_set: str) -> dict:
    sens = ws.cfg.metric_params("sensitivity")
    return {
        "label_set": label_set,
        "methods": {},
        "monotonicity": ws.cfg.metric_params("monotonicity"),
        "explainer": sens.pop("explainer", "gradient"),
        "sensitivity": sens,
        "completeness": ws.cfg.metric_params("completeness"),
        "complexity": ws.cfg.metric_params("complexity"),
    }


def _complexity(ws: Workspace, batch: Batch, method: str, maps: torch.Tensor, state: dict):
    mb = ws.cfg.run.max_batch
    mono = monotonicity(
        ws.model,
        batch.images,
        maps,
        batch.targets,
        max_batch=mb,
        generator=batch_generator(ws, f"monotonicity:{method}", batch.index),
        **state["monotonicity"],
    )
    if state["explainer"] == "method":
        if method not in state["methods"]:  # prepared once per method, reused by every batch
            state["methods"][method] = method_from_store(ws, ws.layout.maps(state["label_set"], method))
        explainer = state["methods"][method]
        g = batch_generator(ws, f"reexplain:{method}", batch.index)
        explain = lambda x, t: explainer(x, t, g)  # noqa: E731
    else:
        explain = saliency_explainer(ws.model)
    ratios = sensitivity_ratios(
        maps,
        batch.images,
        batch.targets,
        explain,
        generator=batch_generator(ws, f"sensitivity:{method}", batch.index),
        **state["sensitivity"],
    )
    r = _np(ratios).astype(np.float64)
    ms, avg = nan_reduce(r, np.nanmax), nan_reduce(r, np.nanmean)
    gap, holds = completeness(
        ws.model,
        batch.images,
        maps,
        batch.targets,
        black_baseline(batch.images, ws.context),
        max_batch=mb,
        **state["completeness"],
    )
    cx = state["complexity"]
    cols = {
        "monotonicity": _np(mono),
        "max_sensitivity": ms,
        "avg_sensitivity": avg,
        "sparseness": _np(sparseness(maps, **{k: v for k, v in cx.items() if k != "eps"})),
        "complexity": _np(complexity(maps, **{k: v for k, v in cx.items() if k not in ("eps", "shift")})),
        "effective_complexity": _np(
            effective_complexity(maps, **{k: v for k, v in cx.items() if k != "shift"})
        ),
        "completeness_gap": _np(gap),
        "completeness_holds": _np(holds).astype(np.float64),
    }
    return cols, {}


COMPLEXITY = Kind(
    "complexity",
    _complexity,
    (
        "monotonicity",
        "max_sensitivity",
        "avg_sensitivity",
        "sparseness",
        "complexity",
        "effective_complexity",
        "completeness_gap",
        "completeness_holds",
    ),
    _complexity_state,
    {"completeness_gap": False, "completeness_holds": True},
)


def _localization(ws: Workspace, batch: Batch, method: str, maps: torch.Tensor, state: dict):
    params = ws.cfg.metric_params("localization")
    cols: dict[str, np.ndarray] = {}
    boxes = batch.boxes(ws)
    m = maps.cpu()
    if boxes is not None:
        correct = torch.as_tensor(batch.correct)
        cols["energy_pointing_game"] = _np(energy_pointing_game(m, boxes))
        cols["pointing_game"] = _np(pointing_game(m, boxes))
        cols["localization_error"] = _np(localization_error(m, boxes, **params))
        cols["official_metric"] = _np(official_metric(m, boxes, correct, **params))
    masks = batch.masks(ws)
    if masks is not None:
        cols["energy_pointing_game_mask"] = _np(energy_pointing_game_mask(m, masks))
        cols["pointing_game_mask"] = _np(pointing_game_mask(m, masks))
        cols["iou_mask"] = _np(iou_mask(m, masks))
    return cols, {}


LOCALIZATION = Kind(
    "localization",
    _localization,
    (
        "energy_pointing_game",
        "pointing_game",
        "localization_error",
        "official_metric",
        "energy_pointing_game_mask",
        "pointing_game_mask",
        "iou_mask",
    ),
)


GOMEZ_METRICS = ("iic", "ad_gomez", "add", "dauc", "dc", "iauc", "ic")
GOMEZ_COLUMNS = tuple(f"{m}_{f}" for m in GOMEZ_METRICS for f in FILLINGS)
# ``<metric>_<filling>`` columns are not registry ids: their directions are the registered metrics'.
GOMEZ_DIRECTIONS = {f"{m}_{f}": METRICS.get(m).higher_is_better for m in GOMEZ_METRICS for f in FILLINGS}


_GOMEZ_SINGLE_KEYS = {f.name for f in dataclasses.fields(SingleStepParams)} - {"filling", "max_batch"}
_GOMEZ_CURVE_KEYS = {f.name for f in dataclasses.fields(DeletionParams)} - {"filling", "max_batch"}


def _gomez_state(ws: Workspace, label_set: str) -> dict:
    """Keyword arguments from ``metrics.gomez`` (unset: package defaults) and the run's ``max_batch``."""
    values = ws.cfg.metric_params("gomez")
    allowed = sorted(_GOMEZ_SINGLE_KEYS | _GOMEZ_CURVE_KEYS)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown config key 'metrics.gomez.{unknown[0]}'; allowed: {', '.join(allowed)}")
    mb = ws.cfg.run.max_batch
    return {
        "single": {**{k: v for k, v in values.items() if k in _GOMEZ_SINGLE_KEYS}, "max_batch": mb},
        "curve": {**{k: v for k, v in values.items() if k in _GOMEZ_CURVE_KEYS}, "max_batch": mb},
    }


def _gomez(ws: Workspace, batch: Batch, method: str, maps: torch.Tensor, state: dict):
    """Gomez et al.'s seven metrics for both fillings: per filling one single-step pass (IIC, AD, ADD) and
    one curve pass per game (DAUC + DC, IAUC + IC); f(x)_c of the first pass is reused by the second."""
    args = (ws.model, batch.images, maps, batch.targets)
    stats = {"mean": ws.context.mean, "std": ws.context.std}
    cols: dict[str, np.ndarray] = {}
    base = None
    for filling in FILLINGS:
        single = {**state["single"], "filling": filling}
        out = single_step_scores(*args, **stats, **single, parts=("kept", "removed"), base_probs=base)
        base = torch.from_numpy(out["base_prob"])
        parts = [out]
        for game in ("deletion", "insertion"):
            parts.append(curve_scores(*args, **stats, **{**state["curve"], "filling": filling}, game=game))
        for part in parts:
            cols |= {f"{m}_{filling}": part[m] for m in GOMEZ_METRICS if m in part}
    return {c: cols[c] for c in GOMEZ_COLUMNS}, {}


GOMEZ = Kind("gomez", _gomez, GOMEZ_COLUMNS, _gomez_state, GOMEZ_DIRECTIONS)


KINDS = {k.name: k for k in (RECOGNITION, COMPLEXITY, LOCALIZATION, GOMEZ)}


def evaluation_parser(description: str):
    """Parser of an evaluation script: common flags + ``--method`` (map store ids)."""
    from salbench.stages.cli import common_parser

    p = common_parser(description)
    p.add_argument("--method", nargs="+", help="map store ids to evaluate (default: every complete store)")
    return p


def run_evaluation_script(args: Any, kind_name: str) -> int:
    """Body of every evaluation script: config -> workspace -> evaluate -> printed summary."""
    from salbench.stages.cli import config_from_args, configure_logging
    from salbench.stages.evaluate import evaluate
    from salbench.stages.workspace import open_workspace

    configure_logging(args.verbose)
    ws = open_workspace(config_from_args(args))
    rows = evaluate(ws, KINDS[kind_name], args.method)
    for r in rows:
        print(
            f"{r['label_set']:12s} {r['method']:34s} {r['metric']:26s} {r['value']:10.4f} (n={r['n_images']})"
        )
    print(
        f"per-image CSVs under {ws.layout.model_dir / 'evaluation'}; summary rows in {ws.layout.results_csv}"
    )
    return 0


def evaluation_script(doc: str, kind_name: str):
    """``(build_parser, main)`` of an evaluation script for ``kind_name``."""
    from salbench.stages.cli import entry

    def build_parser():
        return evaluation_parser(doc.splitlines()[0])

    @entry
    def main(argv: list[str] | None = None) -> int:
        return run_evaluation_script(build_parser().parse_args(argv), kind_name)

    return build_parser, main
