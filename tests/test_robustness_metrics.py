"""Max-/Avg-Sensitivity: hand-computed ratios, the Saliency explainer, agreement with Quantus 0.6."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from salbench.errors import ConfigError, DataError
from salbench.metrics import METRICS, MetricInputs, compute
from salbench.metrics.robustness import (
    SENSITIVITY,
    SensitivityParams,
    avg_sensitivity,
    max_sensitivity,
    saliency_explainer,
    sensitivity_ratios,
    uniform_noise,
)
from tests._tolerance import Float64Model

S = 10  # the study's nr_samples


class TinyCNN(nn.Module):
    """Random tiny classifier with a batch-norm layer (to check eval mode is used and restored)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return 3.0 * self.fc(nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _data(n: int = 4, size: int = 12, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, size, size)).astype(np.float32), np.arange(n) % 5


def _quantus():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus
    return quantus


def test_hand_computed_ratios() -> None:
    """a = ones; the s-th perturbed input is constant s and ``explain`` returns its channel mean, so
    a'_s = s everywhere and the ratio is ``|1 - s|``: max 2, mean 1 over s = 0..3."""
    images = torch.zeros(2, 3, 4, 5)
    maps = torch.ones(2, 4, 5)

    def perturb(x, nr_samples, generator):
        return torch.stack([x + s for s in range(nr_samples)])

    def explain(x, t):
        return x.mean(1)

    targets = torch.zeros(2, dtype=torch.long)
    ratios = sensitivity_ratios(maps, images, targets, explain, nr_samples=4, perturb=perturb)
    np.testing.assert_allclose(ratios.numpy(), [[1.0, 0.0, 1.0, 2.0]] * 2, atol=1e-12)
    kw = {"nr_samples": 4, "perturb": perturb}
    np.testing.assert_allclose(max_sensitivity(maps, images, targets, explain, **kw).numpy(), [2.0, 2.0])
    np.testing.assert_allclose(avg_sensitivity(maps, images, targets, explain, **kw).numpy(), [1.0, 1.0])
    # abs: a = -ones compares |a| = 1 with |a'|; without abs, ||-1 - s|| = 1 + s.
    neg = -maps
    np.testing.assert_allclose(
        sensitivity_ratios(neg, images, targets, explain, nr_samples=4, perturb=perturb).numpy()[0],
        [1, 0, 1, 2],
    )
    no_abs = sensitivity_ratios(
        neg, images, targets, explain, nr_samples=4, perturb=perturb, abs_values=False
    )
    np.testing.assert_allclose(no_abs.numpy()[0], [1, 2, 3, 4])
    # ||a|| = 0: undefined -> NaN (max/mean too).
    zero = torch.zeros(2, 4, 5)
    assert np.isnan(max_sensitivity(zero, images, targets, explain, **kw).numpy()).all()


@pytest.mark.numeric
def test_saliency_explainer_equals_quantus_explain() -> None:
    """``quantus.explain(method="Saliency")`` = captum Saliency (abs) summed over channels. A float64
    model on the same float32 inputs (:class:`Float64Model`): both get the same float64 gradients,
    rounded once to float32 at the float32 input; the 3-channel sums of absolute values are float32
    in torch and numpy (2 roundings each, maybe in another order): <= 4 * 2**-24 relative."""
    quantus = _quantus()
    model = Float64Model(_model())
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = quantus.explain(model, x, y, method="Saliency")
    assert expected.shape == (4, 1, 12, 12)
    model.train()
    got = saliency_explainer(model)(torch.from_numpy(x), torch.from_numpy(y))
    assert model.training and model.inner.bn.training  # restored
    assert all(p.requires_grad for p in model.parameters())
    model.eval()
    np.testing.assert_allclose(got.numpy(), expected[:, 0], rtol=4 * 2**-24, atol=0)


@pytest.mark.numeric
@pytest.mark.parametrize("cls_name", ["MaxSensitivity", "AvgSensitivity"])
def test_agreement_with_quantus_replayed_noise(cls_name: str) -> None:
    """The study's call (abs, no normalisation, fro norms, difference, uniform noise 0.2, 10 samples,
    ``explain_func=quantus.explain`` / ``"Saliency"``) on one-channel maps. Quantus draws
    ``np.random.uniform(-0.2, 0.2, size=(N, C*H*W))`` per sample; replaying it with a float64 model
    (:class:`Float64Model`: no batch-layout noise), the maps agree to 4 * 2**-24 (see above). Quantus
    then works in float32: a - a' (one rounding of |a|, amplified by ||a|| / ||a - a'|| <= 1 / 0.13)
    and two 144-term norms (<= 21 roundings each): <= (8 + 42 + 4) * 2**-24 = 3.2e-6 relative, 1e-5."""
    quantus = _quantus()
    model = Float64Model(_model())
    x, y = _data()
    explain = saliency_explainer(model)
    a = explain(torch.from_numpy(x), torch.from_numpy(y)).numpy()[:, None]  # the clean Saliency map
    a[0] = np.abs(np.random.default_rng(3).standard_normal(a[0].shape)) * a[0].mean()  # a foreign map
    metric = getattr(quantus, cls_name)(
        abs=True,
        normalise=False,
        nr_samples=S,
        lower_bound=0.2,
        norm_numerator=quantus.norm_func.fro_norm,
        norm_denominator=quantus.norm_func.fro_norm,
        similarity_func=quantus.similarity_func.difference,
        disable_warnings=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(11)
        expected = np.asarray(
            metric(
                model=model,
                x_batch=x,
                y_batch=y,
                a_batch=a.copy(),
                device="cpu",
                explain_func=quantus.explain,
                explain_func_kwargs={"method": "Saliency"},
            ),
            dtype=np.float64,
        )
    np.random.seed(11)
    noise = torch.from_numpy(np.random.uniform(-0.2, 0.2, size=(S, *x.shape)))

    def replay(images, nr_samples, generator):
        return (images.double().unsqueeze(0) + noise).float()

    fn = max_sensitivity if cls_name == "MaxSensitivity" else avg_sensitivity
    t = torch.from_numpy
    ours = fn(t(a[:, 0]), t(x), t(y), explain, nr_samples=S, perturb=replay).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=0)
    assert ours[1:].min() > 0.13 and ours[0] > 0.5  # real, differing values (0.13: see the tolerance)


@pytest.mark.numeric
def test_default_noise_bounds_seed_and_batching() -> None:
    images = torch.zeros(3, 3, 8, 8)
    noisy = uniform_noise(0.2)(images, S, torch.Generator().manual_seed(0))
    assert noisy.shape == (S, 3, 3, 8, 8)
    assert float(noisy.abs().max()) <= 0.2 and float(noisy.abs().max()) > 0.19
    assert abs(float(noisy.mean())) < 0.01  # seeded; 5760 draws of sd 0.115: sd of the mean 0.0015
    with pytest.raises(ConfigError, match="lower_bound"):
        uniform_noise(0.0)
    # per-image generators: image n's noise is its generator's alone, whatever the batch around it
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    batch = uniform_noise(0.2)(images, S, gens([7, 8, 9]))
    alone = uniform_noise(0.2)(images[1:2], S, gens([8]))
    assert torch.equal(batch[:, 1:2], alone) and not torch.equal(batch[:, 0], batch[:, 1])
    # float64 model (explained inputs stay float32): batched and per-image gradients are ~1e-16 apart
    # before their float32 rounding; a flipped rounding moves ||a - a'|| by <= 2**-24 |a_i| / ||a - a'||,
    # <= 2**-24 / 0.08 = 7.5e-7 relative: rtol 1e-6
    model = Float64Model(_model())
    x, y = _data(3)
    t = torch.from_numpy
    explain = saliency_explainer(model)
    maps = explain(t(x), t(y))
    fixed = uniform_noise(0.2)(t(x), S, torch.Generator().manual_seed(4))

    def given(images, nr_samples, generator):
        idx = [
            int(np.flatnonzero((x == images[i].numpy()).all(axis=(1, 2, 3)))[0]) for i in range(len(images))
        ]
        return fixed[:, idx]

    batched = sensitivity_ratios(maps, t(x), t(y), explain, nr_samples=S, perturb=given)
    assert float(batched.min()) > 0.08
    for i in range(3):
        one = sensitivity_ratios(
            maps[i : i + 1], t(x[i : i + 1]), t(y[i : i + 1]), explain, nr_samples=S, perturb=given
        )
        torch.testing.assert_close(batched[i : i + 1], one, rtol=1e-6, atol=0)
    g1 = max_sensitivity(maps, t(x), t(y), explain, generator=torch.Generator().manual_seed(2))
    g2 = max_sensitivity(maps, t(x), t(y), explain, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(g1, g2)


def test_bad_inputs_raise() -> None:
    images = torch.zeros(2, 3, 4, 4)
    with pytest.raises(DataError, match="maps"):
        sensitivity_ratios(
            torch.zeros(2, 4, 5), images, torch.zeros(2, dtype=torch.long), lambda x, t: x.mean(1)
        )
    with pytest.raises(ConfigError, match="perturb"):
        sensitivity_ratios(
            torch.ones(2, 4, 4),
            images,
            torch.zeros(2, dtype=torch.long),
            lambda x, t: x.mean(1),
            perturb=lambda x, s, g: x.unsqueeze(0),
        )


def test_declarations_and_group() -> None:
    assert SENSITIVITY.metrics == ("max_sensitivity", "avg_sensitivity")
    for name in SENSITIVITY.metrics:
        assert not METRICS.get(name).higher_is_better and METRICS.get(name).category == "robustness"
    images = torch.zeros(2, 3, 4, 5)

    def perturb(x, nr_samples, generator):
        return torch.stack([x + s for s in range(nr_samples)])

    inputs = MetricInputs(
        maps=torch.ones(2, 4, 5),
        images=images,
        targets=torch.zeros(2, dtype=torch.long),
        model=nn.Identity(),
        explain=lambda x, t: x.mean(1),
        perturb=perturb,
    )
    scores = compute(SENSITIVITY, inputs, SensitivityParams(nr_samples=4))  # one re-explanation for both
    np.testing.assert_allclose(scores["max_sensitivity"], [2.0, 2.0])
    np.testing.assert_allclose(scores["avg_sensitivity"], [1.0, 1.0])
    with pytest.raises(ConfigError, match="explainer 'method' needs the method under test"):
        compute(SENSITIVITY, dataclasses.replace(inputs, explain=None), SensitivityParams(explainer="method"))


def test_plain_gradient_reexplanations_are_made_once_for_every_method_of_a_batch() -> None:
    """acml2024 re-explains the noisy inputs with plain gradients, which do not depend on the map under
    test: with a cache and image ids, the noise comes from the method-independent key
    ``shared:sensitivity`` and the S noisy copies are explained once for every method; each method's
    scores equal those computed without the cache from the same noise (exactly: the same tensors)."""
    from salbench.metrics.recognition import StartCache
    from salbench.scoped import count_passes

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    images = torch.randn(2, 3, 6, 6)
    targets = torch.tensor([0, 2])
    keys = []

    def generator(key):
        keys.append(key)
        return torch.Generator().manual_seed(5)

    cache, params = StartCache(), SensitivityParams(nr_samples=3)
    maps = {m: torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(i)) for i, m in enumerate("abc")}
    with count_passes(model) as passes:
        shared = {
            m: compute(
                SENSITIVITY,
                MetricInputs(
                    maps=a,
                    images=images,
                    targets=targets,
                    model=model,
                    ids=["x", "y"],
                    cache=cache,
                    generator=generator,
                ),
                params,
            )
            for m, a in maps.items()
        }
    assert (passes.forward_rows, passes.backward_rows) == (6, 6)  # 3 noisy copies of 2 images, once
    assert set(keys) == {"shared:sensitivity"}
    for m, a in maps.items():
        alone = compute(
            SENSITIVITY,
            MetricInputs(
                maps=a,
                images=images,
                targets=targets,
                model=model,
                generator=lambda key: torch.Generator().manual_seed(5),
            ),
            params,
        )
        for name in SENSITIVITY.metrics:
            np.testing.assert_array_equal(shared[m][name], alone[name])
