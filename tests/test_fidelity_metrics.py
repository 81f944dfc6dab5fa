"""Monotonicity and Completeness: analytic models, grouping, and agreement with Quantus 0.6.

Comparisons with Quantus run a float64 copy of the model on both sides (:class:`Float64Model`; Quantus
casts its inputs to float32 tensors, whose values are exactly ours), so that no probability moves by
more than ~1e-16 relative between the two batch layouts and the Spearman ranks cannot flip."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from salbench.errors import ConfigError, DataError
from salbench.methods.base import MethodContext
from salbench.metrics import METRICS, Metric, MetricInputs, compute
from salbench.metrics.fidelity import (
    COMPLETENESS,
    MONOTONICITY,
    MonotonicityParams,
    completeness,
    default_features_in_step,
    group_members,
    monotonicity,
    monotonicity_groups,
    uniform_baseline,
)
from salbench.metrics.perturbation import black_images
from tests._tolerance import Float64Model, double

S = 10  # the study's nr_samples


class TinyCNN(nn.Module):
    """Random tiny classifier (5 classes) whose outputs react to every input channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return 3.0 * self.fc(nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))


class Linear2(nn.Module):
    """Logits ``[sum(w * x) + b, 0]``: a replaced group lowers logit 0 by a known amount."""

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x * self.w).flatten(1).sum(1) + self.b
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


def _data(n: int, size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, size, size)).astype(np.float32)
    y = np.arange(n) % 5
    a = rng.random((n, 1, size, size)).astype(np.float32)
    return x, y, a


def _replay(n_groups: int, n: int, seed: int):
    """Quantus 0.6 draws ``np.random.uniform(0, 1, size=N)`` per group (outer) and sample (inner) and
    writes them into its float32 input array: the draws rounded to float32 (kept as float64 values, so
    that float64 inputs receive exactly Quantus' values)."""
    np.random.seed(seed)
    u = torch.from_numpy(np.random.uniform(0.0, 1.0, size=(n_groups, S, n))).float().double()
    return lambda shape, generator: u.view(n_groups, S, n, 1)


def _quantus_monotonicity(model, x, y, a, step, seed, similarity=None, stable_argsort=False):
    """Quantus 0.6 MonotonicityCorrelation with the study's arguments (0.6's batched uniform baseline).

    ``stable_argsort`` swaps the module's numpy for a shim whose ``argsort`` is stable, the tie rule
    we document; numpy's default argsort orders ties in an unspecified way.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus
        import quantus.metrics.faithfulness.monotonicity_correlation as mc

        kwargs = {"similarity_func": similarity} if similarity is not None else {}
        metric = quantus.MonotonicityCorrelation(
            normalise=False,
            nr_samples=S,
            features_in_step=step,
            perturb_baseline="uniform",
            disable_warnings=True,
            **kwargs,
        )
        original = mc.np
        if stable_argsort:
            shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
            shim.argsort = lambda arr, axis=-1: np.argsort(arr, axis=axis, kind="stable")
            mc.np = shim
        try:
            np.random.seed(seed)
            out = metric(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu", batch_size=64)
        finally:
            mc.np = original
    return np.asarray(out, dtype=np.float64)


def _ours(model, x, y, a, **kwargs) -> np.ndarray:
    t = torch.from_numpy
    return monotonicity(model, t(x), t(a[:, 0]), t(y), nr_samples=S, **kwargs).numpy()


def test_default_features_in_step_matches_study() -> None:
    assert default_features_in_step(224, 224) == 224 * 32
    assert default_features_in_step(112, 112) == 1792
    assert default_features_in_step(21, 21) == 63  # 3*441/63 = 21 groups, like 224x224
    # 32x32 RGB: 1024*32/224 = 146.3 does not divide 3,072 entries (Quantus refuses it); the nearest
    # divisor is 128 (24 groups); 28x28 grey: 112 divides 784 (7 groups); pixels at 224: 7 groups
    assert default_features_in_step(32, 32) == 128 and 3 * 32 * 32 % 128 == 0
    assert default_features_in_step(28, 28, channels=1) == 112
    assert default_features_in_step(224, 224, grouping="pixels") == 7168


def test_groups_follow_quantus_entry_order() -> None:
    """Map broadcast to 3 channels, flattened channel-first, stable ascending sort, groups of 4 entries."""
    maps = torch.tensor([[[0.3, 0.1], [0.2, 0.4]]])
    # entry c*4+p; ascending: p1(c0,c1,c2)=1,5,9, p2=2,6,10, p0=0,4,8, p3=3,7,11
    expected = torch.empty(12, dtype=torch.long)
    for g, entries in enumerate([[1, 5, 9, 2], [6, 10, 0, 4], [8, 3, 7, 11]]):
        expected[entries] = g
    torch.testing.assert_close(monotonicity_groups(maps, 3, 4), expected.view(1, 12))


def test_pixel_groups_of_quantus_05() -> None:
    """Quantus 0.5 (the study's pinned version) sorts pixels and gives all channels the pixel's group."""
    maps = torch.tensor([[[0.3, 0.1], [0.2, 0.4]]])
    # ascending pixels: p1, p2 | p0, p3 with 2 pixels per group.
    per_pixel = torch.tensor([1, 0, 0, 1])
    got = monotonicity_groups(maps, 3, 2, grouping="pixels")
    torch.testing.assert_close(got, per_pixel.repeat(3).view(1, 12))
    with pytest.raises(ConfigError, match="grouping"):
        monotonicity_groups(maps, 3, 2, grouping="channels")


def test_group_members_list_each_groups_entries() -> None:
    """The entry lists the batched program scatters into are the groups, last group padded."""
    maps = torch.tensor([[[0.3, 0.1], [0.2, 0.4]]])
    members = group_members(maps, 3, 5)  # 12 entries -> groups of 5, 5, 2 (+3 padding)
    assert members.tolist() == [[[1, 5, 9, 2, 6], [10, 0, 4, 8, 3], [7, 11, 11, 11, 11]]]
    pixels = group_members(maps, 3, 2, grouping="pixels")  # pixels p1, p2 | p0, p3, every channel
    assert pixels.tolist() == [[[1, 5, 9, 2, 6, 10], [0, 4, 8, 3, 7, 11]]]
    torch.manual_seed(0)
    rand = torch.rand(2, 5, 7)
    groups = monotonicity_groups(rand, 3, 8)
    members = group_members(rand, 3, 8)
    for i in range(2):
        for g in range(members.shape[1]):
            assert set(members[i, g].tolist()) == set(torch.nonzero(groups[i] == g).flatten().tolist())


def test_exact_on_linear_model() -> None:
    """Replacing a group by 0 lowers logit 0 by w . x over the group, so a map ordered like w gives
    Spearman exactly 1 and a map ordered against it exactly -1 (ranks: the group drops differ by
    ~1e-2, far above float32 noise; the correlation of identical ranks is 1 up to float64 rounding)."""
    size = 6
    w = torch.linspace(0.01, 0.2, size * size).view(1, 1, size, size).expand(1, 3, size, size).contiguous()
    model = Linear2(w, b=-1.0).eval()
    x = torch.ones(2, 3, size, size)
    t = torch.zeros(2, dtype=torch.long)
    maps = torch.stack([w[0, 0], w[0, 0].max() - w[0, 0]])
    zero = lambda shape, generator: torch.zeros(shape, dtype=torch.float64)  # noqa: E731
    out = monotonicity(model, x, maps, t, features_in_step=6, nr_samples=2, baseline=zero)
    np.testing.assert_allclose(out.numpy(), [1.0, -1.0], atol=1e-12)
    by_pixel = monotonicity(
        model, x, maps, t, features_in_step=4, nr_samples=3, grouping="pixels", baseline=zero
    )
    np.testing.assert_allclose(by_pixel.numpy(), [1.0, -1.0], atol=1e-12)
    # with a single input channel both groupings are the same computation.
    gray = Linear2(w[:, :1].contiguous(), b=-1.0).eval()
    fill = torch.rand(6, 2, 2, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"features_in_step": 6, "nr_samples": 2, "baseline": lambda shape, g: fill}
    torch.testing.assert_close(
        monotonicity(gray, x[:, :1], maps, t, grouping="pixels", **kw),
        monotonicity(gray, x[:, :1], maps, t, grouping="entries", **kw),
    )


@pytest.mark.numeric
def test_agreement_with_quantus_exact_without_ties_at_boundaries() -> None:
    """21x21 input, default step 63 (a multiple of 3): a pixel's 3 tied channel entries never straddle
    a group boundary, so numpy's tie order cannot matter. Replayed noise, float64 model on the same
    input values -> identical ranks, Spearman equal up to float64 rounding: 1e-12."""
    model = Float64Model(_model())
    x, y, a = _data(4, 21)
    expected = _quantus_monotonicity(model, x, y, a, 63, seed=7)
    ours = _ours(model, x.astype(np.float64), y, a, baseline=_replay(21, 4, seed=7))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    assert np.ptp(ours) > 0.05  # not a degenerate constant


@pytest.mark.numeric
@pytest.mark.parametrize("kind", ["spearman", "pearson"])
def test_agreement_with_quantus_with_stable_tie_order(kind: str) -> None:
    """14x14 input, step 28 (default): tied channel entries straddle boundaries. With Quantus' argsort
    made stable (our documented tie rule), its noise replayed and a float64 model on the same input
    values, agreement is exact up to float64 rounding. Quantus gets float64 attributions: its group
    sums are then float64 too (float32 sums of 28 values would move Pearson by ~1e-7). 1e-12."""
    model = Float64Model(_model())
    x, y, a = _data(4, 14, seed=2)
    similarity = None
    if kind == "pearson":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import quantus
        similarity = quantus.similarity_func.correlation_pearson
    a = a.astype(np.float64)
    expected = _quantus_monotonicity(model, x, y, a, 28, seed=3, similarity=similarity, stable_argsort=True)
    ours = _ours(model, x.astype(np.float64), y, a, correlation=kind, baseline=_replay(21, 4, seed=3))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_study_literal_perturb_func_fails_in_quantus_06() -> None:
    """The study (Quantus 0.5.3) passed ``perturb_func=baseline_replacement_by_indices``; in 0.6 that
    per-instance function lacks ``indexed_axes`` and raises, so 0.6's batched default is the equivalent."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus

        metric = quantus.MonotonicityCorrelation(
            normalise=False,
            nr_samples=2,
            features_in_step=28,
            perturb_baseline="uniform",
            perturb_func=quantus.perturb_func.baseline_replacement_by_indices,
            disable_warnings=True,
        )
        x, y, a = _data(1, 14)
        with pytest.raises(TypeError, match="indexed_axes"):
            metric(model=_model(), x_batch=x, y_batch=y, a_batch=a, device="cpu")


@pytest.mark.numeric
def test_batched_equals_per_image_and_chunking() -> None:
    """float64 model and images: chunks of 7 rows vs whole images move probabilities by ~1e-16
    relative, so the Spearman ranks are the same and the scores equal to 1e-12."""
    model = double(_model())
    x, y, a = _data(3, 14, seed=4)
    x = x.astype(np.float64)
    n_groups = 21
    fill = torch.rand(n_groups, S, 3, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = _ours(model, x, y, a, baseline=lambda shape, g: fill, max_batch=7)
    for i in range(3):
        one = _ours(
            model,
            x[i : i + 1],
            y[i : i + 1],
            a[i : i + 1],
            baseline=lambda shape, g, i=i: fill[:, :, i : i + 1],
        )
        np.testing.assert_allclose(batched[i : i + 1], one, rtol=0, atol=1e-12)


def test_default_noise_is_seeded_and_in_range() -> None:
    draw = uniform_baseline()
    v1 = draw((21, S, 4, 3), torch.Generator().manual_seed(5))
    v2 = draw((21, S, 4, 3), torch.Generator().manual_seed(5))
    assert v1.shape == (21, S, 4, 1)  # one value per image, group and sample (Quantus 0.6)
    torch.testing.assert_close(v1, v2)
    assert float(v1.min()) >= 0.0 and float(v1.max()) < 1.0
    assert uniform_baseline(per_channel=True)((2, 2, 2, 3), None).shape == (2, 2, 2, 3)  # Quantus 0.5
    shifted = uniform_baseline(-2.0, -1.0)((50, 1, 1, 1), torch.Generator().manual_seed(1))
    assert float(shifted.min()) >= -2.0 and float(shifted.max()) < -1.0
    model = _model()
    x, y, a = _data(2, 14)
    r1 = _ours(model, x, y, a, generator=torch.Generator().manual_seed(9))
    r2 = _ours(model, x, y, a, generator=torch.Generator().manual_seed(9))
    np.testing.assert_array_equal(r1, r2)
    assert np.all(np.abs(r1) <= 1.0)


def test_constant_map_gives_nan_and_bad_shapes_raise() -> None:
    model = _model()
    x, y, _ = _data(1, 14)
    flat = np.ones((1, 1, 14, 14), dtype=np.float32)
    # 588 entries / 28 per group: every group sums to 28 -> constant attributions -> NaN (as scipy).
    assert np.isnan(_ours(model, x, y, flat, generator=torch.Generator().manual_seed(0))[0])
    with pytest.raises(DataError, match="maps"):
        monotonicity(model, torch.from_numpy(x), torch.zeros(1, 13, 14), torch.zeros(1, dtype=torch.long))


@pytest.mark.numeric
def test_completeness_exact_on_linear_model() -> None:
    """For logit ``w . x + b`` the map ``sum_c (x - x') w`` is complete: gap 0, holds. float64 model and
    images: sums of 75 products of size <= ~5 agree to ~1e-13 whatever their order, hence 1e-12."""
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(1, 3, 5, 5, generator=gen, dtype=torch.float64)
    model = Linear2(w, b=0.5).eval()
    ctx = MethodContext()
    x = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64)
    base = black_images(x, ctx.mean, ctx.std)
    torch.testing.assert_close(ctx.denormalize(base), torch.zeros_like(x), atol=1e-12, rtol=0)
    t = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        complete = ((x - base) * w).sum(1)
    gap, holds = completeness(model, x, complete, t, base)
    assert float(gap.max()) < 1e-12 and bool(holds.all())
    delta = ((x - base) * w).flatten(1).sum(1).double()
    gap0, holds0 = completeness(model, x, torch.zeros(2, 5, 5), t, base)
    torch.testing.assert_close(gap0, delta.abs(), atol=1e-12, rtol=0)
    assert not bool(holds0.any())
    # probability output: gap = |0 - (sigmoid(z) - sigmoid(z'))| for logits [z, 0].
    z = (x * w).flatten(1).sum(1).double() + 0.5
    z0 = (base * w).flatten(1).sum(1).double() + 0.5
    gp, _ = completeness(model, x, torch.zeros(2, 5, 5), t, base, output="probability")
    torch.testing.assert_close(gp, (torch.sigmoid(z) - torch.sigmoid(z0)).abs(), atol=1e-12, rtol=0)
    # the group's default baseline is that black image: the same numbers, holds as 0/1 values
    inputs = MetricInputs(maps=complete, images=x, targets=t, model=model)
    scores = compute(COMPLETENESS, inputs, COMPLETENESS.params_cls())
    np.testing.assert_array_equal(scores["completeness_gap"], gap.numpy())
    np.testing.assert_array_equal(scores["completeness_holds"], [1.0, 1.0])


def test_declarations_and_groups() -> None:
    assert METRICS.get("completeness") is METRICS.get("completeness_gap")  # the earlier id still works
    assert COMPLETENESS.metrics == ("completeness_gap", "completeness_holds")
    assert (
        METRICS.get("monotonicity").higher_is_better and not METRICS.get("completeness_gap").higher_is_better
    )
    assert METRICS.get("monotonicity").category == METRICS.get("completeness_gap").category == "fidelity"
    model = _model()
    x, y, a = _data(2, 14)
    metric = Metric("monotonicity", MonotonicityParams(correlation="pearson"))
    inputs = MetricInputs(
        maps=torch.from_numpy(a[:, 0]),
        images=torch.from_numpy(x),
        targets=torch.from_numpy(y),
        model=model,
        generator=lambda key: torch.Generator().manual_seed(0),
    )
    values = compute(MONOTONICITY, inputs, metric.params)["monotonicity"]
    expected = monotonicity(
        model,
        inputs.images,
        inputs.maps,
        inputs.targets,
        correlation="pearson",
        generator=torch.Generator().manual_seed(0),
    ).numpy()
    np.testing.assert_array_equal(values, expected)
    assert values.shape == (2,) and np.all(np.isfinite(values))
    metric.update(values)
    assert metric.summary().n_images == 2


@pytest.mark.numeric
def test_quantus_tie_order_reproduces_quantus_on_flat_maps(caplog) -> None:
    """Maps quantised to 4 levels (large flat regions, ties straddling every group boundary): with
    ``tie_order="quantus"`` our groups are numpy's argsort of the same float64 array Quantus sorts, so
    the scores equal unmodified Quantus' up to float64 rounding (1e-12; noise replayed, float64 model);
    the stable rule gives other scores on these maps, and every map is flagged as tied."""
    model = Float64Model(_model())
    x, y, a = _data(4, 14, seed=2)
    a = np.round(a.astype(np.float64) * 3) / 3
    expected = _quantus_monotonicity(model, x, y, a, 28, seed=3)
    quantus_rule = _ours(
        model, x.astype(np.float64), y, a, baseline=_replay(21, 4, seed=3), tie_order="quantus"
    )
    stable = _ours(model, x.astype(np.float64), y, a, baseline=_replay(21, 4, seed=3))
    np.testing.assert_allclose(quantus_rule, expected, rtol=0, atol=1e-12)
    assert np.abs(stable - quantus_rule).max() > 1e-3  # the tie rule decides these scores
    from salbench.metrics.ordering import flag_tied, tied_share

    assert tied_share(torch.from_numpy(a[:, 0])).min() == 1.0  # 4 values over 196 pixels: all tied
    smooth = torch.from_numpy(_data(2, 14, seed=5)[2][:, 0])
    assert tied_share(smooth).max() == 0.0
    half = torch.zeros(1, 4, 4)
    half[0, :2] = torch.arange(8.0).view(2, 4)  # 8 distinct values + 8 zeros: 9 of 16 pixels tied
    assert tied_share(half).item() == 9 / 16
    with caplog.at_level("WARNING"):
        assert flag_tied(torch.cat([half, smooth[:1, :4, :4]]), 0.5, "monotonicity").tolist() == [1.0, 0.0]
    assert "1 of 2 maps have more than 50% of their pixels tied" in caplog.text
