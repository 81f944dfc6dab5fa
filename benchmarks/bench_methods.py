"""Speed of salbench's saliency methods against peers that compute the same maps.

Example: ``python benchmarks/bench_methods.py --models embedded`` (``--quick``: smoke run).

One row per model x implementation x method x batch size, with the ``acml2024`` settings:

- ``rise``: salbench ``Rise`` (N=32, s=4, p1=0.1, logits; all images in one call) vs ``study_loop``, the
  study's per-image loop (:func:`study_rise_maps`). Batch size: rows per forward (``max_batch`` /
  ``gpu_batch``).
- ``scorecam``: salbench ``ScoreCAMMethod`` vs ``pytorch_grad_cam`` ``ScoreCAM`` as-is. Batch size: masked
  copies per forward (``batch_size``).
- ``integrated_gradients``: salbench (eval mode, 100 steps, riemann_right) vs captum
  ``IntegratedGradients`` (same rule). Batch size: path points per forward/backward
  (``internal_batch_size``).
- ``lime``: salbench ``Lime`` (40 samples on quickshift superpixels) vs captum ``Lime`` on the same
  superpixels (``feature_mask``), one image per call. Batch size: perturbed images per forward
  (``max_batch`` / ``perturbations_per_eval``).
- ``gradcam``: salbench ``GradCAMMethod`` vs ``pytorch_grad_cam`` ``GradCAM`` as-is. Batch size: images
  per call.
- ``gradient``: salbench ``Gradient`` (smoothgrad deprocessing) vs captum ``Saliency`` (abs, max over
  channels, min-max). Batch size: images per call.

Every timed call includes what the method needs to produce its maps from normalised images (for LIME,
the quickshift segmentation, for both implementations). RISE masks are drawn once by the warm-up call and
reused, as a run reuses them for every image.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/bench_methods.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks.common import (
    Case,
    Settings,
    Workload,
    benchmark_script,
    lazy,
)
from salbench.methods import METHODS, build_params
from salbench.methods.deprocess import get_deprocessor
from salbench.methods.lime import Lime, LimeParams, draw_seeds
from salbench.methods.rise import RiseParams
from salbench.saliency import minmax_per_image

SCRIPT = "bench_methods"
METHOD_IDS: tuple[str, ...] = ("rise", "scorecam", "integrated_gradients", "lime", "gradcam", "gradient")
STUDY_EPS = sys.float_info.epsilon
"""The study's RISE script divides by ``max - min + sys.float_info.epsilon``."""


def study_rise_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor,
    p1: float,
    gpu_batch: int,
) -> torch.Tensor:
    """The study's RISE loop, re-implemented: one image at a time, masks in chunks of ``gpu_batch``.

    As the RISE authors' ``explanations.RISE.forward`` (used by the study with 32 masks): for each image
    ``x`` the N masked copies ``masks * x`` are built at once, pushed through the model in chunks of
    ``gpu_batch`` rows, and the saliency of *every* class is ``p^T M / N / p1`` ((K,N) x (N,H*W)) from the
    raw logits ``p``; the target's map is then min-max normalised with the study's epsilon. The study ran
    it with autograd recording; here the caller decides (the benchmark uses inference mode, which only
    makes this loop faster).

    Args:
        model: classifier returning logits (B,K).
        images: (N,C,H,W) normalised images.
        targets: (N,) class indices.
        masks: (M,H,W) RISE masks in [0, 1].
        p1: probability of keeping a grid cell.
        gpu_batch: masked copies per forward pass.

    Returns:
        (N,H,W) float32 maps in [0, 1].
    """
    n_masks, h, w = masks.shape
    flat = masks.reshape(n_masks, h * w).to(images.dtype)
    out = []
    for x, t in zip(images, targets):
        stack = torch.mul(masks[:, None].to(images.dtype), x[None])  # (M,C,H,W)
        p = torch.cat([model(stack[i : i + gpu_batch]) for i in range(0, n_masks, gpu_batch)])
        sal = torch.matmul(p.T, flat).view(-1, h, w) / n_masks / p1
        m = sal[int(t)]
        out.append((m - m.min()) / (m.max() - m.min() + STUDY_EPS))
    return torch.stack(out).float()


def _salbench(work: Workload, method: str, params: dict, batch: int, per_call: bool = False) -> Case:
    """salbench's registered method; ``per_call``: ``batch`` images per call, else all images at once."""

    def factory() -> Callable[[int], object]:
        cls = METHODS.get(method)
        obj = cls(work.model, work.context, build_params(cls.params_cls, params, method))

        def run(n: int) -> object:
            gen = torch.Generator(device=work.device).manual_seed(work.seed)
            step = batch if per_call else n
            return [
                obj(work.images[s : s + step], work.targets[s : s + step], gen) for s in range(0, n, step)
            ]

        return run

    grad_free = method in ("rise", "scorecam", "lime")
    return Case("salbench", method, batch, lazy(factory), grad_free=grad_free)


def _study_rise(work: Workload, batch: int) -> Case:
    def factory() -> Callable[[int], object]:
        from salbench.methods.rise import generate_masks

        p = RiseParams()
        gen = torch.Generator(device=work.device).manual_seed(work.seed)
        masks = generate_masks(p.n_masks, p.grid_size, p.p1, (work.size, work.size), gen).to(work.device)
        return lambda n: study_rise_maps(work.model, work.images[:n], work.targets[:n], masks, p.p1, batch)

    return Case("study_loop", "rise", batch, lazy(factory), note="per image; all-class p^T M as the study")


def _cam_targets(targets: torch.Tensor) -> list:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(int(t)) for t in targets]


def _grad_cam_library(work: Workload, name: str, batch: int) -> Case:
    """pytorch-grad-cam's ScoreCAM (``batch_size`` masked copies per pass) or GradCAM (``batch`` images per
    call), as the library runs them; its tqdm bars are silenced and its hooks released after each call."""

    def factory() -> Callable[[int], object]:
        import pytorch_grad_cam

        cls = getattr(pytorch_grad_cam, name)
        layer = work.context.target_layer

        def call(x: torch.Tensor, t: torch.Tensor) -> object:
            cam = cls(model=work.model, target_layers=[layer])
            if name == "ScoreCAM":
                cam.batch_size = batch
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    return cam(input_tensor=x, targets=_cam_targets(t))
            finally:
                cam.activations_and_grads.release()

        if name == "ScoreCAM":
            return lambda n: call(work.images[:n], work.targets[:n])
        return lambda n: [
            call(work.images[s : s + batch], work.targets[s : s + batch]) for s in range(0, n, batch)
        ]

    task = "scorecam" if name == "ScoreCAM" else "gradcam"
    note = "library as-is (weight gradients too)" if name == "GradCAM" else "library as-is"
    return Case("pytorch_grad_cam", task, batch, lazy(factory), grad_free=name == "ScoreCAM", note=note)


def _captum_ig(work: Workload, batch: int) -> Case:
    def factory() -> Callable[[int], object]:
        from captum.attr import IntegratedGradients

        ig, deprocess = IntegratedGradients(work.model), get_deprocessor("smoothgrad")

        def run(n: int) -> torch.Tensor:
            attr = ig.attribute(
                work.images[:n],
                target=work.targets[:n],
                n_steps=100,
                method="riemann_right",
                internal_batch_size=batch,
            )
            return deprocess(attr)

        return run

    return Case("captum", "integrated_gradients", batch, lazy(factory), grad_free=False)


def _captum_saliency(work: Workload, batch: int) -> Case:
    def factory() -> Callable[[int], object]:
        from captum.attr import Saliency

        sal, deprocess = Saliency(work.model), get_deprocessor("smoothgrad")

        def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with warnings.catch_warnings():  # captum warns that it sets requires_grad on the input itself
                warnings.simplefilter("ignore", UserWarning)
                return deprocess(sal.attribute(x, target=t, abs=True))

        return lambda n: [
            call(work.images[s : s + batch], work.targets[s : s + batch]) for s in range(0, n, batch)
        ]

    return Case("captum", "gradient", batch, lazy(factory), grad_free=False)


def _captum_lime(work: Workload, batch: int) -> Case:
    """captum ``Lime`` as the study called it (Lasso 0.08, exponential kernel on the euclidean input distance,
    width 1000, zero baseline, logits), on the superpixels salbench's ``Lime`` cuts (same seeds)."""

    def factory() -> Callable[[int], object]:
        from captum._utils.models.linear_model import SkLearnLasso
        from captum.attr import Lime as CaptumLime
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        p = LimeParams()
        segmenter = Lime(work.model, work.context, p)
        lime = CaptumLime(
            work.model,
            interpretable_model=SkLearnLasso(alpha=p.alpha),
            similarity_func=get_exp_kernel_similarity_function("euclidean", kernel_width=p.kernel_width),
        )

        def run(n: int) -> torch.Tensor:
            seeds = draw_seeds(torch.Generator(device=work.device).manual_seed(work.seed), n)
            segments = segmenter.segment(work.images[:n], seeds)
            maps = []
            for i, seg in enumerate(segments):
                attr = lime.attribute(
                    work.images[i : i + 1],
                    target=int(work.targets[i]),
                    feature_mask=torch.as_tensor(seg, device=work.device)[None],
                    n_samples=p.n_samples,
                    perturbations_per_eval=batch,
                )
                maps.append(attr[0].pow(2).sum(0).sqrt())
            return minmax_per_image(torch.stack(maps))

        return run

    return Case("captum", "lime", batch, lazy(factory), note="one image per call; same quickshift segments")


def make_cases(work: Workload, settings: Settings) -> list[Case]:
    """Every (method, batch size, implementation) case for one model."""
    cases: list[Case] = []
    for b in settings.batches_for(work.name):
        cases += [
            _salbench(work, "rise", {"max_batch": b}, b),
            _study_rise(work, b),
            _salbench(work, "scorecam", {"batch_size": b}, b),
            _grad_cam_library(work, "ScoreCAM", b),
            _salbench(work, "integrated_gradients", {"n_steps": 100, "internal_batch_size": b}, b),
            _captum_ig(work, b),
            _salbench(work, "lime", {"max_batch": b}, b),
            _captum_lime(work, b),
            _salbench(work, "gradcam", {}, b, per_call=True),
            _grad_cam_library(work, "GradCAM", b),
            _salbench(work, "gradient", {}, b, per_call=True),
            _captum_saliency(work, b),
        ]
    order = {m: i for i, m in enumerate(METHOD_IDS)}
    return sorted(cases, key=lambda c: (order[c.task], c.batch_size))


build_parser, main = benchmark_script(__doc__, SCRIPT, METHOD_IDS, make_cases)


if __name__ == "__main__":
    sys.exit(main())
