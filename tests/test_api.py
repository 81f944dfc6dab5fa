"""Library API: build_metric equals the metrics' own functions, per-sample == batch, streaming with
skipped/NaN counting, JSON/YAML dumps, config errors by name, sanity checks through salbench.stages.sanity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from salbench.api import ReInferenceMetric, ReTrainingMetric, build_metric, load_result, sanity_check
from salbench.api.results import plain
from salbench.errors import ConfigError
from salbench.metrics import METRICS
from salbench.metrics.complexity import sparseness
from salbench.metrics.fidelity import completeness, monotonicity
from salbench.metrics.gomez import curve_scores, single_step_scores
from salbench.metrics.localization import energy_pointing_game, official_metric, pointing_game_mask
from salbench.metrics.perturbation import black_images
from salbench.metrics.recognition import recognition_scores
from salbench.metrics.retraining import roar_scores
from salbench.metrics.robustness import avg_sensitivity, saliency_explainer
from salbench.metrics.similarity import similarity_scores
from salbench.models.randomisation import randomisation_blocks, randomised_copy
from tests._tolerance import F64_REL, double

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
N, SIZE = 4, 16
STOCHASTIC = {"monotonicity", "max_sensitivity", "avg_sensitivity"}


class TinyNet(nn.Module):
    """torchvision-ResNet-like names (conv1, bn1, layer1, fc), seeded non-default weights."""

    def __init__(self, seed: int = 0, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.layer1 = nn.Sequential(nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU()))
        self.fc = nn.Linear(8 * 4, classes)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.layer1(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(z, 2).flatten(1))


class ConstantNet(nn.Module):
    """Same logits for every input: every perturbation curve is flat."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1) + 0.0 * x.sum(dim=(1, 2, 3)).unsqueeze(1)


@pytest.fixture
def data() -> dict:
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(N, SIZE, SIZE, dtype=torch.bool)
    masks[:, 4:12, 2:9] = True
    return {
        "model": TinyNet(),
        "images": torch.randn(N, 3, SIZE, SIZE, generator=g),
        "maps": torch.rand(N, SIZE, SIZE, generator=g),
        "targets": torch.tensor([0, 1, 2, 3]),
        "boxes": [np.array([[2, 4, 8, 11]]), np.array([[0, 0, 5, 5], [9, 9, 15, 15]])] * 2,
        "masks": masks,
        "correct": torch.tensor([True, False, True, True]),
    }


def _extras(name: str, d: dict) -> dict:
    """The extras ``name`` needs (from the adapter), filled from the fixture."""
    return {k: d[k] for k in METRICS.get(name).requires}


def _direct(name: str, d: dict) -> np.ndarray:
    """Reference values from the metrics' own functions, under the configs of test_matches_functions."""
    m, x, y, t = d["model"], d["images"], d["maps"], d["targets"]
    stats = {"mean": MEAN, "std": STD}
    if name == "insertion":  # the group blurs at the input's size: 16 x 16 -> 3 x 3, sigma 5 * 16 / 112
        return recognition_scores(m, x, y, t, **stats, blur_kernel=3, blur_sigma=5 * SIZE / 112)["insertion"]
    if name == "deletion":
        return recognition_scores(m, x, y, t, **stats, substrate="black", step=32)["deletion"]
    if name == "average_gain":
        return recognition_scores(m, x, y, t, **stats, base_probs=np.full(N, 0.3))["average_gain"]
    if name == "dauc":
        return curve_scores(m, x, y, t, game="deletion", filling="black", max_step_nb=16, **stats)["dauc"]
    if name == "ic":
        return curve_scores(m, x, y, t, game="insertion", filling="black", **stats)["ic"]
    if name == "add":
        return single_step_scores(m, x, y, t, filling="blur", **stats)["add"]
    if name == "monotonicity":
        return monotonicity(m, x, y, t, nr_samples=3, generator=torch.Generator().manual_seed(7)).numpy()
    if name == "avg_sensitivity":
        g = torch.Generator().manual_seed(7)
        return avg_sensitivity(y, x, t, saliency_explainer(m), nr_samples=2, generator=g).numpy()
    if name == "completeness":
        base = black_images(x, MEAN, STD)
        return completeness(m, x, y, t, base, output="probability")[0].numpy()
    if name == "sparseness":
        return sparseness(y, normalise=True).numpy()
    if name == "energy_pointing_game":
        return energy_pointing_game(y, d["boxes"]).numpy()
    if name == "official_metric":
        return official_metric(y, d["boxes"], d["correct"], iou_threshold=0.5).numpy()
    return pointing_game_mask(y, d["masks"]).numpy()


CONFIGS = [
    ({"type": "insertion"}, {}),
    ({"type": "deletion", "substrate": "black", "step": 32}, {}),
    ({"type": "average_gain"}, {"base_probs": np.full(N, 0.3)}),
    ({"type": "dauc", "max_step_nb": 16}, {}),
    ({"type": "ic", "filling": "black"}, {}),
    ({"type": "add", "filling": "blur"}, {}),
    ({"type": "monotonicity", "nr_samples": 3}, {"generator": None}),
    ({"type": "avg_sensitivity", "nr_samples": 2}, {"generator": None}),
    ({"type": "completeness", "output": "probability"}, {}),
    ({"type": "sparseness", "normalise": True}, {}),
    ({"type": "energy_pointing_game"}, {"boxes": "boxes"}),
    ({"type": "official_metric", "iou_threshold": 0.5}, {"boxes": "boxes", "correct": "correct"}),
    ({"type": "pointing_game_mask"}, {"masks": "masks"}),
]


@pytest.mark.parametrize(("config", "extras"), CONFIGS, ids=[c["type"] for c, _ in CONFIGS])
def test_build_metric_matches_the_metric_functions(data, config, extras):
    needs_model = config["type"] not in ("sparseness", "energy_pointing_game", "official_metric")
    metric = build_metric(config, model=data["model"] if needs_model else None, mean=MEAN, std=STD)
    kwargs = {k: data[v] if isinstance(v, str) else v for k, v in extras.items()}
    if kwargs.get("generator") is None and "generator" in kwargs:
        kwargs["generator"] = torch.Generator().manual_seed(7)
    out = metric.evaluate_batch(data["images"], data["maps"], data["targets"], **kwargs)
    expected = _direct(config["type"], data)
    assert out["value"].shape == (N,) and not out["skipped"].any()
    np.testing.assert_array_equal(out["value"], expected)
    metric.update(out)
    assert metric.get_result()["value"] == pytest.approx(float(np.nanmean(expected)), rel=1e-12)


@pytest.mark.numeric
@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric_single_sample_equals_its_batch_row(data, name):
    """float64 model, images and maps: a single image and its batch row go through the network in
    other batch layouts, ~1e-16 relative apart; ratios such as (Y - O) / Y and correlations amplify
    that by <= 1e3, hence ``F64_REL`` (1e-9) relative and 1e-12 absolute near 0."""
    d = data | {
        "model": double(data["model"]),
        "images": data["images"].double(),
        "maps": data["maps"].double(),
    }
    metric = build_metric({"type": name}, model=d["model"], mean=MEAN, std=STD)
    assert isinstance(metric, ReInferenceMetric)
    extras = _extras(name, d)
    gen = {"generator": torch.Generator().manual_seed(3)} if name in STOCHASTIC else {}
    batch = metric.evaluate_batch(d["images"], d["maps"], d["targets"], **extras, **gen)
    assert batch["value"].shape == (N,) and batch["value"].dtype == np.float64
    if name in STOCHASTIC:  # draws depend on the batch size
        return
    for i in (0, 3):
        one = {k: v[i] for k, v in extras.items()}
        single = metric.evaluate(d["images"][i], d["maps"][i], int(d["targets"][i]), **one)
        assert isinstance(single["value"], float) and single["skipped"] is False
        assert single["value"] == pytest.approx(batch["value"][i], rel=F64_REL, abs=1e-12, nan_ok=True)


def test_streaming_counts_nan_and_constant_maps_as_skipped(data):
    maps = data["maps"].clone()
    maps[1, 3, 3] = float("nan")
    maps[2] = 0.5  # constant: Gomez' metrics and the pointing game are undefined, sparseness is 0
    x, t, masks = data["images"], data["targets"], data["masks"]
    expected = {"iic": 2, "pointing_game_mask": 2, "sparseness": 1, "insertion": 1}
    for name, n_skipped in expected.items():
        metric = build_metric({"type": name}, model=data["model"], mean=MEAN, std=STD)
        extra = {"masks": masks} if name == "pointing_game_mask" else {}
        out = metric.update(x[:2], maps[:2], t[:2], **{k: v[:2] for k, v in extra.items()})  # two batches
        out2 = metric.update(x[2:], maps[2:], t[2:], **{k: v[2:] for k, v in extra.items()})
        values = np.concatenate([out["value"], out2["value"]])
        result = metric.get_result()
        assert (result["n_skipped"], result["n_images"], result["n_nan"]) == (n_skipped, N - n_skipped, 0)
        assert result["value"] == pytest.approx(np.nanmean(values), rel=1e-12)
        assert math.isfinite(result["value"])
        assert result["per_image"]["skipped"] == np.isnan(values).tolist()
        assert result["per_image"]["value"][1] is None  # NaN map
    # sparseness of the constant map is defined (0 after the 1e-7 shift), not skipped
    sp = build_metric({"type": "sparseness"}).evaluate(None, maps[2], None)
    assert sp == {"value": pytest.approx(0.0, abs=1e-12), "skipped": False}


def test_nan_values_of_valid_maps_are_counted_apart(data):
    # flat probability curves: DC is a correlation with a constant, NaN for every valid map
    metric = build_metric({"type": "dc", "max_step_nb": 4}, model=ConstantNet(), mean=MEAN, std=STD)
    maps = data["maps"].clone()
    maps[0] = 0.0
    metric.update(data["images"], maps, torch.tensor([0, 1, 2, 0]))
    result = metric.get_result()
    assert (result["n_skipped"], result["n_nan"], result["n_images"]) == (1, 3, 0)
    assert result["value"] is None
    assert metric.summary().n_nan == 3


def test_get_result_and_summary_before_update_raise(data):
    metric = build_metric({"type": "insertion"}, model=data["model"])
    with pytest.raises(RuntimeError, match="get_result\\(\\) called before any update"):
        metric.get_result()
    with pytest.raises(RuntimeError, match="summary\\(\\) called before any update"):
        metric.summary()
    metric.update(metric.evaluate(data["images"][0], data["maps"][0], 0))
    assert metric.get_result()["n_images"] == 1
    metric.reset()
    with pytest.raises(RuntimeError):
        metric.get_result()


def test_dump_json_and_yaml_round_trip(data, tmp_path):
    metric = build_metric({"type": "deletion", "step": 64}, model=data["model"], mean=MEAN, std=STD)
    maps = data["maps"].clone()
    maps[3, 0, 0] = float("inf")
    for i in range(N):
        metric.update(metric.evaluate(data["images"][i], maps[i], int(data["targets"][i])))
    result = metric.get_result()
    assert result["params"]["step"] == 64 and result["direction"] == "lower" and result["n_skipped"] == 1
    assert result["per_image"]["value"][3] is None and result["category"] == "recognition"
    for suffix in (".json", ".yaml", ".yml"):
        path = metric.dump(tmp_path / f"deletion{suffix}")
        text = path.read_text()
        loaded = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
        assert loaded == result == load_result(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deletion.json", "deletion.yaml", "deletion.yml"]
    with pytest.raises(ConfigError, match=r"out\.txt"):
        metric.dump(tmp_path / "out.txt")


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"type": "nope"}, "nope"),
        ({"type": "insertion", "stepz": 3}, "stepz"),
        ({"type": "deletion", "substrate": "grey"}, "grey"),
        ({"type": "iic", "filling": "white"}, "white"),
        ({"step": 3}, "type"),
        ({"type": "insertion"}, "model"),
    ],
)
def test_config_errors_name_the_culprit(config, needle):
    with pytest.raises(ConfigError, match=needle):
        build_metric(config)


def test_evaluate_argument_errors(data):
    epg = build_metric({"type": "energy_pointing_game"})
    with pytest.raises(ConfigError, match="boxes"):
        epg.evaluate_batch(None, data["maps"], None)
    ins = build_metric({"type": "insertion"}, model=data["model"])
    with pytest.raises(ConfigError, match="boxes"):
        ins.evaluate_batch(data["images"], data["maps"], data["targets"], boxes=data["boxes"])
    with pytest.raises(ConfigError, match="update"):
        ins.update({"value": 1.0}, data["maps"])


def _saliency(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return saliency_explainer(model)(images, targets)


@pytest.fixture
def images32() -> torch.Tensor:
    """HOG needs maps of at least 24 x 24 pixels (3 x 3 cells of 8 px)."""
    return torch.randn(N, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_sanity_check_with_a_callable_uses_salbench_sanity(data, images32):
    model, x, t = data["model"], images32, data["targets"]
    result = sanity_check(model, _saliency, x, t, variants=("cascading",), seed=4, name="saliency")
    blocks = randomisation_blocks(model)
    assert result.blocks == tuple(b.name for b in blocks) == ("fc", "layer1", "conv1+bn1")
    reference = _saliency(model, x, t).numpy()
    for k in (1, 3):
        randomised = randomised_copy(model, blocks[:k], torch.Generator().manual_seed(4))
        other = _saliency(randomised, x, t).numpy()
        expected = similarity_scores((reference, reference), (other, other))
        rows = result.per_image[result.per_image.variant == f"cascading:{blocks[k - 1].name}"]
        for metric, values in expected.items():
            np.testing.assert_array_equal(rows[metric].to_numpy(), values)
    assert list(result.summary.level) == [1, 2, 3]
    assert result.flags()["method"] == "saliency"
    # the original model is untouched
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), TinyNet().state_dict().values())
    )


def test_sanity_check_registered_control_fails_and_dumps(data, images32, tmp_path):
    result = sanity_check(data["model"], "fakecam", images32, data["targets"], batch_size=3)
    assert result.method == "fakecam" and result.family == "Uninformed"
    assert len(result.per_image) == N * 2 * 3  # images x (cascading, independent) x blocks
    assert (result.per_image[["sanity_spearman_abs", "sanity_ssim"]].to_numpy() == 1.0).all()
    assert result.flags()["fails_model_randomisation"] is True
    loaded = load_result(result.dump(tmp_path / "sanity.json"))
    assert loaded["summary"]["sanity_spearman_abs"] == [1.0] * 6
    grad = sanity_check(
        data["model"], "gradient", images32, data["targets"], params={"deprocess": "jacobgil"}
    )
    assert grad.method == "gradient_jacobgil" and grad.family == "Gradient"
    assert grad.summary.set_index("variant").loc["cascading:conv1+bn1", "sanity_spearman_abs"] < 1.0
    with pytest.raises(ConfigError, match="data_model"):
        sanity_check(data["model"], "fakecam", images32, data["targets"], variants=("data",))
    with pytest.raises(ConfigError, match="unknown method"):
        sanity_check(data["model"], "nope", images32, data["targets"])


def _halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images whose class is the sign of rows 0-1 (+1 / -1) on one fixed background."""
    background = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(99))
    labels = (torch.arange(n) % 2)[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    images = background.repeat(n, 1, 1, 1)
    images[:, :, :2, :] = (2.0 * labels - 1.0).view(n, 1, 1, 1)
    return images, labels


def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def test_roar_metric_wraps_roar_scores(tmp_path):
    config = {"type": "roar", "ks": [25], "epochs": 6, "batch_size": 16, "lr": 0.05, "weight_decay": 0.0}
    metric = build_metric(config, mean=MEAN, std=STD)
    assert isinstance(metric, ReTrainingMetric) and metric.settings.ks == (25,)
    with pytest.raises(RuntimeError, match="before evaluate"):
        metric.get_result()
    (xtr, ytr), (xte, yte) = _halves(64, 0), _halves(20, 1)
    maps_tr, maps_te = torch.zeros(64, 8, 8), torch.zeros(20, 8, 8)
    maps_tr[:, :2], maps_te[:, :2] = 1.0, 1.0  # the map points at the evidence: 25% = rows 0-1
    scores = metric.evaluate(xtr, ytr, maps_tr, xte, yte, maps_te, _linear)
    # every modified image is the same: chance accuracy on balanced data; unmodified: perfect
    assert scores == {0: 1.0, 25: 0.5}
    assert scores == roar_scores(
        xtr, ytr, maps_tr, xte, yte, maps_te, _linear, metric.settings, mean=MEAN, std=STD
    )
    result = metric.get_result()
    assert result["accuracy"] == {0: 1.0, 25: 0.5} and result["mean_accuracy"] == 0.5
    assert (result["baseline_accuracy"], result["n_train"], result["n_test"]) == (1.0, 64, 20)
    assert result["direction"] == "lower" and result["settings"]["ks"] == [25]
    for suffix in (".json", ".yaml"):
        assert load_result(metric.dump(tmp_path / f"roar{suffix}")) == plain(result)
    with pytest.raises(ConfigError, match="epoch"):
        build_metric({"type": "roar", "epoch": 3})
    with pytest.raises(ConfigError, match="--k"):
        build_metric({"type": "roar", "ks": [0]})
