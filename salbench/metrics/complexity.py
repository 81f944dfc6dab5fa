"""Complexity metrics of a saliency map: Sparseness, Complexity, Effective Complexity.

All three read only the map. They reproduce Quantus 0.6 (``quantus.Sparseness``, ``quantus.Complexity``,
``quantus.EffectiveComplexity``) as the study called them: one-channel maps (N,1,H,W), ``abs=True``
(Quantus' default) and ``normalise=False`` (the study's argument). Values are computed in float64.

Quantus' default ``normalise=True`` divides the whole array passed to one call by its largest absolute
value (one maximum over the *batch*, so an image's score depends on its batch mates through the
``1e-7`` shift of Sparseness and the threshold of Effective Complexity). Our ``normalise=True`` divides
each map by its own maximum absolute value; both agree when Quantus is called one image at a time.
"""

from __future__ import annotations

import dataclasses

import torch

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


def _flat(maps: torch.Tensor, abs_values: bool, normalise: bool) -> torch.Tensor:
    """(N,H,W) maps -> (N,H*W) float64, optionally ``|a|`` and per-map division by ``max |a|``."""
    if maps.ndim != 3:
        raise DataError(f"maps: expected shape (N,H,W), got {tuple(maps.shape)}")
    a = maps.detach().reshape(maps.shape[0], -1).to(torch.float64)
    if normalise:
        peak = a.abs().amax(dim=1, keepdim=True)
        # An all-zero map stays as is (Quantus' normalise_by_max does the same).
        a = torch.where(peak > 0, a / torch.where(peak > 0, peak, 1.0), a)
    return a.abs() if abs_values else a


def sparseness(
    maps: torch.Tensor, *, abs_values: bool = True, normalise: bool = False, shift: float = 1e-7
) -> torch.Tensor:
    """Gini index of the attributions (Chalasani et al., "Concise explanations of neural networks
    using adversarial training", ICML 2020, eq. of the Gini index; Hurley & Rickard 2009).

    ``G(a) = sum_i (2 i - n - 1) a_(i) / (n sum_i a_(i))`` with ``a_(1) <= ... <= a_(n)`` the sorted
    values of ``|a| + shift``. As in Quantus' Sparseness, ``shift = 1e-7`` is added to every value
    (after abs/normalisation) so an all-zero map scores 0 instead of 0/0.

    Args:
        maps: (N,H,W) maps.
        abs_values: take ``|a|`` first (Quantus default, the study's call).
        normalise: divide each map by its max ``|a|`` first (the study: False; see module docstring).
        shift: added to every value before sorting.

    Returns:
        (N,) float64 in [0, 1): 0 for a constant map, close to 1 for a single spike.
    """
    a = _flat(maps, abs_values, normalise) + shift
    n = a.shape[1]
    a_sorted = torch.sort(a, dim=1).values
    weights = 2.0 * torch.arange(1, n + 1, dtype=torch.float64, device=a.device) - n - 1
    return (weights * a_sorted).sum(dim=1) / (n * a_sorted.sum(dim=1))


def complexity(maps: torch.Tensor, *, abs_values: bool = True, normalise: bool = False) -> torch.Tensor:
    """Entropy of the fractional contributions (Bhatt et al., "Evaluating and aggregating feature-based
    model explanations", IJCAI 2020, eq. 8).

    ``p_i = a_i / sum_j |a_j|``, ``C(a) = -sum_i p_i ln(p_i + 1e-12)`` (Quantus adds ``1e-12`` inside
    the log so zero entries contribute 0). An all-zero map gives NaN (0/0), as in Quantus.

    Args:
        maps: (N,H,W) maps.
        abs_values: take ``|a|`` first (Quantus default, the study's call); without it negative entries
            make the logarithm, and the score, NaN, exactly as in Quantus.
        normalise: divide each map by its max ``|a|`` first (no effect on the score up to rounding).

    Returns:
        (N,) float64 natural-log entropy in [0, ln(H*W)]: ``ln(H*W)`` for a constant map.
    """
    a = _flat(maps, abs_values, normalise)
    p = a / a.abs().sum(dim=1, keepdim=True)
    return -(p * torch.log(p + 1e-12)).sum(dim=1)


def effective_complexity(
    maps: torch.Tensor, *, eps: float = 1e-5, abs_values: bool = True, normalise: bool = False
) -> torch.Tensor:
    """Number of attributions above a threshold (Nguyen & Martinez, "On quantitative aspects of model
    interpretability", 2020, sec. 4: effective complexity ``#{i : |a_i| > eps}``).

    Args:
        maps: (N,H,W) maps.
        eps: threshold (acml2024 and Quantus default: 1e-5), compared with ``>``.
        abs_values: compare ``|a|`` (Quantus default, the study's call).
        normalise: divide each map by its max ``|a|`` first (the study: False).

    Returns:
        (N,) float64 counts in [0, H*W].
    """
    a = _flat(maps, abs_values, normalise)
    return (a > eps).sum(dim=1).to(torch.float64)


@dataclasses.dataclass(frozen=True)
class ComplexityParams(MetricParams):
    """Parameters of the complexity metrics (defaults: the study's Quantus calls).

    Attributes:
        abs_values: take ``|a|`` first (Quantus ``abs``).
        normalise: divide each map by its own max ``|a|`` first (Quantus ``normalise``, per map).
        eps: Effective Complexity's count threshold.
    """

    abs_values: bool = True
    normalise: bool = False
    eps: float = 1e-5


def _complexity(inputs: MetricInputs, params: ComplexityParams, wanted: frozenset[str]) -> Scores:
    """The maps alone, on the CPU (no model pass)."""
    maps, kw = inputs.maps.cpu(), {"abs_values": params.abs_values, "normalise": params.normalise}
    out = {
        "sparseness": lambda: sparseness(maps, **kw),
        "complexity": lambda: complexity(maps, **kw),
        "effective_complexity": lambda: effective_complexity(maps, eps=params.eps, **kw),
    }
    return {name: to_numpy(fn()) for name, fn in out.items() if name in wanted}


COMPLEXITY = register(
    MetricGroup("complexity", "complexity", ComplexityParams, _complexity, needs_model=False),
    MetricDef(
        "sparseness",
        "complexity",
        True,
        "complexity",
        "Sparseness",
        "Gini index of |a| (Chalasani et al., ICML 2020; Quantus Sparseness); tables show it x100.",
    ),
    MetricDef(
        "complexity",
        "complexity",
        False,
        "complexity",
        "Complexity",
        "Entropy of |a| / sum |a| (Bhatt et al., IJCAI 2020; Quantus Complexity).",
    ),
    MetricDef(
        "effective_complexity",
        "complexity",
        False,
        "complexity",
        "EC",
        "Effective complexity, the count of |a| > eps (Nguyen & Martinez 2020, sec. 4).",
    ),
)
