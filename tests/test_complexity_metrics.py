"""Sparseness, Complexity, Effective Complexity: hand-computed values and agreement with Quantus 0.6."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from salbench.errors import DataError
from salbench.metrics import METRICS, Metric, MetricInputs, compute
from salbench.metrics.complexity import (
    COMPLEXITY,
    ComplexityParams,
    complexity,
    effective_complexity,
    sparseness,
)


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float64)


def test_gini_hand_computed() -> None:
    # float64 sums of small integers and a dyadic quotient: exact (abs 1e-15 is slack only)
    # sorted 0,0,0,1: sum((2i-n-1) a_i) = 3 * 1 = 3; / (n * sum) = 3 / 4.
    assert sparseness(_t([[0, 0], [0, 1]]), shift=0.0).item() == pytest.approx(0.75, abs=1e-15)
    # sorted 1,2,3,4: weights -3,-1,1,3 -> 10; / (4 * 10) = 0.25.
    assert sparseness(_t([[4, 2], [3, 1]]), shift=0.0).item() == pytest.approx(0.25, abs=1e-15)
    # abs first: |-4| etc. gives the same value; without abs the Gini formula sees negatives.
    assert sparseness(_t([[-4, 2], [3, -1]]), shift=0.0).item() == pytest.approx(0.25, abs=1e-15)
    # the default 1e-7 shift makes the all-zero map score 0 instead of 0/0.
    assert sparseness(torch.zeros(1, 3, 3)).item() == pytest.approx(0.0, abs=1e-12)


def test_entropy_hand_computed() -> None:
    # p = 1/4, 1/4, 0, 1/2 -> H = 2 * (1/4) ln 4 + (1/2) ln 2 = 1.5 ln 2. complexity() works in float64
    # (any input dtype): <= 16 terms p ln(p + 1e-12), ~1e-15 with the 1e-12 shift (~1e-11 / 16 terms)
    assert complexity(_t([[1, 1], [0, 2]])).item() == pytest.approx(1.5 * math.log(2), abs=1e-10)
    assert complexity(_t([[-1, 1], [0, -2]])).item() == pytest.approx(1.5 * math.log(2), abs=1e-10)
    assert complexity(torch.ones(1, 4, 4)).item() == pytest.approx(math.log(16), abs=1e-10)
    assert math.isnan(complexity(torch.zeros(1, 2, 2)).item())


def test_effective_complexity_hand_computed() -> None:
    maps = _t([[0.0, 1e-6], [2e-5, -3.0]])
    assert effective_complexity(maps).item() == 2.0
    assert effective_complexity(maps, abs_values=False).item() == 1.0
    assert effective_complexity(maps, eps=1e-7).item() == 3.0
    # per-map normalisation divides by max |a| = 3: 2e-5 / 3 < 1e-5 drops out.
    assert effective_complexity(maps, normalise=True).item() == 1.0


def test_fake_cam_values() -> None:
    """All-ones map with the top-left pixel 0 (the study's Fake-CAM) at 224 x 224 (Table 3: EC 50175)."""
    fake = torch.ones(1, 224, 224)
    fake[0, 0, 0] = 0.0
    n = 224 * 224
    assert effective_complexity(fake).item() == n - 1
    assert complexity(fake).item() == pytest.approx(math.log(n), abs=1e-3)  # coarse: log(n / (n-1)) = 2e-5
    # 1e-12 inside the log shifts each of the n-1 terms by ~ p * 1e-12 / p: total ~5e-8.
    assert complexity(fake).item() == pytest.approx(math.log(n - 1), abs=1e-6)
    assert sparseness(fake).item() == pytest.approx(0.0, abs=1e-4)  # one zero among n: Gini ~ 1 / n = 2e-5


@pytest.mark.numeric
def test_batched_equals_per_image_loop() -> None:
    """float64 arithmetic on (N, 63) rows: a batched and a one-row reduction may sum in another order,
    ~63 * 2**-53 relative on values <= ~5: < 1e-13, hence 1e-12."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 9, 7, generator=gen) - 0.3
    maps[2] = 0.0
    for fn in (sparseness, complexity, effective_complexity):
        batched = fn(maps, normalise=True)
        looped = torch.cat([fn(maps[i : i + 1], normalise=True) for i in range(6)])
        torch.testing.assert_close(batched, looped, rtol=0, atol=1e-12, equal_nan=True)


def test_bad_shape_is_a_data_error() -> None:
    with pytest.raises(DataError, match="maps"):
        sparseness(torch.zeros(2, 1, 3, 3))


def _quantus():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus
    return quantus


@pytest.mark.numeric
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_agreement_with_quantus_study_call(dtype: type) -> None:
    """The study's call: one-channel maps (N,1,H,W) vs 3-channel inputs, ``normalise=False``, abs default.

    Tolerances, relative (Gini ~0.58, entropy ~4.2, counts exact): float64 maps, sums of 120 terms in
    both: ~1e-14, so 1e-12. float32 maps: we compute in float64, Quantus in float32 (its Gini numerator
    is promoted to float64 by the int64 ranks). Each of its two 120-term float32 sums (numpy: 8 partial
    sums of 15 terms, then combined; the SIMD width may change that split) costs <= 18 roundings of
    2**-24 relative to the sum of |terms| (nonnegative here), the shift/division/log/product ~4 more:
    <= 40 * 2**-24 = 2.4e-6 relative."""
    quantus = _quantus()
    rng = np.random.default_rng(0)
    n, h, w = 5, 12, 10
    x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    y = np.zeros(n, dtype=np.int64)
    a = (rng.random((n, 1, h, w)) - 0.2).astype(dtype)
    a[:, :, :3] = 0.0  # exact zeros (EC threshold, entropy 0 log 0)
    a[1, 0, 5, 5] = 3e-6  # below the EC threshold
    ours = torch.from_numpy(a[:, 0].astype(np.float64))
    cases = [
        (quantus.Sparseness, sparseness),
        (quantus.Complexity, complexity),
        (quantus.EffectiveComplexity, effective_complexity),
    ]
    for cls, fn in cases:
        metric = cls(normalise=False, disable_warnings=True)
        expected = np.asarray(metric(model=None, x_batch=x, y_batch=y, a_batch=a.copy()), dtype=np.float64)
        rtol = 1e-12 if dtype == np.float64 else 40 * 2**-24
        np.testing.assert_allclose(fn(ours).numpy(), expected, rtol=rtol, atol=0, err_msg=cls.__name__)


@pytest.mark.numeric
def test_agreement_with_quantus_default_normalisation_per_image() -> None:
    """Quantus' default ``normalise=True`` (max-abs over the array passed) equals ours per map when
    Quantus is called one image at a time. float64 throughout, sums of 64 terms (~1e-14 relative on
    values <= 1, counts exact; no map value within 1e-9 of the 1e-5 threshold): atol 1e-9."""
    quantus = _quantus()
    rng = np.random.default_rng(1)
    a = rng.random((3, 1, 8, 8)) * np.array([1e-3, 1.0, 50.0]).reshape(3, 1, 1, 1)
    a[:, :, :2] = 2e-4  # below 1e-5 only after normalisation for the large-scale maps
    x = np.zeros((3, 3, 8, 8), dtype=np.float32)
    y = np.zeros(3, dtype=np.int64)
    for cls, fn in [(quantus.Sparseness, sparseness), (quantus.EffectiveComplexity, effective_complexity)]:
        metric = cls(disable_warnings=True)
        expected = [
            metric(model=None, x_batch=x[i : i + 1], y_batch=y[i : i + 1], a_batch=a[i : i + 1].copy())[0]
            for i in range(3)
        ]
        got = fn(torch.from_numpy(a[:, 0]), normalise=True).numpy()
        np.testing.assert_allclose(got, np.asarray(expected, dtype=np.float64), rtol=0, atol=1e-9)


def test_declarations_group_and_summary() -> None:
    names = ("sparseness", "complexity", "effective_complexity")
    assert COMPLEXITY.metrics == names and not COMPLEXITY.needs_model
    assert [METRICS.get(n).higher_is_better for n in names] == [True, False, False]
    assert {METRICS.get(n).category for n in names} == {"complexity"}
    maps = torch.stack([torch.ones(4, 4), torch.zeros(4, 4)])
    metric = Metric("complexity")
    assert metric.params == ComplexityParams(abs_values=True, normalise=False, eps=1e-5)
    scores = compute(COMPLEXITY, MetricInputs(maps=maps), metric.params)
    assert set(scores) == set(names)
    metric.update(scores["complexity"])
    summary = metric.summary()
    assert summary.value == pytest.approx(math.log(16))
    assert (summary.n_images, summary.n_nan) == (1, 1)
    ec = compute(COMPLEXITY, MetricInputs(maps=maps), ComplexityParams(eps=0.5), ["effective_complexity"])
    assert list(ec) == ["effective_complexity"]
    np.testing.assert_array_equal(ec["effective_complexity"], [16.0, 0.0])
