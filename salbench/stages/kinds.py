"""The evaluation kinds of stage 3, declared as the metric groups each one computes.

A kind is what one evaluation script computes: ``recognition`` (AD, AI, AG, insertion, deletion),
``complexity`` (monotonicity, sensitivity, sparseness, complexity, effective complexity, completeness),
``localization`` and ``gomez`` (Gomez et al.'s metrics for both fillings). It lists group runs; every
run goes through :func:`salbench.metrics.compute` with the group's parameters from the config section
``metrics.<section>`` (protocol preset < config file; the run's ``max_batch``). Per-image columns are
named after the metrics (plus a suffix, e.g. ``iic_black``), directions come from the metric
declarations. A kind is computed on one aligned :class:`Batch` at a time (:func:`compute_kind`) and
its per-image columns become results rows (:func:`summary_rows`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from salbench.data.sources import load_boxes, load_mask
from salbench.errors import ConfigError
from salbench.methods import SaliencyMethod
from salbench.metrics import METRICS, MetricGroup, MetricInputs, MetricParams, compute
from salbench.metrics.complexity import COMPLEXITY
from salbench.metrics.fidelity import COMPLETENESS, MONOTONICITY
from salbench.metrics.gomez import FILLINGS, GOMEZ_GROUPS
from salbench.metrics.localization import LOCALIZATION
from salbench.metrics.recognition import RECOGNITION, StartCache
from salbench.metrics.robustness import SENSITIVITY
from salbench.scoped import current_precision
from salbench.stages.workspace import Workspace
from salbench.stats import Bootstrap, summarise_means
from salbench.store.maps import MapStore


@dataclasses.dataclass(frozen=True)
class GroupRun:
    """One group computed by a kind: ``suffix`` is appended to its column names, ``fixed`` parameters are
    set by the kind (not the config), e.g. the Gomez filling."""

    group: MetricGroup
    suffix: str = ""
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Kind:
    """An evaluation kind: its output suffix and the group runs it computes, in order.

    Attributes:
        name: ``<method>_<name>.csv`` per image.
        runs: group runs.
        base: ``diagnostics``: Y = the stage-1 probability of the target (in fp32 runs; under a reduced
            ``run.precision`` as ``computed``); ``computed``: f(x)_c computed by the first run that
            needs it and shared by the later ones.
    """

    name: str
    runs: tuple[GroupRun, ...]
    base: Literal["diagnostics", "computed"] = "diagnostics"

    @property
    def columns(self) -> dict[str, str]:
        """Summarised per-image columns -> their metric id: metric-major, then the runs' suffixes."""
        out: dict[str, str] = {}
        metrics = dict.fromkeys(m for r in self.runs for m in r.group.metrics)
        for m in metrics:
            for r in self.runs:
                if m in r.group.metrics:
                    out[f"{m}{r.suffix}"] = m
        return out

    @property
    def ties(self) -> dict[str, str]:
        """Indicator columns -> their per-image near-tie column (``iic_black`` -> ``iic_tie_black``)."""
        return {f"{m}{r.suffix}": f"{t}{r.suffix}" for r in self.runs for m, t in r.group.ties.items()}

    def accepts(self, name: str) -> bool:
        """Whether one of its groups reads the :class:`MetricInputs` field ``name``."""
        return any(name in r.group.accepts for r in self.runs)

    def params(self, ws: Workspace) -> tuple[MetricParams, ...]:
        """Each run's parameters from its config section, the run's ``max_batch`` and its fixed values,
        tie tolerances raised to the pass precision's floor (:meth:`MetricParams.at_precision`).

        Raises:
            ConfigError: a key of a section that none of the kind's groups of that section knows.
        """
        sections: dict[str, set[str]] = {}
        for r in self.runs:
            sections.setdefault(r.group.section, set()).update(
                f.name for f in dataclasses.fields(r.group.params_cls)
            )
        for section, names in sections.items():
            unknown = sorted(set(ws.cfg.metric_params(section)) - names - {"max_batch"})
            if unknown:
                allowed = ", ".join(sorted(names - {"max_batch"}))
                raise ConfigError(f"unknown config key 'metrics.{section}.{unknown[0]}'; allowed: {allowed}")
        out = []
        for r in self.runs:
            names = {f.name for f in dataclasses.fields(r.group.params_cls)}
            values = {k: v for k, v in ws.cfg.metric_params(r.group.section).items() if k in names}
            if "max_batch" in names:
                values["max_batch"] = ws.cfg.run.max_batch
            params = r.group.params({**values, **r.fixed}, f"config section 'metrics.{r.group.section}'")
            out.append(params.at_precision(ws.cfg.run.precision))  # near ties no finer than the passes
        return tuple(out)


RECOGNITION_KIND = Kind("recognition", (GroupRun(RECOGNITION),))
COMPLEXITY_KIND = Kind(
    "complexity",
    (GroupRun(MONOTONICITY), GroupRun(SENSITIVITY), GroupRun(COMPLEXITY), GroupRun(COMPLETENESS)),
)
LOCALIZATION_KIND = Kind("localization", (GroupRun(LOCALIZATION),))
GOMEZ_KIND = Kind(
    "gomez",
    tuple(GroupRun(g, f"_{f}", {"filling": f}) for f in FILLINGS for g in GOMEZ_GROUPS),
    base="computed",
)
KINDS = {k.name: k for k in (RECOGNITION_KIND, COMPLEXITY_KIND, LOCALIZATION_KIND, GOMEZ_KIND)}


def method_from_store(ws: Workspace, store_path: Any, progress: bool = False) -> SaliencyMethod:
    """The saliency method that produced a store (name and params from its attributes), prepared for the
    run exactly as generation prepared it (the same RISE masks, IBA statistics over the same images)."""
    desc = MapStore.read_only(store_path).attrs["method"]
    method = ws.method(desc["name"], desc["params"])
    method.prepare(ws.preparation(desc=f"{method.store_id}: prepare", progress=progress))
    return method


def make_state(kind: Kind, ws: Workspace, label_set: str) -> dict[str, Any]:
    """What a kind keeps across the batches of one label set: parameters, shared passes, re-explainers."""
    params = kind.params(ws)
    reexplain = any(r.group is SENSITIVITY and p.explainer == "method" for r, p in zip(kind.runs, params))
    return {
        "label_set": label_set,
        "params": params,
        "cache": StartCache(),
        "reexplain": reexplain,
        "methods": {},
    }


def _reexplainer(ws: Workspace, batch: Any, method: str, state: dict[str, Any]):
    """The method under test, prepared once per label set, re-explaining S noisy copies of the batch's
    images (rows ordered sample-major) with one generator per (image, target, sample)."""
    if method not in state["methods"]:
        state["methods"][method] = method_from_store(ws, ws.layout.maps(state["label_set"], method))
    explainer, n = state["methods"][method], len(batch.ids)

    def explain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        samples = len(x) // max(n, 1)
        keys = [f"reexplain:{method}:{s}" for s in range(samples)]
        gens = [g for key in keys for g in ws.row_generators(key, batch.ids, batch.targets)]
        return explainer(x, t, gens)

    return explain


def compute_kind(
    kind: Kind, ws: Workspace, batch: Any, method: str, maps: torch.Tensor, state: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One method's per-image columns (aux outputs first, then :attr:`Kind.columns`) and arrays for one
    batch (:class:`Batch`)."""
    full_precision = current_precision() == "fp32"
    inputs = MetricInputs(
        maps=maps,
        images=batch.images,
        targets=batch.targets,
        model=ws.model,
        mean=ws.context.mean,
        std=ws.context.std,
        # Y from stage 1 is a float32 probability; under the reduced pass precision the stage set, Y is
        # f(x)_c computed in that precision (a curve start), so that O and Y are compared in one precision
        base_probs=batch.base_probs if kind.base == "diagnostics" and full_precision else None,
        boxes=batch.boxes(ws) if kind.accepts("boxes") else None,
        masks=batch.masks(ws) if kind.accepts("masks") else None,
        correct=torch.as_tensor(batch.correct) if kind.accepts("correct") else None,
        ids=batch.ids,
        cache=state["cache"],
        # draws are per method, but for keys shared by every method of an image ("shared:...")
        generator=lambda key: ws.row_generators(
            key if key.startswith("shared:") else f"{key}:{method}", batch.ids, batch.targets
        ),
        explain=_reexplainer(ws, batch, method, state) if state["reexplain"] else None,
    )
    scores: dict[str, np.ndarray] = {}
    aux: dict[str, np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}
    for run, params in zip(kind.runs, state["params"]):
        out = compute(run.group, inputs, params)
        if kind.base == "computed" and inputs.base_probs is None and "base_prob" in out:
            inputs = dataclasses.replace(inputs, base_probs=torch.from_numpy(out["base_prob"]))
        scores |= {f"{m}{run.suffix}": out[m] for m in run.group.metrics if m in out}
        aux |= {f"{k}{run.suffix}": out[k] for k in run.group.aux}
        arrays |= {f"{k}{run.suffix}": out[v] for k, v in run.group.arrays.items()}
    columns = {c: np.asarray(scores[c]) for c in kind.columns if c in scores}
    return {**aux, **columns}, arrays


@dataclasses.dataclass
class Batch:
    """One aligned batch of images shared by every method evaluated on it."""

    index: int
    rows: np.ndarray
    ids: list[str]
    images: torch.Tensor
    targets: torch.Tensor
    base_probs: np.ndarray
    correct: np.ndarray
    _extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def subset(self, keep: np.ndarray) -> Batch:
        """The images of this batch where ``keep`` (a boolean mask) is true; same index."""
        idx = np.flatnonzero(keep)
        return Batch(
            self.index,
            self.rows[idx],
            [self.ids[i] for i in idx],
            self.images[torch.as_tensor(idx, device=self.images.device)],
            self.targets[torch.as_tensor(idx, device=self.targets.device)],
            self.base_probs[idx],
            self.correct[idx],
        )

    def boxes(self, ws: Workspace) -> list[np.ndarray] | None:
        if "boxes" not in self._extras:
            if ws.augmentation != "none":
                return None
            recs = [ws.data.records[int(r)] for r in self.rows]
            boxes = [load_boxes(ws.data, r) for r in recs]
            self._extras["boxes"] = None if any(b is None for b in boxes) else boxes
        return self._extras["boxes"]

    def masks(self, ws: Workspace) -> torch.Tensor | None:
        if "masks" not in self._extras:
            if ws.augmentation != "none":
                return None
            recs = [ws.data.records[int(r)] for r in self.rows]
            masks = [load_mask(ws.data, r) for r in recs] if ws.data.masks is not None else [None]
            self._extras["masks"] = None if any(m is None for m in masks) else torch.stack(masks)
        return self._extras["masks"]


def summary_rows(
    ws: Workspace,
    label_set: str,
    method: str,
    frame: pd.DataFrame,
    kind: Kind,
    augmentation: str = "none",
    variant: str = "none",
    family: str = "unknown",
) -> list[dict]:
    """Tidy results rows of ``kind``'s summarised columns: mean over the finite per-image values,
    ``n_images`` of them, ``n_skipped`` the others, their ``std`` and the bootstrap interval of the mean
    (:mod:`salbench.stats`, settings ``run.ci_*``); ``n_ties``: near ties of an indicator metric among
    the averaged images; the direction of the column's metric."""
    columns = [c for c in kind.columns if c in frame]
    values = [pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64) for c in columns]
    summaries = summarise_means(values, Bootstrap.from_run(ws.cfg.run))
    rows = []
    for col, v, summary in zip(columns, values, summaries):
        metric, tie = kind.columns[col], kind.ties.get(col, "")
        flags = pd.to_numeric(frame[tie], errors="coerce").to_numpy() if tie in frame else None
        ties = math.nan if flags is None else float((flags[np.isfinite(v)] == 1).sum())
        rows.append(
            {
                "model": ws.cfg.model.name,
                "dataset": ws.data.name,
                "label_set": label_set,
                "method": method,
                "family": family,
                "augmentation": augmentation,
                "variant": variant,
                "level": 0,
                "metric": col,
                **summary.columns(),
                "higher_is_better": METRICS.get(metric).higher_is_better,
                "protocol": ws.cfg.run.protocol,
                "checkpoint": ws.checkpoint_id,
                "precision": ws.cfg.run.precision,
                "n_ties": ties,
            }
        )
    return rows


def higher_is_better(column: str, kind: Kind) -> bool:
    """The direction of a summarised column: its metric's."""
    return METRICS.get(kind.columns[column]).higher_is_better
