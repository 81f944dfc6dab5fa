"""Bring your own model: ``file.py:factory`` / ``package.module:factory`` and ``timm:<name>`` entry points
of ``build_model``, checkpoints in every common layout, and a one-line error for every bad input."""

from __future__ import annotations

import importlib.util
import logging
import sys
import textwrap

import pytest
import torch

from salbench.config import ModelConfig, resolve_config
from salbench.errors import ConfigError, DataError, SalbenchError
from salbench.models.registry import build_architecture, build_model, entry_point, state_digest

MODEL_SOURCE = textwrap.dedent(
    """
    import dataclasses

    from torch import nn

    from byo_neighbour import Pool  # a module beside this file


    @dataclasses.dataclass
    class Spec:  # needs the module registered in sys.modules while it runs
        width: int


    class Net(nn.Module):
        def __init__(self, width: int, classes: int) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
            self.pool = Pool()
            self.head = nn.Linear(Spec(width).width, classes)

        def forward(self, x):
            return self.head(self.pool(self.features(x)))


    def make(width: int = 4, classes: int = 3) -> Net:
        return Net(width, classes)


    def not_a_module():
        return 42


    def broken(**kwargs):
        raise RuntimeError("no GPU here\\nsecond line of the message")


    VALUE = 3
    """
)
NEIGHBOUR_SOURCE = textwrap.dedent(
    """
    from torch import nn


    class Pool(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))
    """
)


@pytest.fixture
def model_file(tmp_path):
    """``byo_model.py`` (and the neighbour it imports) in ``tmp_path``; imported modules forgotten after."""
    (tmp_path / "byo_neighbour.py").write_text(NEIGHBOUR_SOURCE)
    path = tmp_path / "byo_model.py"
    path.write_text(MODEL_SOURCE)
    before = set(sys.modules)
    yield path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def reference(path, seed: int = 0, **kwargs) -> torch.nn.Module:
    """The user's model built by hand from the file, as the researcher trained it."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("byo_reference", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["byo_reference"] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    torch.manual_seed(seed)
    return module.make(**kwargs).eval()


LAYOUTS = {
    "bare": lambda state: state,
    "state_dict": lambda state: {"state_dict": state, "epoch": 3},
    "model": lambda state: {"model": state, "optimizer": {"lr": torch.tensor(0.1)}},
    "module_prefix": lambda state: {f"module.{k}": v for k, v in state.items()},
    "state_dict_module_prefix": lambda state: {"state_dict": {f"module.{k}": v for k, v in state.items()}},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_file_factory_with_checkpoint_gives_identical_logits(model_file, tmp_path, layout):
    original = reference(model_file, seed=1, width=5)
    ckpt = tmp_path / f"{layout}.pt"
    torch.save(LAYOUTS[layout](original.state_dict()), ckpt)
    cfg = ModelConfig(
        name=f"{model_file}:make", kwargs={"width": 5}, checkpoint=str(ckpt), memory_format="contiguous"
    )
    model, info = build_model(cfg)
    x = torch.randn(4, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    assert not model.training
    assert info["entry_point"] == "factory" and info["factory"] == f"{model_file}:make"
    assert info["kwargs"] == {"width": 5} and info["num_classes"] == 3
    assert info["state_sha256"] == state_digest(original, "reference")
    assert len(info["factory_file_sha256"]) == 64


def test_module_factory_and_kwargs_from_yaml(model_file, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    original = reference(model_file, seed=2, width=6, classes=4)
    torch.save({"model": original.state_dict()}, tmp_path / "w.pt")
    config = tmp_path / "run.yaml"
    config.write_text(
        "model:\n  name: byo_model:make\n"
        f"  checkpoint: {tmp_path / 'w.pt'}\n  kwargs: {{width: 6, classes: 4}}\n"
    )
    cfg = resolve_config(config)
    assert entry_point(cfg.model.name) == "factory" and hash(cfg.model) == hash(cfg.model)
    model, info = build_model(cfg.model)
    x = torch.randn(2, 1, 5, 7)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-6)  # channels_last: same up to rounding
    assert info["num_classes"] == 4 and "factory_file_sha256" not in info
    assert isinstance(build_architecture(cfg.model, 4), torch.nn.Module)


def bad_case(path, tmp_path, case):
    """``(ModelConfig, error type, message pattern)`` of one bad input."""
    good = reference(path, seed=0)
    torch.save(good.state_dict(), tmp_path / "good.pt")
    (tmp_path / "imports_missing.py").write_text("import salbench_no_such_package\n")
    (tmp_path / "bad_syntax.py").write_text("def make(:\n")
    name = f"{path}:make"
    cases = {
        "missing file": (
            ModelConfig(name=f"{tmp_path}/nope.py:make"),
            DataError,
            r"nope\.py' does not exist",
        ),
        "import error": (
            ModelConfig(name=f"{tmp_path}/imports_missing.py:make"),
            ConfigError,
            r"importing '.*imports_missing\.py' failed: ModuleNotFoundError: No module named",
        ),
        "syntax error": (
            ModelConfig(name=f"{tmp_path}/bad_syntax.py:make"),
            ConfigError,
            r"bad_syntax\.py' failed: SyntaxError",
        ),
        "missing module": (
            ModelConfig(name="salbench_no_such_pkg.models:make"),
            ConfigError,
            r"cannot import module 'salbench_no_such_pkg\.models' \(ModuleNotFoundError",
        ),
        "missing attribute": (
            ModelConfig(name=f"{path}:nosuch"),
            ConfigError,
            r"byo_model\.py' has no attribute 'nosuch'",
        ),
        "not callable": (
            ModelConfig(name=f"{path}:VALUE"),
            ConfigError,
            r"'VALUE' .* is a int, not callable",
        ),
        "factory raises": (
            ModelConfig(name=f"{path}:broken"),
            ConfigError,
            r"byo_model\.py:broken' with kwargs \{\} failed: RuntimeError: no GPU here$",
        ),
        "bad kwargs": (
            ModelConfig(name=name, kwargs={"depth": 3}),
            ConfigError,
            r"with kwargs \{'depth': 3\} failed: TypeError: .*'depth'",
        ),
        "not a module": (
            ModelConfig(name=f"{path}:not_a_module"),
            ConfigError,
            r"not_a_module' returned a int, not a torch\.nn\.Module",
        ),
        "bad name": (ModelConfig(name=f"{path}:2fast"), ConfigError, r"is not 'package\.module:factory'"),
        "checkpoint does not fit": (
            ModelConfig(name=name, kwargs={"width": 7}, checkpoint=str(tmp_path / "good.pt")),
            DataError,
            r"good\.pt' does not fit model Net: mis-shaped",
        ),
        "missing checkpoint": (
            ModelConfig(name=name, checkpoint=str(tmp_path / "none.pt")),
            DataError,
            r"none\.pt' does not exist",
        ),
        "torchvision weights": (
            ModelConfig(name=name, weights="IMAGENET1K_V1"),
            ConfigError,
            "model.weights names torchvision weights",
        ),
        "class count": (
            ModelConfig(name=name, num_classes=10),
            ConfigError,
            r"model\.num_classes is 10 but model .* has 3 outputs",
        ),
    }
    return cases[case]


BAD_CASES = [
    "missing file",
    "import error",
    "syntax error",
    "missing module",
    "missing attribute",
    "not callable",
    "factory raises",
    "bad kwargs",
    "not a module",
    "bad name",
    "checkpoint does not fit",
    "missing checkpoint",
    "torchvision weights",
    "class count",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_factory_input_is_one_line(model_file, tmp_path, case):
    cfg, error, pattern = bad_case(model_file, tmp_path, case)
    with pytest.raises(error, match=pattern) as info:
        build_model(cfg)
    assert "\n" not in str(info.value) and info.value.__cause__ is None


def test_unknown_name_lists_the_entry_points():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet5000'.*timm:<name>.*file\.py:factory"):
        build_model(ModelConfig(name="resnet5000"))


@pytest.fixture
def no_downloads(monkeypatch):
    """Every way timm and torch fetch weights raises: a build that passes downloaded nothing."""
    timm_builder = pytest.importorskip("timm.models._builder")
    timm_hub = pytest.importorskip("timm.models._hub")

    def refuse(*args, **kwargs):
        raise AssertionError("download attempted")

    for module, name in [
        (timm_builder, "load_state_dict_from_url"),
        (timm_builder, "load_state_dict_from_hf"),
        (timm_builder, "download_cached_file"),
        (timm_hub, "hf_hub_download"),
        (timm_hub, "download_url_to_file"),
        (torch.hub, "load_state_dict_from_url"),
        (torch.hub, "download_url_to_file"),
    ]:
        monkeypatch.setattr(module, name, refuse)


TIMM_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 2}


def test_timm_model_random_init_warns_and_checkpoint_round_trips(tmp_path, no_downloads, caplog):
    timm = pytest.importorskip("timm")
    name = "timm:vit_tiny_patch16_224"
    with caplog.at_level(logging.WARNING, logger="salbench.models.registry"):
        _, info = build_model(ModelConfig(name=name, kwargs=TIMM_KWARGS, num_classes=5))
    assert "no checkpoint: random initialisation" in caplog.text
    assert info["entry_point"] == "timm" and info["num_classes"] == 5
    assert info["timm_version"] == timm.__version__ and info["kwargs"] == TIMM_KWARGS

    torch.manual_seed(3)
    original = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=7, **TIMM_KWARGS
    ).eval()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, tmp_path / "v.pt"
    )
    # the class count comes from the checkpoint's classifier (timm's pretrained_cfg 'classifier': head)
    model, info = build_model(
        ModelConfig(
            name=name, kwargs=TIMM_KWARGS, checkpoint=str(tmp_path / "v.pt"), memory_format="contiguous"
        ),
        num_classes=3,
    )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    assert info["num_classes"] == 7 and info["state_sha256"] == state_digest(original, "reference")
    rebuilt = build_architecture(ModelConfig(name=name, kwargs=TIMM_KWARGS), 7)
    assert type(rebuilt) is type(original)


@pytest.mark.parametrize(
    ("cfg", "pattern"),
    [
        (ModelConfig(name="timm:no_such_net"), r"unknown timm model 'no_such_net'"),
        (ModelConfig(name="timm:resnet18", weights="DEFAULT"), "give timm weights as a local"),
        (ModelConfig(name="timm:resnet18", kwargs={"pretrained": True}), r"may not set pretrained"),
        (
            ModelConfig(name="timm:resnet18", kwargs={"checkpoint_path": "x.pt"}),
            "may not set checkpoint_path",
        ),
        (ModelConfig(name="timm:resnet18", kwargs={"no_such_kwarg": 1}), r"failed: TypeError"),
        (ModelConfig(name="resnet18", kwargs={"weights": "DEFAULT"}), r"may not set weights"),
        (ModelConfig(name="embedded_resnet", kwargs={"width": 2}), "takes no model.kwargs"),
    ],
)
def test_bad_timm_and_kwargs_inputs_are_one_line(cfg, pattern, no_downloads):
    pytest.importorskip("timm")
    with pytest.raises(SalbenchError, match=pattern) as info:
        build_model(cfg)
    assert "\n" not in str(info.value)


def test_torchvision_kwargs_reach_the_builder():
    model, info = build_model(ModelConfig(name="squeezenet1_1", num_classes=4, kwargs={"dropout": 0.25}))
    assert info["entry_point"] == "torchvision" and info["kwargs"] == {"dropout": 0.25}
    assert model.classifier[0].p == 0.25


def test_safetensors_checkpoint_loads_and_a_damaged_one_is_one_line(tmp_path):
    """timm / Hugging Face weights come as .safetensors: read without unpickling, the same state."""
    from safetensors.torch import save_file

    from salbench.errors import DataError
    from salbench.models.registry import load_checkpoint

    state = {"conv.weight": torch.arange(12.0).reshape(3, 4), "fc.bias": torch.ones(2)}
    save_file(state, str(tmp_path / "w.safetensors"))
    loaded, meta = load_checkpoint(tmp_path / "w.safetensors")
    assert meta == {} and set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DataError, match=r"^checkpoint '.*bad\.safetensors' cannot be loaded safely: ") as err:
        load_checkpoint(tmp_path / "bad.safetensors")
    assert "\n" not in str(err.value)
