"""Speed of salbench's re-inference metrics against peer libraries and the study's per-step loop.

Example: ``python benchmarks/bench_metrics.py --models embedded`` (``--quick``: smoke run).

Maps are fixed (smooth random maps in [0, 1]), so only the metric is timed. One row per model x
implementation x metric x batch size; batch size = rows per forward pass unless stated:

- ``insertion_deletion``: salbench ``recognition_scores`` (both curves, 28 steps + the start, AD/AI/AG
  terms and curves) for the *first* method of a run (map-independent curve ends evaluated), and
  ``insertion_deletion_further`` for every further method (ends taken from the :class:`StartCache`);
  peers: torchcam 0.5 ``DeletionInsertionMetric`` (28 steps; its one baseline, zeros, serves both curves),
  saliency-maps-metrics 0.0.26 ``Deletion`` + ``Insertion`` (28 steps, zero and blurred substrates, softmax
  appended to the model), and ``study_loop``: the study's per-step loop (:func:`study_causal_curves`; one
  model call per step per image, batch size 1).
- ``ad_ai``: salbench (``target_probs`` of ``x`` and ``x * m``, :func:`mask_pixels` on de-normalised pixels)
  vs torchcam ``ClassificationMetric`` on the fixed maps (batch size: images per call). In a salbench run
  AD/AI/AG come with ``recognition_scores`` for one extra pass per image.
- ``monotonicity``: salbench ``monotonicity`` vs Quantus 0.6 ``MonotonicityCorrelation`` with the study's
  call (``features_in_step`` = 224*32 scaled to the input, 10 samples, uniform baseline, no normalisation);
  Quantus' batch size is images per batch.
- ``max_sensitivity`` / ``avg_sensitivity``: salbench with :func:`saliency_explainer` (its rows explained in
  chunks of the batch size) vs Quantus 0.6 ``MaxSensitivity`` / ``AvgSensitivity`` with
  ``quantus.explain`` ``"Saliency"`` (10 samples, bound 0.2; batch size: images per batch). A salbench run
  gets both from one :func:`sensitivity_ratios` call.
- ``gomez_single_step`` (IIC, AD, ADD), ``gomez_deletion`` (DAUC + DC, black filling) and
  ``gomez_insertion`` (IAUC + IC, blurred filling), Gomez et al.'s metrics with ``bound_max_step``
  (maps at input resolution: 196 steps + the start): salbench :func:`single_step_scores` /
  :func:`curve_scores` vs saliency-maps-metrics 0.0.26 ``IIC_AD`` + ``ADD``, ``Deletion``, ``Insertion``
  (softmax appended). salbench runs with ``mean = 0, std = 1`` so that both fill the tensor they are given
  and compute the same numbers.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/bench_metrics.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

from benchmarks.common import (
    Case,
    Settings,
    Workload,
    benchmark_script,
    lazy,
)
from salbench.metrics.engine import target_probs
from salbench.metrics.fidelity import default_features_in_step, monotonicity
from salbench.metrics.gomez import curve_scores, single_step_scores
from salbench.metrics.perturbation import auc, default_step, gaussian_blur, mask_pixels, n_steps
from salbench.metrics.recognition import StartCache, drop_terms, increase_terms, recognition_scores
from salbench.metrics.robustness import avg_sensitivity, max_sensitivity, saliency_explainer

SCRIPT = "bench_metrics"
METRIC_IDS: tuple[str, ...] = (
    "insertion_deletion",
    "insertion_deletion_further",
    "ad_ai",
    "monotonicity",
    "max_sensitivity",
    "avg_sensitivity",
    "gomez_single_step",
    "gomez_deletion",
    "gomez_insertion",
)
NR_SAMPLES = 10
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
"""mean/std under which salbench's fillings equal the package's (it fills the tensor it is given)."""


def study_causal_curves(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """The study's deletion/insertion loop, re-implemented (RISE authors' ``CausalMetric.single_run``).

    Per image and game, ``n_steps + 1`` single-image model calls; after each call the next ``step``
    pixels in decreasing saliency are copied from the finish image into the start image (deletion: the
    image towards zeros in normalised space; insertion: the blurred image towards the image); the target
    probability is read back to the host after every call, as the reference code writes it into a numpy
    array. Ties in the pixel order are broken by raster index here (the reference code's numpy order is
    unspecified), so the curves equal :func:`recognition_scores`'.

    Args:
        model: classifier returning logits.
        images: (N,C,H,W) normalised images.
        maps: (N,H,W) saliency maps.
        targets: (N,) class indices.
        step: pixels changed per step.

    Returns:
        ``(deletion, insertion)`` curves, each (N, n_steps + 1) float64.
    """
    c, h, w = images.shape[1:]
    steps = n_steps(h, w, step)
    deletion, insertion = np.empty((len(images), steps + 1)), np.empty((len(images), steps + 1))
    for i, (x, t) in enumerate(zip(images, targets)):
        order = torch.argsort(maps[i].reshape(-1), descending=True, stable=True)
        blurred = gaussian_blur(x[None])[0]
        for start, finish, out in ((x.clone(), torch.zeros_like(x), deletion), (blurred, x, insertion)):
            current, source = start.view(c, h * w), finish.reshape(c, h * w)
            for k in range(steps + 1):
                out[i, k] = float(torch.softmax(model(start[None]), dim=1)[0, int(t)])
                if k < steps:
                    coords = order[k * step : (k + 1) * step]
                    current[:, coords] = source[:, coords]
    return deletion, insertion


class FixedMaps:
    """Stands in for a torchcam CAM extractor: returns fixed maps (N,H,W) for the images it is given."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model = model
        self.maps = maps

    def __call__(self, class_idx: object = None, scores: object = None, normalized: bool = True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def numpy_trapz_alias() -> Iterator[None]:
    """``np.trapz`` (removed in NumPy 2.4, called by saliency-maps-metrics 0.0.26) as ``np.trapezoid``,
    for the duration of the block only."""
    added = not hasattr(np, "trapz")
    if added:
        np.trapz = np.trapezoid
    try:
        yield
    finally:
        if added:
            del np.trapz


def _step(work: Workload) -> int:
    return default_step(work.size, work.size)


def _salbench_insdel(work: Workload, batch: int, further: bool) -> Case:
    """``recognition_scores``; ``further``: the cache already holds the curve ends (an earlier method ran)."""
    state: dict[str, StartCache] = {}
    ctx = work.context

    def score(n: int, maps: torch.Tensor, cache: StartCache) -> dict:
        return recognition_scores(
            work.model,
            work.images[:n],
            maps[:n],
            work.targets[:n],
            mean=ctx.mean,
            std=ctx.std,
            max_batch=batch,
            cache=cache,
            ids=list(range(n)),
        )

    def prepare(n: int) -> None:
        state["cache"] = StartCache()
        if further:
            with torch.inference_mode():
                score(n, work.alt_maps, state["cache"])

    task = "insertion_deletion_further" if further else "insertion_deletion"
    note = "start images cached by an earlier method" if further else "first method: start images evaluated"
    return Case(
        "salbench", task, batch, lambda n: score(n, work.maps, state["cache"]), prepare=prepare, note=note
    )


def _study_insdel(work: Workload) -> Case:
    def run(n: int) -> tuple[np.ndarray, np.ndarray]:
        curves = study_causal_curves(
            work.model, work.images[:n], work.maps[:n], work.targets[:n], _step(work)
        )
        return auc(curves[0]), auc(curves[1])

    return Case("study_loop", "insertion_deletion", 1, run, note="one model call per step per image")


def _torchcam_insdel(work: Workload, batch: int) -> Case:
    def factory() -> Callable[[int], object]:
        from torchcam.metrics import DeletionInsertionMetric

        steps = n_steps(work.size, work.size, _step(work))

        def run(n: int) -> dict:
            extractor = FixedMaps(work.model, work.maps[:n])
            softmax = partial(torch.softmax, dim=-1)
            metric = DeletionInsertionMetric(extractor, softmax, steps=steps, batch_size=batch)
            metric.update(work.images[:n], class_idx=work.targets[:n].tolist())
            return metric.summary()

        return run

    note = "one baseline (zeros) for both curves"
    return Case("torchcam", "insertion_deletion", batch, lazy(factory), note=note)


def _smm_insdel(work: Workload, batch: int) -> Case:
    def factory() -> Callable[[int], object]:
        from saliency_maps_metrics.multi_step_metrics import Deletion, Insertion

        steps = n_steps(work.size, work.size, _step(work))
        kwargs = {"bound_max_step": True, "batch_size": batch, "max_step_nb": steps, "cumulative": True}
        deletion, insertion = Deletion("black", **kwargs), Insertion("blur", **kwargs)
        probs = nn.Sequential(work.model, nn.Softmax(dim=1))

        def run(n: int) -> tuple[dict, dict]:
            x, maps, t = work.images[:n], work.maps[:n, None], work.targets[:n].tolist()
            with numpy_trapz_alias():
                d = deletion(probs, x, maps, class_to_explain_list=t)
                i = insertion(probs, x, maps, class_to_explain_list=t, masking_data=gaussian_blur(x))
            return d, i

        return run

    return Case("saliency_maps_metrics", "insertion_deletion", batch, lazy(factory), note="softmax appended")


def _salbench_ad_ai(work: Workload, batch: int) -> Case:
    ctx = work.context

    def run(n: int) -> tuple[float, float]:
        x, t = work.images[:n], work.targets[:n]
        masked = mask_pixels(x, work.maps[:n], ctx.mean, ctx.std)
        probs = target_probs(work.model, torch.cat([x, masked]), t.repeat(2), max_batch=batch).cpu().numpy()
        base, out = probs[:n], probs[n:]
        return float(drop_terms(base, out).mean()), float(increase_terms(base, out).mean())

    return Case("salbench", "ad_ai", batch, run, note="f(x) and f(x*m); in a run f(x) comes from stage 1")


def _torchcam_ad_ai(work: Workload, batch: int) -> Case:
    def factory() -> Callable[[int], object]:
        from torchcam.metrics import ClassificationMetric

        def run(n: int) -> tuple[float, float]:
            drop = increase = total = 0.0
            for s in range(0, n, batch):
                stop = min(s + batch, n)
                metric = ClassificationMetric(
                    FixedMaps(work.model, work.maps[s:stop]), partial(torch.softmax, dim=-1)
                )
                metric.update(work.images[s:stop], class_idx=work.targets[s:stop].tolist())
                drop, increase, total = drop + metric.drop, increase + metric.increase, total + metric.total
            return drop / total, increase / total

        return run

    return Case("torchcam", "ad_ai", batch, lazy(factory), note="images per call; masks normalised input")


def _salbench_monotonicity(work: Workload, batch: int) -> Case:
    def run(n: int) -> torch.Tensor:
        gen = torch.Generator(device=work.device).manual_seed(work.seed)
        x, m, t = work.images[:n], work.maps[:n], work.targets[:n]
        return monotonicity(work.model, x, m, t, nr_samples=NR_SAMPLES, generator=gen, max_batch=batch)

    return Case("salbench", "monotonicity", batch, run)


def _quantus():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus
    return quantus


def _numpy_inputs(work: Workload, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = work.images[:n].detach().cpu().numpy()
    return x, work.targets[:n].cpu().numpy(), work.maps[:n, None].detach().cpu().numpy()


def _quantus_monotonicity(work: Workload, batch: int) -> Case:
    def factory() -> Callable[[int], object]:
        quantus = _quantus()
        metric = quantus.MonotonicityCorrelation(
            normalise=False,
            nr_samples=NR_SAMPLES,
            features_in_step=default_features_in_step(work.size, work.size),
            perturb_baseline="uniform",
            disable_warnings=True,
        )

        def run(n: int) -> object:
            x, y, a = _numpy_inputs(work, n)
            np.random.seed(work.seed)  # Quantus draws its uniform baseline from numpy's global RNG
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return metric(
                    model=work.model,
                    x_batch=x,
                    y_batch=y,
                    a_batch=a,
                    device=str(work.device),
                    batch_size=batch,
                )

        return run

    return Case("quantus", "monotonicity", batch, lazy(factory), note="images per batch")


def _salbench_sensitivity(work: Workload, batch: int, kind: str) -> Case:
    reduce = max_sensitivity if kind == "max" else avg_sensitivity
    explain_rows = saliency_explainer(work.model)

    def explain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([explain_rows(x[s : s + batch], t[s : s + batch]) for s in range(0, len(x), batch)])

    def run(n: int) -> torch.Tensor:
        gen = torch.Generator(device=work.device).manual_seed(work.seed)
        x, m, t = work.images[:n], work.maps[:n], work.targets[:n]
        return reduce(m, x, t, explain, nr_samples=NR_SAMPLES, lower_bound=0.2, generator=gen)

    return Case("salbench", f"{kind}_sensitivity", batch, run, grad_free=False)


def _quantus_sensitivity(work: Workload, batch: int, kind: str) -> Case:
    def factory() -> Callable[[int], object]:
        quantus = _quantus()
        cls = quantus.MaxSensitivity if kind == "max" else quantus.AvgSensitivity
        metric = cls(
            abs=True,
            normalise=False,
            nr_samples=NR_SAMPLES,
            lower_bound=0.2,
            norm_numerator=quantus.norm_func.fro_norm,
            norm_denominator=quantus.norm_func.fro_norm,
            similarity_func=quantus.similarity_func.difference,
            disable_warnings=True,
        )

        def run(n: int) -> object:
            x, y, a = _numpy_inputs(work, n)
            np.random.seed(work.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return metric(
                    model=work.model,
                    x_batch=x,
                    y_batch=y,
                    a_batch=a,
                    device=str(work.device),
                    explain_func=quantus.explain,
                    explain_func_kwargs={"method": "Saliency"},
                    batch_size=batch,
                )

        return run

    return Case(
        "quantus", f"{kind}_sensitivity", batch, lazy(factory), grad_free=False, note="images per batch"
    )


GOMEZ_GAMES = {"gomez_deletion": ("deletion", "black"), "gomez_insertion": ("insertion", "blur")}


def _salbench_gomez(work: Workload, batch: int, task: str) -> Case:
    mean, std = IDENTITY

    def run(n: int) -> dict:
        x, m, t = work.images[:n], work.maps[:n], work.targets[:n]
        if task == "gomez_single_step":
            return single_step_scores(work.model, x, m, t, mean=mean, std=std, max_batch=batch)
        game, filling = GOMEZ_GAMES[task]
        return curve_scores(
            work.model, x, m, t, mean=mean, std=std, game=game, filling=filling, max_batch=batch
        )  # type: ignore[arg-type]

    return Case("salbench", task, batch, run, note="mean 0 / std 1: the package's fillings")


def _smm_gomez(work: Workload, batch: int, task: str) -> Case:
    def factory() -> Callable[[int], object]:
        from saliency_maps_metrics.multi_step_metrics import Deletion, Insertion
        from saliency_maps_metrics.single_step_metrics import ADD, IIC_AD

        probs = nn.Sequential(work.model, nn.Softmax(dim=1))
        if task == "gomez_single_step":
            metrics = [IIC_AD("black"), ADD("black")]
        else:
            game, filling = GOMEZ_GAMES[task]
            cls = Deletion if game == "deletion" else Insertion
            metrics = [cls(filling, bound_max_step=True, batch_size=batch)]

        def run(n: int) -> list[dict]:
            x, maps, t = work.images[:n], work.maps[:n, None], work.targets[:n].tolist()
            with numpy_trapz_alias():
                return [metric(probs, x, maps, class_to_explain_list=t) for metric in metrics]

        return run

    note = "softmax appended" + (
        "; no batching knob: every image in one pass" if task == "gomez_single_step" else ""
    )
    return Case("saliency_maps_metrics", task, batch, lazy(factory), note=note)


def make_cases(work: Workload, settings: Settings) -> list[Case]:
    """Every (metric, batch size, implementation) case for one model."""
    cases: list[Case] = [_study_insdel(work)]
    for b in settings.batches_for(work.name):
        cases += [
            _salbench_insdel(work, b, further=False),
            _torchcam_insdel(work, b),
            _smm_insdel(work, b),
            _salbench_insdel(work, b, further=True),
            _salbench_ad_ai(work, b),
            _torchcam_ad_ai(work, b),
            _salbench_monotonicity(work, b),
            _quantus_monotonicity(work, b),
        ]
        for kind in ("max", "avg"):
            cases += [_salbench_sensitivity(work, b, kind), _quantus_sensitivity(work, b, kind)]
        for task in ("gomez_single_step", *GOMEZ_GAMES):
            cases += [_salbench_gomez(work, b, task), _smm_gomez(work, b, task)]
    order = {m: i for i, m in enumerate(METRIC_IDS)}
    return sorted(cases, key=lambda c: (order[c.task], c.batch_size > 1, c.batch_size))


build_parser, main = benchmark_script(__doc__, SCRIPT, METRIC_IDS, make_cases)


if __name__ == "__main__":
    sys.exit(main())
