"""Robustness metrics: Max-Sensitivity and Avg-Sensitivity of an explanation to input noise.

Reproduces Quantus 0.6 ``MaxSensitivity`` / ``AvgSensitivity`` with the study's arguments
(``nr_samples=10``, ``lower_bound=0.2``, ``abs=True``, ``normalise=False``, Frobenius norms, difference
as similarity, ``explain_func=quantus.explain`` with ``method="Saliency"``):

* each sample adds independent uniform noise U[-0.2, 0.2) to every entry of the *normalised* input;
* the stored map ``a`` and the re-explanation ``a'`` of the noisy input both go through ``|.|``,
  nothing else (no normalisation);
* score per sample: ``||a - a'||_F / ||a||_F``; Max-Sensitivity takes the maximum over samples,
  Avg-Sensitivity the mean (NaN samples are ignored, as Quantus' ``nanmax`` / ``nanmean``).

Who re-explains is the caller's choice, passed as ``explain``: the acml2024 protocol re-explains with
:func:`saliency_explainer` (what ``quantus.explain(method="Saliency")`` computes) for *every* method,
so the map under test is compared with a plain-gradient map; the reference protocol (Yeh et al.,
Bhatt et al.) passes the method under test itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import nn

from salbench import rng
from salbench.errors import ConfigError, DataError
from salbench.metrics.base import MetricDef, MetricGroup, MetricInputs, MetricParams, Scores, register
from salbench.scoped import frozen_parameters, model_mode

Explain = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``explain(images (M,C,H,W), targets (M,)) -> maps (M,H,W)``."""

Perturb = Callable[[torch.Tensor, int, rng.Generators], torch.Tensor]
"""``perturb(images (N,C,H,W), nr_samples, generator) -> (S,N,C,H,W)`` perturbed inputs."""


def uniform_noise(lower_bound: float = 0.2) -> Perturb:
    """Quantus' ``uniform_noise`` with ``upper_bound=None``: add U[-b, b) noise to every input entry.

    The noise is drawn in the input's dtype, float32 (Quantus draws float64 and the model sees the sum
    rounded to float32): the same distribution at a resolution of 2**-24 of the bound instead of 2**-53,
    far below the float32 rounding of the noisy input itself; the float64 draw was 17% of the metric's
    time on the embedded model.
    """
    if lower_bound <= 0:
        raise ConfigError(f"lower_bound: must be positive, got {lower_bound}")

    def perturb(images: torch.Tensor, nr_samples: int, generator: rng.Generators) -> torch.Tensor:
        gens = rng.per_image(generator, images.shape[0])
        first = rng.first(generator)  # the draws are made on the generators' device
        device = first.device if first is not None else images.device
        noise = torch.empty((nr_samples, *images.shape), dtype=images.dtype, device=device)
        if gens is None:
            noise.uniform_(-lower_bound, lower_bound, generator=first)
        else:  # image n's noise from generator n alone (salbench.rng): independent of the batch
            for n, g in enumerate(gens):
                noise[:, n].uniform_(-lower_bound, lower_bound, generator=g)
        # in place: no further buffer of the noise's size
        return noise.to(images.device).add_(images.unsqueeze(0))

    return perturb


def saliency_explainer(model: nn.Module) -> Explain:
    """What ``quantus.explain(model, x, y, method="Saliency")`` computes (Quantus 0.6 + captum).

    captum's ``Saliency`` with its default ``abs=True`` (absolute gradient of the target *logit*, no
    softmax, Simonyan et al. 2014), then Quantus' default reduction: the **sum** over channels. The
    model runs in eval mode (Quantus calls ``model.eval()``); here the mode is restored afterwards.
    All rows are differentiated in one backward pass (rows are independent in eval mode).

    Returns:
        ``explain(images (M,C,H,W), targets (M,)) -> (M,H,W)`` float32 maps (not normalised).
    """

    def explain(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with model_mode(model, False), frozen_parameters(model), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)
            logits = model(x)
            selected = logits.gather(1, targets.to(logits.device).view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(selected, x)
        return grad.abs().sum(dim=1).float()

    return explain


def sensitivity_ratios(
    maps: torch.Tensor,
    images: torch.Tensor,
    targets: torch.Tensor,
    explain: Explain,
    *,
    nr_samples: int = 10,
    lower_bound: float = 0.2,
    abs_values: bool = True,
    perturb: Perturb | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample sensitivity ``||a - a'_s||_F / ||a||_F`` (Yeh et al., "On the (in)fidelity and
    sensitivity of explanations", NeurIPS 2019, eq. 4, with Bhatt et al. 2020's normalisation by
    ``||a||``).

    The ``S*N`` perturbed inputs are explained in one call, rows ordered sample-major
    (row ``s*N + n``), the layout of Quantus' sample loop.

    Args:
        maps: (N,H,W) maps under test ``a``.
        images: (N,C,H,W) normalised inputs.
        targets: (N,) long.
        explain: re-explains the perturbed inputs (see module docstring).
        nr_samples: S (acml2024: 10).
        lower_bound: noise bound ``b`` of the default :func:`uniform_noise` (acml2024: 0.2).
        abs_values: compare ``|a|`` with ``|a'|`` (Quantus ``abs=True``, the study's call).
        perturb: replaces the default noise (e.g. to replay another library's draws).
        generator: drives the default noise.

    Returns:
        (N,S) float64; NaN for a map with ``||a|| = 0``.
    """
    if maps.ndim != 3 or images.ndim != 4 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise DataError(
            f"maps: expected (N,H,W) matching images {tuple(images.shape)}, got {tuple(maps.shape)}"
        )
    if nr_samples < 1:
        raise ConfigError(f"nr_samples: must be >= 1, got {nr_samples}")
    n = images.shape[0]
    noisy = (perturb or uniform_noise(lower_bound))(images, nr_samples, generator)
    if noisy.shape != (nr_samples, *images.shape):
        raise ConfigError(
            f"perturb: returned shape {tuple(noisy.shape)}, expected {(nr_samples, *images.shape)}"
        )
    explained = explain(noisy.reshape(-1, *images.shape[1:]), targets.repeat(nr_samples))
    a = maps.detach().to(torch.float64).reshape(1, n, -1)
    a_noisy = explained.detach().to(device=a.device, dtype=torch.float64).reshape(nr_samples, n, -1)
    if abs_values:
        a, a_noisy = a.abs(), a_noisy.abs()
    denom = torch.linalg.vector_norm(a, dim=2)
    ratios = torch.linalg.vector_norm(a - a_noisy, dim=2) / denom
    return torch.where(denom > 0, ratios, torch.nan).T.contiguous()


def max_sensitivity(
    maps: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, explain: Explain, **kwargs
) -> torch.Tensor:
    """Max-Sensitivity: max over samples of :func:`sensitivity_ratios` (same keyword arguments). (N,)."""
    ratios = sensitivity_ratios(maps, images, targets, explain, **kwargs)
    return torch.from_numpy(nan_reduce(ratios.cpu().numpy(), np.nanmax))


def avg_sensitivity(
    maps: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, explain: Explain, **kwargs
) -> torch.Tensor:
    """Avg-Sensitivity: mean over samples of :func:`sensitivity_ratios` (same keyword arguments). (N,)."""
    ratios = sensitivity_ratios(maps, images, targets, explain, **kwargs)
    return torch.from_numpy(nan_reduce(ratios.cpu().numpy(), np.nanmean))


def nan_reduce(values: np.ndarray, func: Callable[..., np.ndarray]) -> np.ndarray:
    """Row-wise NaN-ignoring reduction of (N,S); all-NaN rows give NaN without a warning."""
    out = np.full(values.shape[0], np.nan)
    ok = ~np.isnan(values).all(axis=1)
    if ok.any():
        out[ok] = func(values[ok], axis=1)
    return out


@dataclasses.dataclass(frozen=True)
class SensitivityParams(MetricParams):
    """Sensitivity parameters (defaults: acml2024)."""

    nr_samples: int = 10
    lower_bound: float = 0.2
    abs_values: bool = True
    explainer: Literal["gradient", "method"] = "gradient"
    """Who re-explains the noisy inputs: plain gradients (acml2024) or the method under test (reference)."""


def _sensitivity(inputs: MetricInputs, params: SensitivityParams, wanted: frozenset[str]) -> Scores:
    """Max- and Avg-Sensitivity from the same re-explained noisy inputs.

    With the plain-gradient explainer (acml2024) the noisy inputs and their explanations do not depend
    on the map under test: given a ``cache`` and image ``ids``, they are drawn from the method-independent
    key ``shared:sensitivity`` and explained once per batch of images for every method (paired noise).
    """
    explain, key = inputs.explain, "sensitivity"
    if explain is None:
        if params.explainer == "method":
            raise ConfigError("sensitivity: explainer 'method' needs the method under test as explain=")
        explain = saliency_explainer(inputs.model)  # acml2024: quantus.explain(method="Saliency")
        if inputs.cache is not None and inputs.ids is not None and inputs.perturb is None:
            key = "shared:sensitivity"
            ids, targets = tuple(inputs.ids), tuple(inputs.targets.tolist())
            memo = (key, ids, targets, dataclasses.astuple(params))
            plain = explain
            explain = lambda x, t: inputs.cache.shared(memo, lambda: plain(x, t))  # noqa: E731
    ratios = sensitivity_ratios(
        inputs.maps,
        inputs.images,
        inputs.targets,
        explain,
        nr_samples=params.nr_samples,
        lower_bound=params.lower_bound,
        abs_values=params.abs_values,
        perturb=inputs.perturb,
        generator=inputs.generator(key),
    )
    r = ratios.cpu().numpy().astype(np.float64)
    return {"max_sensitivity": nan_reduce(r, np.nanmax), "avg_sensitivity": nan_reduce(r, np.nanmean)}


SENSITIVITY = register(
    MetricGroup(
        "sensitivity",
        "sensitivity",
        SensitivityParams,
        _sensitivity,
        accepts=("explain", "perturb", "generator"),
    ),
    MetricDef(
        "max_sensitivity",
        "sensitivity",
        False,
        "robustness",
        "MS",
        "Max-Sensitivity (Yeh et al., NeurIPS 2019, eq. 4, normalised by ||a|| as Bhatt et al. 2020): the "
        "largest ||a - a'||_F / ||a||_F over noisy copies of the input.",
    ),
    MetricDef(
        "avg_sensitivity",
        "sensitivity",
        False,
        "robustness",
        "AS",
        "Avg-Sensitivity (Bhatt et al., IJCAI 2020): the mean of ||a - a'||_F / ||a||_F over noisy copies.",
    ),
)
