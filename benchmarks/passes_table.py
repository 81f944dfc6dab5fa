"""Model passes per image of every method and metric of the default grid, counted, not estimated.

Example: ``python benchmarks/passes_table.py`` (~20 s on one CPU thread; ``--out``: another CSV path).

One 224x224 image, a randomly initialised ``EmbeddedResNet`` (counts do not depend on weights) and the
``acml2024`` parameters. Each implementation runs once inside :func:`salbench.scoped.count_passes`
(forward rows: input rows through the classifier's forward; backward rows: rows of gradient reaching its
output), through :func:`benchmarks.common.run_case` and the adapters of ``bench_methods.py`` and
``bench_metrics.py``: salbench, the study's code (its RISE and insertion/deletion loops re-implemented;
captum, pytorch-grad-cam and Quantus 0.6 as it called them), torchcam 0.5 and saliency-maps-metrics
0.0.26. Built here (no adapter there): captum's other gradient methods, salbench's IBA and CASME, and
salbench's metric groups as the evaluation stage calls them (:func:`salbench.metrics.compute`). A failing
case gets its error in ``note``. Markdown table on stdout, CSV in ``runs/benchmarks/passes_table.csv``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/passes_table.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks import bench_methods as bm
from benchmarks import bench_metrics as bx
from benchmarks import common as bc
from benchmarks.common import Case, Workload, lazy
from salbench.config import resolve_config
from salbench.methods import METHODS, MethodContext, build_params, method_values
from salbench.methods.spatial import layer_output
from salbench.metrics import MetricInputs, compute
from salbench.models.embedded import EmbeddedResNet
from salbench.models.layers import resolve_target_layer
from salbench.scoped import model_mode
from salbench.stages.costs import kind_params
from salbench.stages.kinds import KINDS

SIZE, BATCH, PROTOCOL = 224, 64, "acml2024"
COLUMNS = ("task", "implementation", "forward_rows", "backward_rows", "passes", "note")
LABELS = dict(
    study_loop="study's loop", captum="captum (study's call)", quantus="Quantus 0.6 (study's call)",
    pytorch_grad_cam="pytorch-grad-cam (study's call)", torchcam="torchcam 0.5",
    saliency_maps_metrics="saliency-maps-metrics 0.0.26",
)  # fmt: skip
CAMS = dict(  # salbench id -> pytorch-grad-cam class
    gradcam="GradCAM", gradcampp="GradCAMPlusPlus", xgradcam="XGradCAM", layercam="LayerCAM",
    eigengradcam="EigenGradCAM", scorecam="ScoreCAM", ablationcam="AblationCAM",
)  # fmt: skip
CAPTUM = {"input_x_gradient": "InputXGradient", "guided_backprop": "GuidedBackprop", "smoothgrad": "Saliency"}
NOTES = {
    "insertion_deletion": "per curve ceil(HW / step) steps + start; step 1792 pixels at 224 (28 steps)",
    "monotonicity": "ceil(3HW / group) groups x 10 samples + f(x); group 7168 entries at 224 (21 groups)",
    "max_sensitivity": "10 noisy copies, each re-explained by a plain gradient",
    "avg_sensitivity": "10 noisy copies, each re-explained by a plain gradient",
    "completeness": "f(x) and f(black image)",
    "ad_ai": "f(x) and f(x * map)",
    "rise": "one masked copy per mask (N = 32)",
    "lime": "one perturbed copy per sample (40)",
    "integrated_gradients": "100 path points",
    "smoothgrad": "50 noisy copies",
    "iba": "10 steps x 10 noise samples; feature statistics fitted once per run (not counted)",
    "casme": "its masker (own encoder + decoder, untrained here) is not the classifier",
}
"""What a count depends on, per task (after a case's own note)."""
STEPS = "step = ceil(HW / 28): 28 steps + start per curve at any H x W"
SCALED = {"insertion_deletion": STEPS, "insertion_deletion_further": STEPS}
SCALED["monotonicity"] = "group size scaled with H x W: 21 groups x 10 samples + f(x) at 112 and 224"
"""salbench's size-scaled parameters: replaces :data:`NOTES` on salbench's rows."""


def noted(case: Case, note: str) -> Case:
    return dataclasses.replace(case, note=note)


def workload(seed: int = 0) -> Workload:
    """Random EmbeddedResNet (batch norm calibrated on 8 crops) and one 224x224 image, target 3."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EmbeddedResNet(num_classes=10)
    context = MethodContext(target_layer=resolve_target_layer(model)[1], num_classes=10)
    images = bc.sample_images(8, SIZE, context, seed)
    bc.calibrate_batch_norm(model, images)
    maps = bc.sample_maps(2, SIZE, seed + 2)
    target, device = torch.tensor([3]), torch.device("cpu")
    return Workload("embedded", model, context, SIZE, images[:1], target, maps[:1], maps[1:], device, seed)


def _captum_gradient(work: Workload, task: str) -> Case:
    """captum InputXGradient, GuidedBackprop or NoiseTunnel(Saliency) (SmoothGrad): the study's calls."""

    def factory():
        import captum.attr as ca

        method = getattr(ca, CAPTUM[task])(work.model)
        cls = METHODS.get("smoothgrad")
        p = build_params(cls.params_cls, method_values("smoothgrad", PROTOCOL), "smoothgrad")

        def run(n: int) -> torch.Tensor:
            x, t = work.images[:n], work.targets[:n]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if task != "smoothgrad":
                    return method.attribute(x, target=t)
                sigma = p.noise_level * float(x.max() - x.min())  # salbench's noise std
                nt = ca.NoiseTunnel(method)
                return nt.attribute(x, target=t, nt_type="smoothgrad", nt_samples=p.n_samples, stdevs=sigma)

        return run

    return Case("captum", task, BATCH, lazy(factory), grad_free=False)


def _salbench_method(work: Workload, method: str) -> Case:
    """A registered method with its acml2024 parameters; IBA fitted and CASME's masker built beforehand."""
    values = method_values(method, PROTOCOL) if method != "casme" else {}
    if method not in ("iba", "casme"):
        return bm._salbench(work, method, values, BATCH)
    cls, kwargs, prepare = METHODS.get(method), {}, None
    if method == "casme":  # untrained masker; built here, outside the counting: its encoder is a copy
        from casme_utils.architecture import build_masker

        kwargs["masker"] = build_masker(copy.deepcopy(work.model), 64, torch.Generator().manual_seed(0))
    obj = cls(work.model, work.context, build_params(cls.params_cls, values, method), **kwargs)
    if method == "iba":  # feature statistics over the run's images, once per run (not counted)
        others = bc.sample_images(8, SIZE, work.context, work.seed + 7)
        prepare = lambda n: obj.fit([others])  # noqa: E731
    run = lambda n: obj(work.images[:n], work.targets[:n], torch.Generator().manual_seed(0))  # noqa: E731
    return Case("salbench", method, BATCH, run, grad_free=False, prepare=prepare)


def _salbench_group(work: Workload, group: str, params: dict) -> Case:
    """A metric group as the evaluation stage calls it (``compute``), acml2024 parameters."""

    def run(n: int) -> object:
        inputs = MetricInputs(
            maps=work.maps[:n], images=work.images[:n], targets=work.targets[:n], model=work.model,
            mean=work.context.mean, std=work.context.std, boxes=[np.array([[40, 40, 180, 180]])] * n,
            correct=torch.ones(n, dtype=torch.bool), generator=lambda key: torch.Generator().manual_seed(0),
        )  # fmt: skip
        return compute(group, inputs, params[group])

    task = "max_sensitivity + avg_sensitivity" if group == "sensitivity" else group
    return Case("salbench", task, BATCH, run, grad_free=group != "sensitivity")


def method_cases(work: Workload) -> list[Case]:
    cases: list[Case] = []
    for method in METHODS.names():
        cases.append(_salbench_method(work, method))
        if method in CAMS:
            cam = bm._grad_cam_library(work, CAMS[method], BATCH)
            cases.append(dataclasses.replace(cam, task=method, grad_free=method == "scorecam"))
        elif method in CAPTUM:
            cases.append(_captum_gradient(work, method))
        peer = {"gradient": bm._captum_saliency, "integrated_gradients": bm._captum_ig}.get(method)
        peer = {"lime": bm._captum_lime, "rise": bm._study_rise}.get(method, peer)
        if peer is not None:
            cases.append(peer(work, BATCH))
    return [noted(c, "") for c in cases]  # the bench scripts' notes are about timing


def metric_cases(work: Workload) -> list[Case]:
    cfg = resolve_config(None, {"run": {"protocol": PROTOCOL}})
    kinds = [KINDS["complexity"], KINDS["localization"]]
    params = {r.group.name: p for k in kinds for r, p in zip(k.runs, kind_params(k, cfg))}
    first = bx._salbench_insdel(work, BATCH, further=False)
    further = bx._salbench_insdel(work, BATCH, further=True)
    ad_ai = bx._salbench_ad_ai(work, BATCH)
    return [
        noted(bx._study_insdel(work), "one model call per step"),
        bx._torchcam_insdel(work, BATCH),
        noted(bx._smm_insdel(work, BATCH), ""),
        noted(first, "with AD/AI/AG; first method of an image: + 3 curve ends (f(x), blurred, all deleted)"),
        noted(further, "with AD/AI/AG; each further method: curve ends from the start cache"),
        noted(bx._torchcam_ad_ai(work, BATCH), ""),
        noted(ad_ai, "standalone; in a run its masked row is in insertion_deletion, f(x) a curve end"),
        noted(bx._quantus_monotonicity(work, BATCH), ""),
        _salbench_group(work, "monotonicity", params),
        noted(bx._quantus_sensitivity(work, BATCH, "max"), ""),
        noted(bx._quantus_sensitivity(work, BATCH, "avg"), ""),
        _salbench_group(work, "sensitivity", params),
        *(_salbench_group(work, g, params) for g in ("completeness", "complexity", "localization")),
    ]


def note_for(case: Case, row: dict, channels: int) -> str:
    """The error of a failed case, the formula of a per-channel count, else what the count depends on."""
    if row["status"] != "ok":
        return str(row["status"])
    if case.task in ("scorecam", "ablationcam"):
        c = int(row["forward_rows_per_image"]) - channels
        return f"{c} + K (K = {channels} target-layer channels here; ResNet50 layer4, K = 2048: {c + 2048})"
    key = "max_sensitivity" if case.task.startswith("max_sensitivity") else case.task
    scaled = SCALED.get(key, "") if case.implementation == "salbench" else ""
    return "; ".join(n for n in (case.note, scaled or NOTES.get(key, "")) if n)


def count_all(work: Workload) -> list[dict]:
    settings = bc.Settings(
        "passes_table", ("embedded",), "cpu", 1, None, None, 1, work.seed, (), Path(), True
    )
    with torch.no_grad():
        channels = int(layer_output(work.model, work.context.target_layer, work.images).shape[1])
    out = []
    with model_mode(work.model, False):
        for case in method_cases(work) + metric_cases(work):
            row = bc.run_case(case, work, settings)
            ok = row["status"] == "ok"
            fwd, bwd = (int(row[f"{k}_rows_per_image"]) if ok else "" for k in ("forward", "backward"))
            label, passes = LABELS.get(case.implementation, case.implementation), fwd + bwd if ok else ""
            note = note_for(case, row, channels)
            out.append(dict(zip(COLUMNS, (case.task, label, fwd, bwd, passes, note))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/benchmarks/passes_table.csv", help="CSV path")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1; 0: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:  # 1 thread: Quantus' small ops otherwise wait at thread barriers (see README)
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = count_all(workload())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print("| " + " | ".join(COLUMNS) + " |\n|---|---|--:|--:|--:|---|")
    print("\n".join("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows))
    print(f"\n{len(rows)} rows in {time.perf_counter() - start:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
