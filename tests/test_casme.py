"""CASME: masker architecture, the masker loss by hand, deterministic training that localises the evidence,
checkpoints (salbench and kondiz/casme layouts, ``weights_only=True``), the method protocol, the stage script.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from casme_utils.architecture import (
    Decoder,
    Masker,
    build_masker,
    encoder_planes,
    feature_points,
    upsample_mask,
)
from casme_utils.checkpoint import (
    FORMAT,
    default_checkpoint,
    load_masker,
    resnet_from_state,
    resolve_checkpoint,
    save_masker,
)
from casme_utils.training import CasmeTrainConfig, ClassifierPool, evaluate_masker, masker_loss, train_masker
from salbench.config import resolve_config
from salbench.errors import ConfigError, DataError
from salbench.methods.base import METHODS, MethodContext
from salbench.methods.casme import Casme, CasmeParams
from salbench.models.embedded import EmbeddedResNet, EmbeddedVGG

CPU = torch.device("cpu")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tiny_resnet(num_classes: int = 3, seed: int = 0) -> EmbeddedResNet:
    torch.manual_seed(seed)
    return EmbeddedResNet(num_classes, widths=(4, 8, 8, 8))


def _tiny_masker(seed: int = 0) -> Masker:
    return build_masker(_tiny_resnet(seed=seed), 4, _gen(seed)).eval()


def _synthetic(n: int, seed: int, size: int = 32, side: int = 10):
    """Noise + one 10x10 square whose colour channel is the class: (images, labels, object masks)."""
    g = _gen(seed)
    x = 0.3 * torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    pos = torch.randint(0, size - side + 1, (n, 2), generator=g)
    obj = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        r, c = pos[i].tolist()
        obj[i, r : r + side, c : c + side] = True
        x[i, y[i], r : r + side, c : c + side] += 2.0
    return x, y, obj


# ----------------------------------------------------------------------------------------- architecture


def test_masker_shapes_and_range_at_112():
    resnet = build_masker(EmbeddedResNet(10), 16, _gen(0)).eval()
    assert resnet.decoder.in_planes == (8, 8, 16, 32, 64)  # stem after max-pool, layer1..layer4
    x = torch.randn(2, 3, 112, 112, generator=_gen(1))
    with torch.no_grad():
        low, full = resnet(x), resnet.upsampled(x)
    assert low.shape == (2, 1, 28, 28) and full.shape == (2, 1, 112, 112)
    assert low.dtype == torch.float32 and torch.isfinite(full).all()
    assert float(full.min()) >= 0.0 and float(full.max()) <= 1.0 and float(full.std()) > 0
    vgg = build_masker(EmbeddedVGG(10), 8, _gen(0)).eval()
    assert vgg.decoder.in_planes == (8, 16, 32, 64)  # the four max-pools of ``features``
    with torch.no_grad():
        assert vgg(x).shape == (2, 1, 56, 56)
    with pytest.raises(ConfigError, match="not a torchvision-style ResNet"):
        feature_points(nn.Sequential(nn.Linear(2, 2)))


def test_decoder_state_dict_has_the_authors_keys_for_resnet50():
    """kondiz/casme archs.decoder(): in_planes [256, 512, 1024, 2048] + the 64-channel stem, width 64."""
    state = Decoder((64, 256, 512, 1024, 2048), 64).state_dict()
    expected = {"final.0.weight": (1, 320, 3, 3), "final.0.bias": (1,)}
    for i, planes in enumerate((256, 512, 1024, 2048), start=1):
        expected[f"conv1x1_{i}.0.weight"] = (64, planes, 1, 1)
        for k in ("weight", "bias", "running_mean", "running_var"):
            expected[f"conv1x1_{i}.1.{k}"] = (64,)
        expected[f"conv1x1_{i}.1.num_batches_tracked"] = ()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert encoder_planes(torchvision.models.resnet50()) == (64, 256, 512, 1024, 2048)


@pytest.mark.numeric
def test_decoder_forward_by_hand():
    # float64 decoder and features: both sides run the same few float64 ops (~1e-16), hence 1e-12
    dec = Decoder((2, 3), width=1).eval()
    dec.reset_parameters(_gen(0))
    dec.double()
    with torch.no_grad():
        dec.conv1x1_1[1].running_mean.fill_(0.5)
        dec.conv1x1_1[1].running_var.fill_(4.0)
    f0 = torch.randn(1, 2, 4, 4, generator=_gen(1), dtype=torch.float64)
    f1 = torch.randn(1, 3, 2, 2, generator=_gen(2), dtype=torch.float64)
    w1 = dec.conv1x1_1[0].weight
    proj = F.relu((F.conv2d(f1, w1) - 0.5) / math.sqrt(4.0 + 1e-5))  # BN(1, 0) in eval mode
    # the authors' nn.Upsample(scale_factor=2, bilinear) equals interpolation to the stem size here
    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(proj)
    expected = torch.sigmoid(
        F.conv2d(torch.cat([f0, up], 1), dec.final[0].weight, dec.final[0].bias, padding=1)
    )
    with torch.no_grad():
        torch.testing.assert_close(dec([f0, f1]), expected, atol=1e-12, rtol=0)
    # authors' initialisation: conv weights ~ N(0, 2 / (k * k * out_channels)), zero final bias
    big = Decoder((64, 256), 64)
    big.reset_parameters(_gen(0))
    # 16384 and 1152 seeded draws (the same on every machine): std within 3 % and 6 %, i.e. within 5.4
    # and 2.9 standard errors (1 / sqrt(2 n)) of the sample std
    with torch.no_grad():
        assert float(big.conv1x1_1[0].weight.std()) == pytest.approx(math.sqrt(2 / 64), rel=0.03)
        assert float(big.final[0].weight.std()) == pytest.approx(math.sqrt(2 / 9), rel=0.06)
    assert float(big.final[0].bias.detach()) == 0.0


def test_upsample_mask_modes():
    m = torch.arange(4.0).view(1, 1, 2, 2)
    assert torch.equal(
        upsample_mask(m, (4, 4), "nearest")[0, 0], m[0, 0].repeat_interleave(2, 0).repeat_interleave(2, 1)
    )
    # bilinear, align_corners=False: (0.75 * 0 + 0.25 * 1) at column 1 of row 0, exact in float32
    assert float(upsample_mask(m, (4, 4), "bilinear")[0, 0, 0, 1]) == 0.25
    with pytest.raises(ConfigError, match="upsample"):
        upsample_mask(m, (4, 4), "bicubic")


# ------------------------------------------------------------------------------------------- training


@pytest.mark.numeric
def test_masker_loss_by_hand():
    # float64 logits and masks: logs, softmax and means of 2..8 terms, ~1e-16, hence 1e-12
    f64 = {"dtype": torch.float64}
    clean = torch.tensor([[2.0, 0.0], [0.0, 2.0]], **f64)  # image 0 correct, image 1 wrong (targets 0, 0)
    out = torch.tensor([[0.0, math.log(3.0)], [1.0, 0.0]], **f64)  # image 0 fooled (p = 1/4, 3/4)
    mask = torch.cat([torch.full((1, 1, 2, 2), 0.25, **f64), torch.full((1, 1, 2, 2), 0.5, **f64)])
    y = torch.tensor([0, 0])
    loss, stats = masker_loss(clean, out, mask, y, lambda_r=2.0)
    neg_entropy = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)  # only image 0 is correct on clean
    area = -2.0 * (1 - 0.25) / 2  # only image 0 is nontrivially confused
    assert stats["main"] == pytest.approx(neg_entropy / 2, abs=1e-12)
    assert stats["area_term"] == pytest.approx(area, abs=1e-12)
    assert stats["nontrivially_confused"] == 0.5
    assert float(loss) == pytest.approx(neg_entropy / 2 + area, abs=1e-12)
    adv, _ = masker_loss(clean, out, mask, y, lambda_r=0.0, adversarial=True)
    ce = (-math.log(0.25) - math.log(math.e / (math.e + 1))) / 2
    assert float(adv) == pytest.approx(-ce, abs=1e-12)


def test_classifier_pool_keeps_every_kth_state_and_replaces_when_full():
    net = nn.Linear(1, 1, bias=False)
    pool = ClassifierPool(net, size=2, every=3)
    seen = []
    for step in range(9):
        with torch.no_grad():
            net.weight.fill_(float(step))
        pool.maybe_add(net, step, _gen(0))
        seen.append(len(pool))
    assert seen == [1, 1, 2, 2, 2, 2, 2, 2, 2]  # step 0 (empty pool), then steps 2, 5, 8
    stored = sorted(float(s["weight"]) for s in pool.states)
    assert len(stored) == 2 and set(stored) <= {0.0, 2.0, 5.0, 8.0} and 8.0 in stored
    player = pool.draw(_gen(1))
    assert float(player.weight) in stored and not player.training and not player.weight.requires_grad


@pytest.fixture(scope="module")
def trained_classifier():
    """The tiny ResNet after 4 epochs of plain SGD on the synthetic squares (test-local, deterministic)."""
    x, y, _ = _synthetic(192, 0)
    clf = _tiny_resnet()
    opt = torch.optim.SGD(clf.parameters(), lr=0.05, momentum=0.9)
    g = _gen(0)
    for _ in range(4):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            opt.zero_grad()
            F.cross_entropy(clf(x[idx]), y[idx]).backward()
            opt.step()
    return clf.eval()


def _train(clf: nn.Module, seed: int, **kw):
    """Train a masker whose encoder starts from ``clf``; the masker's mode flags must come back unchanged."""
    x, y, _ = _synthetic(192, 0)
    cfg = CasmeTrainConfig(
        seed=seed, epochs=6, batch_size=32, images_per_epoch=0, lambda_r=2.0, lr_decoder=1e-2, **kw
    )
    masker = build_masker(copy.deepcopy(clf), 8, _gen(seed))
    masker.decoder.eval()
    hist = train_masker(masker, (x, y), cfg, CPU)
    assert masker.training and not masker.encoder.training and not masker.decoder.training
    return masker.eval(), hist


def test_training_is_deterministic_reduces_its_loss_and_finds_the_object(trained_classifier):
    rng_before = torch.get_rng_state()
    a, hist_a = _train(trained_classifier, seed=0)
    b, hist_b = _train(trained_classifier, seed=0)
    c, _ = _train(trained_classifier, seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout seeding is scoped (fork_rng)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and hist_a.drop(columns="seconds").equals(
        hist_b.drop(columns="seconds")
    )
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert hist_a["loss"].iloc[-3:].mean() < hist_a["loss"].iloc[0] - 0.1  # the game is noisy per epoch
    x, y, obj = _synthetic(64, 1)
    q = evaluate_masker(a, trained_classifier, (x, y))
    assert q["n_images"] == 64 and q["mask_mean"] < 0.2
    assert q["accuracy_masked_out"] < q["accuracy_clean"] - 0.2
    with torch.no_grad():
        m = a.upsampled(x)[:, 0]
    inside, outside = float(m[obj].mean()), float(m[~obj].mean())
    assert inside > 4 * outside, (inside, outside)


def test_fixed_classifier_leaves_the_encoder_untouched(trained_classifier):
    before = copy.deepcopy(trained_classifier.state_dict())
    masker, hist = _train(trained_classifier, seed=0, fixed_classifier=True, history_prob=0.0)
    after = masker.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in masker.parameters())  # frozen_parameters restored
    assert hist["pool_used"].sum() == 0 and hist["loss"].iloc[-1] < hist["loss"].iloc[0]


def test_train_config_is_validated():
    with pytest.raises(ConfigError, match="history_prob"):
        CasmeTrainConfig(history_prob=1.5)
    with pytest.raises(ConfigError, match="upsample"):
        CasmeTrainConfig(upsample="area")


# ---------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_weights_only(tmp_path: Path):
    masker = _tiny_masker()
    meta = {"encoder": "embedded_resnet", "num_classes": 3, "decoder_width": 4, "in_planes": [4, 4, 8, 8, 8]}
    path = save_masker(tmp_path / "m.pt", masker, meta)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["meta"] == {**meta, "format": FORMAT}
    assert set(raw["state_dict"]) == set(masker.state_dict())
    # the encoder is rebuilt from the registry (default widths), which the tiny widths do not fit
    with pytest.raises(DataError, match="does not fit"):
        load_masker(path)
    full = build_masker(EmbeddedResNet(3), 4, _gen(0)).eval()
    meta = {**meta, "in_planes": list(full.decoder.in_planes)}
    save_masker(path, full, meta)
    loaded, loaded_meta = load_masker(path)
    assert loaded_meta["encoder"] == "embedded_resnet" and not loaded.training
    ref = full.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in loaded.state_dict().items())
    x = torch.randn(2, 3, 48, 48, generator=_gen(3))
    with torch.no_grad():
        assert torch.equal(loaded(x), full(x))


def test_authors_checkpoint_layout_loads(tmp_path: Path):
    torch.manual_seed(0)
    encoder = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5)
    decoder = Decoder(encoder_planes(encoder), 64)
    decoder.reset_parameters(_gen(0))
    ckpt = {
        "epoch": 7,
        "state_dict_classifier": encoder.state_dict(),
        "state_dict_decoder": decoder.state_dict(),
        "optimizer_decoder": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0, 1]}]},
        "args": argparse.Namespace(upsample="nearest", lambda_r=10.0, name="casm"),
    }
    path = tmp_path / "casm.chk"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)  # PyTorch 0.4's (legacy) file format
    with pytest.raises(Exception, match="Namespace"):  # why the loader allow-lists argparse.Namespace
        torch.load(path, weights_only=True)
    masker, meta = load_masker(path)
    assert meta["format"] == "kondiz-casme" and meta["encoder"] == "resnet14" and meta["epoch"] == 7
    assert meta["upsample"] == "nearest" and meta["decoder_width"] == 64 and meta["num_classes"] == 5
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    x = torch.randn(1, 3, 64, 64, generator=_gen(1))
    with torch.no_grad():
        torch.testing.assert_close(masker(x), Masker(encoder, decoder).eval()(x), atol=0, rtol=0)
    r50 = resnet_from_state(torchvision.models.resnet50().state_dict())
    assert isinstance(r50.layer1[0], Bottleneck) and [
        len(getattr(r50, f"layer{i}")) for i in range(1, 5)
    ] == [3, 4, 6, 3]
    r18 = resnet_from_state(torchvision.models.resnet18(num_classes=7).state_dict())
    assert isinstance(r18.layer1[0], BasicBlock) and r18.fc.out_features == 7


class _Opaque:
    pass


def test_bad_checkpoints_give_one_line_data_errors(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist") as missing:
        load_masker(tmp_path / "nope.pt")
    assert "nope.pt" in str(missing.value) and "\n" not in str(missing.value)
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="neither the salbench layout"):
        load_masker(tmp_path / "other.pt")
    torch.save({"obj": _Opaque()}, tmp_path / "pickle.pt")
    with pytest.raises(DataError, match="cannot be loaded safely") as unsafe:
        load_masker(tmp_path / "pickle.pt")
    assert "\n" not in str(unsafe.value)
    torch.save({"state_dict": {}, "meta": {"format": FORMAT}}, tmp_path / "meta.pt")
    with pytest.raises(DataError, match="meta needs encoder"):
        load_masker(tmp_path / "meta.pt")


def test_default_and_resolved_checkpoint(tmp_path: Path):
    cfg = resolve_config(overrides={"run": {"output_root": str(tmp_path), "seed": 3}})
    assert default_checkpoint(cfg) == tmp_path / "models" / "casme_embedded_resnet_seed3.pt"
    assert resolve_checkpoint(cfg) == str(tmp_path / "models" / "casme_embedded_resnet_seed3.pt")
    given = resolve_config(
        overrides={"methods": {"casme": {"checkpoint": "x.chk"}}, "model": {"name": "resnet50"}}
    )
    assert resolve_checkpoint(given) == "x.chk"
    with pytest.raises(ConfigError, match=r"methods\.casme\.checkpoint"):
        resolve_checkpoint(resolve_config(overrides={"model": {"name": "resnet50"}}))


# -------------------------------------------------------------------------------------------- method


class _Explained(nn.Module):
    """The explained classifier: CASME must neither run, hook nor switch it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("casme must not run the explained model")


def _method(masker: Masker | None = None, **params) -> Casme:
    return Casme(
        _Explained(), MethodContext(num_classes=3), CasmeParams(**params), masker=masker or _tiny_masker()
    )


def test_registered_and_needs_a_checkpoint():
    assert METHODS.get("casme") is Casme and Casme.family == "Learning" and Casme.deterministic
    assert CasmeParams() == CasmeParams(checkpoint="", upsample="bilinear", max_batch=64)
    with pytest.raises(ConfigError, match=r"methods\.casme\.checkpoint") as err:
        Casme(_Explained(), MethodContext(), CasmeParams())
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        Casme(_Explained(), MethodContext(), CasmeParams(checkpoint="/nonexistent/casme.pt"))
    with pytest.raises(ConfigError, match="upsample"):
        CasmeParams(upsample="cubic")


# CASME maps from a float64 masker: ``Casme.explain`` rounds the mask to float32 before its min-max
# (``mask.float()``), so a map is within ~3 float32 roundings (2**-25 each for masks in (0, 1)) over the
# span (> 0.75 here) of the float64 value; another batch layout moves the float64 mask by ~1e-16 only.
# Hence atol 1e-6 (float32 maskers: batch layouts alone move maps by ~2e-6).
CASME_ATOL = 1e-6


@pytest.mark.numeric
def test_map_is_the_upsampled_min_max_mask():
    masker = _tiny_masker().double()
    x = torch.randn(3, 3, 32, 32, generator=_gen(4), dtype=torch.float64)
    maps = _method(masker).explain(x, torch.tensor([0, 1, 2]))
    with torch.no_grad():
        up = F.interpolate(masker(x), size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    torch.testing.assert_close(maps.double(), (up - lo) / (hi - lo), atol=CASME_ATOL, rtol=0)
    near = _method(masker, upsample="nearest").explain(x, torch.tensor([0, 1, 2]))
    with torch.no_grad():
        low = masker(x)[:, 0]
    low = (low - low.amin((1, 2), keepdim=True)) / (
        low.amax((1, 2), keepdim=True) - low.amin((1, 2), keepdim=True)
    )
    near_ref = low.repeat_interleave(4, 1).repeat_interleave(4, 2)
    torch.testing.assert_close(near.double(), near_ref, atol=CASME_ATOL, rtol=0)


@pytest.mark.numeric
def test_method_properties_and_state_restored():
    masker = _tiny_masker().train().double()  # left in training mode: used in eval mode and restored
    method = _method(masker, max_batch=2)
    explained = method.model.train()
    x = torch.randn(5, 3, 32, 32, generator=_gen(5), dtype=torch.float64)
    x_copy = x.clone()
    t = torch.tensor([0, 1, 2, 0, 1])
    maps = method.explain(x, t)
    assert maps.shape == (5, 32, 32) and maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert torch.equal(maps.amin((1, 2)), torch.zeros(5)) and torch.allclose(maps.amax((1, 2)), torch.ones(5))
    assert torch.equal(x, x_copy)
    assert masker.training and all(m.training for m in masker.modules()) and explained.training
    assert all(not m._forward_hooks for m in [*masker.modules(), *explained.modules()])
    single = torch.cat([method.explain(x[i : i + 1], t[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(single, maps, atol=CASME_ATOL, rtol=0)  # other batch layout
    assert torch.equal(method.explain(x, t), maps)
    assert torch.equal(method.explain(x, torch.tensor([2, 2, 2, 2, 2])), maps)  # class-agnostic
    eval_maps = _method(copy.deepcopy(masker).eval()).explain(x, t)
    torch.testing.assert_close(eval_maps, maps, atol=CASME_ATOL, rtol=0)
    assert method.describe()["method"] == "casme" and method.describe()["params"]["upsample"] == "bilinear"


def test_state_restored_when_the_masker_fails():
    masker = _tiny_masker().train()
    method = _method(masker)

    def boom(_m, _i, _o):
        raise RuntimeError("boom")

    handle = masker.decoder.final.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        method.explain(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    handle.remove()
    assert all(m.training for m in masker.modules())
    assert all(not m._forward_hooks for m in masker.modules())


@pytest.mark.numeric
def test_images_are_renormalised_for_the_masker():
    # float64 images: the two normalisation paths differ by ~1e-16 (float32: by ulps that the masker
    # and min-max amplify), then as CASME_ATOL
    masker = _tiny_masker().double()
    meta = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    ctx = MethodContext(num_classes=3)  # ImageNet statistics
    method = Casme(_Explained(), ctx, CasmeParams(), masker=masker, masker_meta=meta)
    pixels = torch.rand(2, 3, 32, 32, generator=_gen(6), dtype=torch.float64)
    got = method.explain(ctx.normalize(pixels), torch.tensor([0, 1]))
    same = Casme(_Explained(), MethodContext(mean=(0.5,) * 3, std=(0.25,) * 3), CasmeParams(), masker=masker)
    want = same.explain((pixels - 0.5) / 0.25, torch.tensor([0, 1]))
    torch.testing.assert_close(got, want, atol=CASME_ATOL, rtol=0)


def test_method_from_checkpoint_file(tmp_path: Path):
    full = build_masker(EmbeddedResNet(3), 4, _gen(0)).eval()
    meta = {
        "encoder": "embedded_resnet",
        "num_classes": 3,
        "decoder_width": 4,
        "in_planes": list(full.decoder.in_planes),
    }
    path = save_masker(tmp_path / "casme.pt", full, meta)
    method = Casme(_Explained(), MethodContext(num_classes=3), CasmeParams(checkpoint=str(path)))
    # the loaded weights equal the saved ones; compared in float64, then as CASME_ATOL (float32 maskers
    # at other addresses can take other SIMD paths, ~2e-6 apart)
    method.masker.double()
    x = torch.randn(2, 3, 48, 48, generator=_gen(7), dtype=torch.float64)
    torch.testing.assert_close(
        method.explain(x, torch.tensor([0, 1])),
        _method(full.double()).explain(x, torch.tensor([0, 1])),
        atol=CASME_ATOL,
        rtol=0,
    )
    assert method.describe()["masker"]["encoder"] == "embedded_resnet"


# --------------------------------------------------------------------------------------------- stage


def test_train_casme_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import main.train_casme as script

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(
        f"run: {{output_root: {tmp_path / 'run'}, seed: 2}}\n"
        "data: {embedded: {image_size: 48, n_train: 16, n_val: 2, n_eval: 6}}\n"
    )
    args = ["--config", str(cfg_file), "--epochs", "1"]
    assert script.main(args) == 2  # the classifier is not trained yet
    assert "main/train_embedded.py" in capsys.readouterr().err
    cfg = resolve_config(cfg_file)
    from salbench.store.layout import embedded_checkpoint

    torch.manual_seed(0)
    embedded_checkpoint(cfg).parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": EmbeddedResNet(10).state_dict(), "meta": {"num_classes": 10}}, embedded_checkpoint(cfg)
    )
    assert script.main(args) == 0
    out = capsys.readouterr().out
    path = tmp_path / "run" / "models" / "casme_embedded_resnet_seed2.pt"
    assert str(path) in out and "masked-out" in out and "on 6 eval images" in out
    _, meta = load_masker(path)
    assert meta["quality"]["n_images"] == 6 and meta["train"]["epochs"] == 1 and meta["train"]["seed"] == 2
    assert meta["classifier_checkpoint"] == str(embedded_checkpoint(cfg)) and meta["in_planes"] == [
        8,
        8,
        16,
        32,
        64,
    ]
    assert (tmp_path / "run" / "models" / "casme_embedded_resnet_seed2_history.csv").is_file()
    stamp = path.stat().st_mtime_ns
    assert script.main(args) == 0 and path.stat().st_mtime_ns == stamp  # reused
    assert script.main([*args, "--epochs", "0"]) == 2
