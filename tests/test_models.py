from __future__ import annotations

import argparse

import pytest
import torch
import torchvision

from salbench.config import ModelConfig
from salbench.errors import ConfigError, DataError
from salbench.models import EmbeddedResNet, EmbeddedVGG, build_model, get_submodule, resolve_target_layer
from salbench.models.registry import load_checkpoint, torchvision_weights_file


@pytest.mark.parametrize(("cls", "spec"), [(EmbeddedResNet, "layer4[-1]"), (EmbeddedVGG, "features[-1]")])
def test_embedded_target_layer_is_7x7(cls, spec):
    model = cls(num_classes=10).eval()
    name, layer = resolve_target_layer(model)
    assert name == spec
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = tuple(output.shape)

    h = layer.register_forward_hook(hook)
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 112, 112))
    h.remove()
    assert out.shape == (2, 10)
    assert seen["shape"][2:] == (7, 7)


def test_torchvision_rules_share_the_code_path():
    resnet = torchvision.models.resnet18(weights=None)
    vgg = torchvision.models.vgg11_bn(weights=None)
    assert resolve_target_layer(resnet)[1] is resnet.layer4[-1]
    assert resolve_target_layer(vgg)[1] is vgg.features[-1]
    assert isinstance(vgg.features[-1], torch.nn.MaxPool2d)
    assert get_submodule(vgg, "features.3") is vgg.features[3]
    assert get_submodule(resnet, "layer3[0].conv1") is resnet.layer3[0].conv1


@pytest.mark.parametrize("spec", ["layer9[-1]", "layer4[5]", "layer4[-1", ".layer4", ""])
def test_bad_target_layer(spec):
    with pytest.raises(ConfigError, match="target layer"):
        get_submodule(EmbeddedResNet(), spec)


def test_checkpoint_round_trip_and_unsafe_file(tmp_path):
    model = EmbeddedResNet(num_classes=4)
    path = tmp_path / "m.pt"
    torch.save({"state_dict": model.state_dict(), "meta": {"num_classes": 4}}, path)
    built, info = build_model(ModelConfig(name="embedded_resnet", checkpoint=str(path)))
    assert info["num_classes"] == 4 and not built.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, built.state_dict()[k])

    # an arbitrary Python object: refused by the weights-only unpickler
    torch.save({"state_dict": model.state_dict(), "evil": argparse.Namespace(x=1)}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_checkpoint_that_does_not_fit(tmp_path):
    torch.save(EmbeddedResNet(num_classes=4).state_dict(), tmp_path / "r.pt")
    with pytest.raises(DataError, match=r"does not fit model EmbeddedVGG: missing 37 \(features.0.weight"):
        build_model(ModelConfig(name="embedded_vgg", checkpoint=str(tmp_path / "r.pt")))
    # every mismatch is named: missing, unexpected and mis-shaped keys
    state = EmbeddedResNet(num_classes=4).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    state["fc.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": state, "meta": {"num_classes": 4}}, tmp_path / "s.pt")
    message = (
        r"missing 1 \(fc.bias\); unexpected 1 \(extra.weight\); mis-shaped 1 \(fc.weight \(3, 3\) vs \(4, "
    )
    with pytest.raises(DataError, match=message):
        build_model(ModelConfig(name="embedded_resnet", checkpoint=str(tmp_path / "s.pt")))


def test_nan_weights_are_refused_naming_the_checkpoint(tmp_path):
    state = EmbeddedResNet(num_classes=4).state_dict()
    state["fc.weight"][0, 0] = float("nan")
    torch.save({"state_dict": state, "meta": {"num_classes": 4}}, tmp_path / "nan.pt")
    with pytest.raises(DataError, match=r"nan\.pt: 1 values of 'fc.weight' are NaN or inf"):
        build_model(ModelConfig(name="embedded_resnet", checkpoint=str(tmp_path / "nan.pt")))


def test_malicious_checkpoint_message_names_the_blocked_global(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("never printed",))

    torch.save({"state_dict": {"w": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match=r"would run the Python object '(builtins.)?print' when unpickled"):
        build_model(ModelConfig(name="embedded_resnet", checkpoint=str(tmp_path / "evil.pt")))


def test_torchvision_weights_read_from_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(DataError, match=r"not found at .*torch hub cache"):
            build_model(ModelConfig(name="resnet18", weights="IMAGENET1K_V1"))
        _, path = torchvision_weights_file("resnet18", "IMAGENET1K_V1")
        path.parent.mkdir(parents=True)
        ref = torchvision.models.resnet18(weights=None)
        torch.save(ref.state_dict(), path)
        model, info = build_model(ModelConfig(name="resnet18", weights="IMAGENET1K_V1"))
        assert info["num_classes"] == 1000
        assert torch.equal(model.fc.weight, ref.fc.weight)
    finally:
        torch.hub.set_dir(str(torch.hub._get_torch_home() + "/hub"))


def test_unknown_model_and_weights():
    with pytest.raises(ConfigError, match="unknown model 'resnet5000'"):
        build_model(ModelConfig(name="resnet5000"))
    with pytest.raises(ConfigError, match="unknown weights 'IMAGENET9K'"):
        build_model(ModelConfig(name="resnet18", weights="IMAGENET9K"))
    with pytest.raises(ConfigError, match=r"needs model\.checkpoint"):
        build_model(ModelConfig(name="embedded_resnet"))


def test_training_augmentation_is_a_flip_then_a_zero_padded_shift():
    """Every output pixel is the (flipped) input pixel shifted by the drawn offset, or 0 outside."""
    from salbench.models.training import augment

    images = torch.randn(5, 3, 9, 11)
    out = augment(images, torch.Generator().manual_seed(3), max_shift=2)
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order
    flip = torch.rand(5, generator=g) < 0.5
    shifts = torch.randint(-2, 3, (5, 2), generator=g)
    for i in range(5):
        src = images[i].flip(-1) if flip[i] else images[i]
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        for y in range(9):
            for x in range(11):
                sy, sx = y - dy, x - dx
                inside = 0 <= sy < 9 and 0 <= sx < 11
                expected = src[:, sy, sx] if inside else torch.zeros(3)
                assert torch.equal(out[i, :, y, x], expected)


def test_an_embedded_checkpoint_is_reused_only_for_the_settings_it_was_trained_with(tmp_path, caplog):
    """Same train/data settings: the checkpoint is reused as is; other epochs: retrained (one warning)."""
    from salbench.config import resolve_config
    from salbench.models.training import train_embedded_model
    from salbench.store.layout import embedded_checkpoint

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(
        f"run: {{output_root: {tmp_path / 'run'}}}\n"
        "data: {embedded: {image_size: 32, n_train: 20, n_val: 4, n_eval: 4}}\n"
        "train: {epochs: 1, batch_size: 10}\n"
    )
    cfg = resolve_config(cfg_file)
    meta = train_embedded_model(cfg, torch.device("cpu"), progress=False)
    assert meta["train_config"]["epochs"] == 1 and "n_images" in meta["train"]  # "train": the split summary
    stamp = embedded_checkpoint(cfg).stat().st_mtime_ns
    train_embedded_model(cfg, torch.device("cpu"), progress=False)
    assert embedded_checkpoint(cfg).stat().st_mtime_ns == stamp
    other = resolve_config(cfg_file, {"train": {"epochs": 2}})
    with caplog.at_level("WARNING"):
        assert train_embedded_model(other, torch.device("cpu"), progress=False)["train_config"]["epochs"] == 2
    assert "trained with other train/data settings: retrained" in caplog.text
