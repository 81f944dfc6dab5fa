from __future__ import annotations

import dataclasses

import pytest

from salbench.config import Config, config_to_dict, deep_merge, dump_config, resolve_config
from salbench.errors import ConfigError


def test_precedence_defaults_preset_file_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("run:\n  batch_size: 7\n  seed: 3\nmodel:\n  name: resnet18\n")
    cfg = resolve_config(cfg_file, {"run": {"seed": 11}})
    assert cfg.run.batch_size == 7  # from the file
    assert cfg.run.seed == 11  # flag beats file
    assert cfg.run.max_batch == 1024  # default
    assert cfg.model.name == "resnet18"
    assert cfg.run.protocol == "acml2024"


def test_protocol_chosen_by_file_selects_preset(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("run:\n  protocol: reference\n")
    assert resolve_config(cfg_file).run.protocol == "reference"
    assert resolve_config(cfg_file, {"run": {"protocol": "acml2024"}}).run.protocol == "acml2024"


def test_unknown_key_names_key_and_file(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("run:\n  batchsize: 7\n")
    with pytest.raises(ConfigError, match=r"'run.batchsize'.*bad.yaml"):
        resolve_config(cfg_file)
    with pytest.raises(ConfigError, match=r"unknown config key 'dataa'"):
        resolve_config(None, {"dataa": {}})


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"run": {"batch_size": "x"}}, "expected an integer"),
        ({"run": {"device": "tpu"}}, "not one of"),
        ({"run": {"label_sets": ["groundtruth", "worst"]}}, "'worst' is not one of"),
        ({"run": {"overwrite": "yes"}}, "true/false"),
        ({"data": {"embedded": 3}}, "expected a mapping"),
    ],
)
def test_bad_values_are_named(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        resolve_config(None, override)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(tmp_path / "missing.yaml")


def test_config_is_frozen_and_round_trips(tmp_path):
    cfg = resolve_config(None, {"run": {"limit": 5, "label_sets": ["least"]}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.limit = 3  # type: ignore[misc]
    assert cfg.run.label_sets == ("least",)
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(dump_config(cfg))
    again = resolve_config(dumped)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert isinstance(again, Config)


def test_deep_merge_does_not_mutate_inputs():
    base = {"a": {"b": 1, "c": 2}}
    over = {"a": {"b": 5}}
    out = deep_merge(base, over)
    assert out == {"a": {"b": 5, "c": 2}}
    assert base == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize("name", ["embedded.yaml", "acml2024_resnet50.yaml", "acml2024_vgg16bn.yaml"])
def test_shipped_presets_resolve(name):
    from salbench.config import CONFIG_DIR

    cfg = resolve_config(CONFIG_DIR / name)
    assert cfg.run.label_sets == ("groundtruth", "predicted", "least")
    # the study transformed 1,000 images per augmentation variant; the embedded default 8
    assert cfg.augmentations["n_images"] == (8 if name == "embedded.yaml" else 1000)
