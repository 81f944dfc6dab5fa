"""Sanity checks (Adebayo et al. 2018): blocks, randomised copies, similarity helpers, flags, script."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.feature import hog
from torch import nn

from evaluation import sanity_checks
from main import diagnostics
from salbench.config import resolve_config
from salbench.methods.base import MethodContext
from salbench.metrics.similarity import (
    HOG_PARAMS,
    METRIC_IDS,
    hog_similarity,
    rank_correlation,
    ssim_similarity,
)
from salbench.models.embedded import EmbeddedResNet, EmbeddedVGG
from salbench.models.layers import get_submodule
from salbench.models.randomisation import LayerBlock, randomisation_blocks, randomised_copy
from salbench.runtime import Runtime
from salbench.stages.sanity import (
    SanitySettings,
    compare_methods,
    flag_row,
    model_variants,
    summarise,
)
from salbench.stages.workspace import MethodExplainer, Workspace
from salbench.store.layout import RunLayout
from salbench.store.results import RESULT_COLUMNS


class TinyResNetLike(nn.Module):
    """torchvision-ResNet-like names: conv1, bn1 (stem), layer1 (blocks of blocks), fc."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()))
        self.layer2 = nn.Sequential(nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU()))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def trained_like(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every parameter and norm buffer non-default values (as a trained model has)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def make_ws(model: nn.Module, target_layer: str = "layer2[-1]") -> Workspace:
    cfg = resolve_config(None, {"run": {"protocol": "reference", "seed": 3}})
    runtime = Runtime("cpu", 3, 1, True, torch.__version__, None)
    layer = get_submodule(model, target_layer) if target_layer else None
    context = MethodContext(target_layer=layer, num_classes=3)
    return Workspace(
        cfg=cfg,
        runtime=runtime,
        layout=RunLayout.from_config(cfg),
        data=None,
        model=model,
        model_info={},
        target_layer=target_layer,
        context=context,
        images=None,
    )


def test_blocks_of_resnet_and_vgg_layouts():
    names = [b.name for b in randomisation_blocks(TinyResNetLike())]
    assert names == ["fc", "layer2", "layer1", "conv1+bn1"]
    assert randomisation_blocks(TinyResNetLike())[-1] == LayerBlock("conv1+bn1", ("conv1", "bn1"))
    resnet = [b.name for b in randomisation_blocks(EmbeddedResNet(num_classes=10))]
    assert resnet == ["fc", "layer4", "layer3", "layer2", "layer1", "conv1+bn1"]
    vgg = [b.name for b in randomisation_blocks(EmbeddedVGG(num_classes=10))]
    # classifier = (Flatten, Dropout, Linear); features: conv-bn-relu x5 with 4 pools in between
    assert vgg == [
        "classifier.2",
        "features.15+features.16",
        "features.12+features.13",
        "features.8+features.9",
        "features.4+features.5",
        "features.0+features.1",
    ]


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0]


def test_cascading_randomisation_changes_exactly_the_intended_blocks():
    model = trained_like(TinyResNetLike())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = randomisation_blocks(model)
    for k in range(len(blocks)):
        copy = randomised_copy(model, blocks[: k + 1], torch.Generator().manual_seed(0))
        chosen = {m for b in blocks[: k + 1] for m in b.modules}
        for name, value in copy.state_dict().items():
            top = name.split(".")[0]
            if name.endswith("num_batches_tracked"):
                continue
            if top in chosen:
                assert not torch.equal(value, before[name]), name
            else:
                assert torch.equal(value, before[name]), name
        # the original model is untouched, parameter objects are not shared
        assert all(torch.equal(v, before[n]) for n, v in model.state_dict().items())
        assert not any(p is q for p, q in zip(model.parameters(), copy.parameters()))
    full = randomised_copy(model, blocks, torch.Generator().manual_seed(0))
    # norm layers get their default initialisation: weight 1, bias 0, running mean 0, running var 1
    assert torch.equal(full.bn1.weight, torch.ones(6)) and torch.equal(full.bn1.running_var, torch.ones(6))
    # conv/linear: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert full.fc.weight.abs().max() <= 1 / np.sqrt(8)
    # the same generator state gives a block the same weights in cascading and independent copies
    alone = randomised_copy(model, [blocks[1]], torch.Generator().manual_seed(0))
    assert torch.equal(alone.layer2[0][0].weight, full.layer2[0][0].weight)
    again = randomised_copy(model, blocks, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), again.state_dict().values()))
    other = randomised_copy(model, blocks, torch.Generator().manual_seed(1))
    assert not torch.equal(other.fc.weight, full.fc.weight)


@pytest.mark.numeric
def test_rank_correlation_by_hand():
    # float64 arithmetic on rationals with small denominators (ranks, 4 values): exact up to ~1e-16
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    # one swapped pair: rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 12 / 60
    assert rank_correlation(a, np.array([[1.0, 3.0], [2.0, 4.0]])) == pytest.approx(0.8, abs=1e-12)
    assert rank_correlation(a, -a) == pytest.approx(-1.0, abs=1e-12)
    assert rank_correlation(a, a) == 1.0
    # ties take average ranks: (1.5, 1.5, 3.5, 3.5) vs (1.5, 3.5, 1.5, 3.5) are uncorrelated
    assert rank_correlation([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # signed vs absolute: |(-3,-1,2,4)| = (3,1,2,4) same ranks; signed: ranks
    # (1,2,3,4) vs (3,1,2,4), d = (-2,1,1,0): rho = 1 - 6*6/60
    signed, other = np.array([-3.0, -1.0, 2.0, 4.0]), np.array([3.0, 1.0, 2.0, 4.0])
    assert rank_correlation(np.abs(signed), other) == 1.0
    assert rank_correlation(signed, other) == pytest.approx(0.4, abs=1e-12)
    # undefined (constant map): 1 when identical, else 0
    assert rank_correlation(np.zeros(4), np.zeros(4)) == 1.0
    assert rank_correlation(np.zeros(4), a) == 0.0


@pytest.mark.numeric
def test_ssim_by_hand():
    # float64 window sums of 49 values: ~1e-15 relative, rel 1e-9 below
    # 7x7 maps and the default 7x7 window: one window, SSIM = the global formula with sample covariance
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    assert ssim_similarity(np.full((7, 7), 0.5), np.zeros((7, 7))) == pytest.approx(
        c1 / (0.25 + c1), rel=1e-9
    )
    x = (np.arange(49).reshape(7, 7) % 3 == 0).astype(float)
    y = 1.0 - x
    mx, vx = x.mean(), x.var(ddof=1)
    expected = (2 * mx * (1 - mx) + c1) * (-2 * vx + c2) / ((mx**2 + (1 - mx) ** 2 + c1) * (2 * vx + c2))
    assert ssim_similarity(x, y) == pytest.approx(expected, rel=1e-9)
    assert ssim_similarity(x, x) == 1.0
    # values outside [0, 1] are clipped before comparison (data_range 1)
    assert ssim_similarity(x * 3.0, x) == 1.0


@pytest.mark.numeric
def test_hog_similarity_by_hand():
    ramp = np.tile(np.linspace(0.0, 1.0, 24), (24, 1))  # horizontal gradient only
    assert len(hog(ramp, **HOG_PARAMS)) == 81  # one 3x3-cell block x 9 orientations
    assert hog_similarity(ramp, ramp) == 1.0
    # unsigned orientations: the reversed ramp has the same histogram
    assert hog_similarity(ramp, 1.0 - ramp) == pytest.approx(1.0, abs=1e-12)
    # horizontal vs vertical gradients: 9 equal non-zero entries each (L2-Hys clips them to one value),
    # in disjoint bins of 81: Pearson = -k / (n - k) = -9 / 72
    assert hog_similarity(ramp, ramp.T) == pytest.approx(-1.0 / 8.0, abs=1e-12)
    assert hog_similarity(np.zeros((24, 24)), ramp) == 0.0


def _batches(n: int = 3, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    images = torch.randn((n, 3, size, size), generator=g)
    return [(images[:2], torch.tensor([0, 1])), (images[2:], torch.tensor([2]))]


def test_controls_are_exactly_one_and_flagged_gradient_drops():
    model = trained_like(TinyResNetLike())
    ws = make_ws(model)
    batches = _batches()
    explainers = [
        MethodExplainer(ws, m, batches) for m in ("fakecam", "edge", "random", "gradient", "gradcam")
    ]
    blocks = randomisation_blocks(model)
    variants = ("cascading", "independent")
    frames = compare_methods(explainers, ["a", "b", "c"], model_variants(ws, blocks, variants, None))
    assert set(frames) == {"fakecam", "edge", "random", "gradient_smoothgrad", "gradcam"}
    settings = SanitySettings(threshold=0.5)
    deepest = "cascading:conv1+bn1"
    for control in ("fakecam", "edge", "random"):
        frame = frames[control]
        assert len(frame) == 3 * 2 * len(blocks)
        assert (frame[list(METRIC_IDS)].to_numpy() == 1.0).all(), control
        flags = flag_row(control, "Control", summarise(frame), deepest, settings)
        assert flags["similarity_full_randomisation"] == 1.0 and flags["fails_model_randomisation"] is True
    grad = summarise(frames["gradient_smoothgrad"]).set_index("variant")
    assert grad.loc[deepest, "level"] == len(blocks) and grad.loc[deepest, "n_images"] == 3
    assert grad.loc[deepest, "sanity_spearman_abs"] < settings.threshold
    assert grad.loc[deepest, "sanity_spearman"] < settings.threshold
    flags = flag_row(
        "gradient_smoothgrad", "Gradient", summarise(frames["gradient_smoothgrad"]), deepest, settings
    )
    assert flags["fails_model_randomisation"] is False
    # the model the maps were computed on was never changed
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), trained_like(TinyResNetLike()).state_dict().values())
    )


@pytest.fixture
def imagenet_run(tmp_path, imagenet_fixture):
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    state = trained_like(EmbeddedResNet(num_classes=1000)).state_dict()
    torch.save({"state_dict": state, "meta": {"num_classes": 1000}}, ckpt)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"run: {{output_root: {tmp_path / 'out'}, batch_size: 4, label_sets: [groundtruth]}}\n"
        f"data: {{kind: imagenet, root: {imagenet_fixture}, list_csv: val_list.csv, annotations: boxes, "
        "resize: 72, crop: 64}\n"
        f"model: {{name: embedded_resnet, checkpoint: {ckpt}}}\n"
    )
    assert diagnostics.main(["--config", str(cfg)]) == 0
    return cfg, tmp_path / "out"


def test_script_end_to_end(imagenet_run, capsys):
    cfg, root = imagenet_run
    argv = [
        "--config",
        str(cfg),
        "--limit",
        "3",
        "--method",
        "fakecam",
        "edge",
        "random",
        "gradient",
        "gradcam",
    ]
    assert sanity_checks.main(argv) == 0
    out = capsys.readouterr().out
    assert "fail model randomisation like the controls:" in out and "controls not flagged" not in out
    folder = root / "embedded_resnet" / "sanity"
    layers = pd.read_csv(folder / "layers.csv")
    assert layers["block"].tolist() == ["fc", "layer4", "layer3", "layer2", "layer1", "conv1+bn1"]
    per_image = pd.read_csv(folder / "groundtruth" / "gradient_smoothgrad.csv", dtype={"image_id": str})
    assert list(per_image.columns) == ["image_id", "variant", "level", *METRIC_IDS]
    diag = pd.read_csv(root / "embedded_resnet" / "diagnostics" / "diagnostics.csv", dtype={"image_id": str})
    assert len(per_image) == 3 * 2 * 6
    assert per_image["image_id"].iloc[:6].tolist() == diag["image_id"].iloc[:3].tolist() * 2
    assert (folder / "groundtruth" / "cascade.png").stat().st_size > 10_000
    flags = pd.read_csv(folder / "groundtruth" / "flags.csv").set_index("method")
    assert flags.loc[["fakecam", "edge", "random"], "fails_model_randomisation"].all()
    assert (flags.loc[["fakecam", "edge", "random"], "similarity_full_randomisation"] == 1.0).all()
    results = pd.read_csv(root / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    rows = results[(results.method == "fakecam") & (results.metric == "sanity_ssim")]
    assert len(rows) == 12 and (rows.value == 1.0).all() and (rows.n_images == 3).all()
    assert set(rows.variant) >= {"cascading:fc", "cascading:conv1+bn1", "independent:layer4"}
    fails = results[(results.metric == "sanity_fails") & (results.method == "edge")]
    assert fails.variant.tolist() == ["cascading:conv1+bn1"] and fails.value.tolist() == [1.0]
    # rerun: every per-method CSV is complete, nothing is recomputed
    mtime = (folder / "groundtruth" / "gradcam.csv").stat().st_mtime_ns
    assert sanity_checks.main(argv) == 0
    assert (folder / "groundtruth" / "gradcam.csv").stat().st_mtime_ns == mtime
    # a subset of the variants is served from the same CSVs, and summarised on that subset only
    assert sanity_checks.main([*argv, "--variant", "independent"]) == 0
    assert (folder / "groundtruth" / "gradcam.csv").stat().st_mtime_ns == mtime
    summary = pd.read_csv(folder / "groundtruth" / "summary.csv")
    assert summary["variant"].str.startswith("independent:").all() and len(summary) == 5 * 6
    assert np.isnan(pd.read_csv(folder / "groundtruth" / "flags.csv")["similarity_full_randomisation"]).all()
    # data randomisation needs the embedded benchmark's training split: a one-line error
    assert sanity_checks.main([*argv, "--variant", "data"]) == 2
    assert "--variant data needs data.kind embedded" in capsys.readouterr().err


def test_data_randomisation_on_tiny_embedded_benchmark(tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": EmbeddedResNet(num_classes=10).state_dict(), "meta": {"num_classes": 10}}, ckpt)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"run: {{output_root: {tmp_path / 'out'}, batch_size: 8}}\n"
        f"data: {{kind: embedded, root: {tmp_path / 'bench'}, "
        "embedded: {image_size: 64, n_train: 30, n_val: 10, n_eval: 4}}\n"
        f"model: {{name: embedded_resnet, checkpoint: {ckpt}}}\ntrain: {{batch_size: 16}}\n"
    )
    assert diagnostics.main(["--config", str(cfg)]) == 0
    argv = ["--config", str(cfg), "--variant", "data", "--method", "fakecam", "gradient", "--quick"]
    assert sanity_checks.main(argv) == 0
    folder = tmp_path / "out" / "embedded_resnet" / "sanity"
    trained = folder / "label_shuffled_data0_seed0_epochs2.pt"
    assert trained.is_file()
    history = pd.read_csv(trained.with_suffix(".history.csv"))
    assert history["epoch"].tolist() == [1, 2]
    per_image = pd.read_csv(folder / "groundtruth" / "fakecam.csv")
    assert per_image["variant"].tolist() == ["data"] * 4 and (per_image[list(METRIC_IDS)] == 1.0).all().all()
    flags = pd.read_csv(folder / "groundtruth" / "flags.csv").set_index("method")
    assert flags.loc["fakecam", "fails_data_randomisation"]
    assert np.isnan(flags.loc["fakecam", "similarity_full_randomisation"])
    grad = pd.read_csv(folder / "groundtruth" / "gradient_smoothgrad.csv")
    assert grad["sanity_spearman_abs"].between(-1, 1).all() and (grad["sanity_spearman_abs"] < 1).all()
    assert not (folder / "groundtruth" / "cascade.png").exists()  # no model-randomisation variant ran
    # a second run reuses the cached label-shuffled checkpoint (loaded with weights_only) and recomputes
    # exactly the missing per-method CSV
    mtime = trained.stat().st_mtime_ns
    (folder / "groundtruth" / "gradient_smoothgrad.csv").unlink()
    assert sanity_checks.main(argv) == 0
    assert trained.stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(pd.read_csv(folder / "groundtruth" / "gradient_smoothgrad.csv"), grad)
