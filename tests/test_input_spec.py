"""The model input: channels, sides, normalisation and classes, resolved as config > model > data kind,
the flags that set them, class folders mapped to a model's outputs, and a one-line error for every
input that does not fit the model."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from salbench.config import IMAGENET_MEAN, IMAGENET_STD, REPO_ROOT, ModelConfig, resolve_config
from salbench.data.listing import read_class_index, read_list_csv
from salbench.data.sources import fit_to_model, imagenet_wnids, open_data, preprocess_for
from salbench.data.transforms import InputSpec, Preprocess
from salbench.errors import ConfigError, DataError
from salbench.models.inputs import model_input_spec
from salbench.models.registry import build_model
from salbench.stages.cli import common_parser, config_from_args
from salbench.stages.cli import main as salbench
from salbench.stages.workspace import fresh_model, open_workspace
from salbench.store.layout import model_folder
from tests.conftest import make_imagenet

RGB = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
GREY = (np.arange(16, dtype=np.uint8) * 16).reshape(4, 4)

MODEL_SOURCE = textwrap.dedent(
    """
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self, channels: int = 3, classes: int = 2) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(4, classes)

        def forward(self, x):
            return self.head(self.features(x).mean(dim=(2, 3)))


    def make(channels: int = 3, classes: int = 2, declared: int = 0) -> Tiny:
        model = Tiny(channels, classes)
        if declared:
            model.num_classes = declared  # a wrong declaration: the forward check catches it
        return model


    def mlp(side: int = 16) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, 2))
    """
)


# --- preprocessing ---------------------------------------------------------------------------------


def test_three_channel_preprocess_is_exact():
    pre = Preprocess(resize=4, crop=2, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    out = pre(Image.fromarray(RGB, "RGB"))
    pixels = RGB[1:3, 1:3].astype(np.float32).transpose(2, 0, 1) / 255.0
    expected = (pixels - np.array([0.5, 0.25, 0.0], np.float32)[:, None, None]) / np.array(
        [0.5, 0.25, 1.0], np.float32
    )[:, None, None]
    assert out.shape == (3, 2, 2) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), expected)


def test_one_channel_preprocess_is_exact_for_grey_colour_and_16_bit_images():
    pre = Preprocess(resize=4, crop=2, mean=(0.25,), std=(0.5,), channels=1)
    out = pre(Image.fromarray(GREY, "L"))
    assert out.shape == (1, 2, 2)
    np.testing.assert_array_equal(out.numpy()[0], (GREY[1:3, 1:3] / np.float32(255.0) - 0.25) / 0.5)
    # a colour image becomes Pillow's ITU-R 601-2 luma, as convert("L")
    luma = np.asarray(Image.fromarray(RGB, "RGB").convert("L"), dtype=np.float32) / 255.0
    np.testing.assert_array_equal(pre.pixels(Image.fromarray(RGB, "RGB")).numpy()[0], luma[1:3, 1:3])
    # 16-bit grey is scaled by its bit depth (257 * v -> v), as to_rgb does
    wide = Image.fromarray(GREY.astype(np.uint16) * 257)
    assert wide.mode == "I;16"
    np.testing.assert_array_equal(pre.pixels(wide).numpy()[0], GREY[1:3, 1:3] / np.float32(255.0))
    assert Preprocess(resize=0, crop=0, mean=(0.0,), std=(1.0,), channels=1).pixels(wide).shape == (1, 4, 4)


def test_boxes_and_masks_do_not_depend_on_channels():
    grey = Preprocess(resize=8, crop=6, mean=(0.0,), std=(1.0,), channels=1)
    rgb = Preprocess(resize=8, crop=6)
    boxes = np.array([[0, 0, 5, 3], [2, 1, 7, 7]])
    np.testing.assert_array_equal(grey.boxes(boxes, 16, 8), rgb.boxes(boxes, 16, 8))
    mask = Image.fromarray((GREY > 100).astype(np.uint8) * 255, "L")
    assert torch.equal(grey.mask(mask), rgb.mask(mask))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mean": (0.5,)},  # a one-value mean is never broadcast over three channels
        {"std": (0.5, 0.5)},
        {"channels": 1},  # the ImageNet mean has three values
        {"channels": 2, "mean": (0.0, 0.0), "std": (1.0, 1.0)},
        {"std": (0.5, 0.0, 0.5)},
    ],
)
def test_preprocess_refuses_values_that_do_not_fit_the_channels(kwargs):
    with pytest.raises(ConfigError):
        Preprocess(**kwargs)


# --- precedence: config > model > data kind --------------------------------------------------------


def test_embedded_and_study_configs_resolve_as_before():
    embedded = resolve_config(REPO_ROOT / "configs" / "embedded.yaml")
    assert preprocess_for(embedded) == Preprocess(112, 112, IMAGENET_MEAN, IMAGENET_STD, 3)
    study = resolve_config(REPO_ROOT / "configs" / "acml2024_resnet50.yaml")
    spec = model_input_spec(study.model, nn.Conv2d(3, 1, 1), 1000)
    assert (spec.resize, spec.crop, spec.mean, spec.std) == (256, 224, IMAGENET_MEAN, IMAGENET_STD)
    assert preprocess_for(study, spec) == preprocess_for(study) == Preprocess()


def test_torchvision_weights_give_their_transforms():
    cfg = ModelConfig(name="resnet50", weights="IMAGENET1K_V2")
    spec = model_input_spec(cfg, nn.Conv2d(3, 1, 1), 1000)  # the enum's metadata only: nothing read
    assert (spec.resize, spec.crop) == (232, 224)
    assert spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD
    assert spec.source == "torchvision weights resnet50.IMAGENET1K_V2"
    run = resolve_config(overrides={"data": {"kind": "imagenet"}, "model": {"name": "resnet50"}})
    assert preprocess_for(run, spec) == Preprocess(232, 224)
    flags = resolve_config(overrides={"data": {"kind": "imagenet", "crop": 200}})
    assert preprocess_for(flags, spec) == Preprocess(207, 200)  # the weights' ratio 232/224


def test_timm_vit_spec_from_pretrained_cfg_and_the_side_it_was_built_for():
    cfg = ModelConfig(name="timm:vit_tiny_patch16_224", kwargs={"img_size": 32}, num_classes=10)
    model, info = build_model(cfg)
    spec = model_input_spec(cfg, model, info["num_classes"])
    assert (spec.fixed_size, spec.crop, spec.resize) == (32, 32, 35)  # floor(32 / crop_pct 0.9)
    assert spec.mean == spec.std == (0.5, 0.5, 0.5) and spec.channels == 3
    run = resolve_config(overrides={"data": {"kind": "imagefolder"}})
    assert preprocess_for(run, spec) == Preprocess(35, 32, (0.5,) * 3, (0.5,) * 3)
    given = resolve_config(overrides={"data": {"kind": "imagefolder", "resize": 40, "mean": [0.1] * 3}})
    assert preprocess_for(given, spec) == Preprocess(40, 32, (0.1,) * 3, (0.5,) * 3)


def test_timm_convnext_spec_and_torchvision_vit_side():
    cfg = ModelConfig(name="timm:convnext_atto", num_classes=3)
    model, _ = build_model(cfg)
    spec = model_input_spec(cfg, model, 3)
    assert (spec.resize, spec.crop, spec.fixed_size, spec.first_conv) == (256, 224, 0, "stem.0")
    # a one-layer torchvision ViT (what vit_b_16 with image_size=32 builds, smaller)
    vit = torchvision.models.VisionTransformer(32, 16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8)
    spec = model_input_spec(ModelConfig(name="vit_b_16", kwargs={"image_size": 32}), vit, 1000)
    assert (spec.fixed_size, spec.resize, spec.crop) == (32, 0, 0)
    run = resolve_config(overrides={"data": {"kind": "imagenet"}})
    assert preprocess_for(run, spec) == Preprocess(37, 32)  # 32 * 256 / 224, rounded


# --- flags -----------------------------------------------------------------------------------------


def _config(*argv: str, config: str | None = None):
    args = common_parser("test").parse_args([*(["--config", config] if config else []), *argv])
    return config_from_args(args)


def test_every_input_flag_sets_its_config_key():
    cfg = _config(
        "--num-classes", "7",
        "--input-size", "32",
        "--resize-size", "40",
        "--mean", "0.1", "0.2", "0.3",
        "--std", "0.4", "0.5", "0.6",
        "--channels", "3",
        "--target-layer", "features[-1]",
        "--model-kwargs", "img_size=32", "drop_rate=0.1", "global_pool=avg", "dynamic=true",
        "--class-index", "idx.csv",
        "--data-kind", "imagefolder",
    )  # fmt: skip
    assert cfg.model.num_classes == 7 and cfg.model.target_layer == "features[-1]"
    assert dict(cfg.model.kwargs) == {"img_size": 32, "drop_rate": 0.1, "global_pool": "avg", "dynamic": True}
    assert (cfg.data.crop, cfg.data.resize, cfg.data.channels) == (32, 40, 3)
    assert cfg.data.mean == (0.1, 0.2, 0.3) and cfg.data.std == (0.4, 0.5, 0.6)
    assert cfg.data.class_index == "idx.csv"
    grey = _config("--channels", "1", "--mean", "0.5", "--std", "0.25")
    assert (grey.data.channels, grey.data.mean, grey.data.std) == (1, (0.5,), (0.25,))
    assert _config().data.mean == () and _config().data.channels == 3  # not given: resolved later


def test_a_checkpoint_flag_replaces_a_presets_weights_and_back():
    preset = str(REPO_ROOT / "configs" / "acml2024_resnet50.yaml")
    assert _config(config=preset).model.weights == "IMAGENET1K_V1"
    cfg = _config("--checkpoint", "mine.pt", config=preset)
    assert (cfg.model.weights, cfg.model.checkpoint) == ("", "mine.pt")
    cfg = _config("--weights", "IMAGENET1K_V2", config=preset)
    assert (cfg.model.weights, cfg.model.checkpoint) == ("IMAGENET1K_V2", "")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--mean", "0.5"],
            "'data.mean' (--mean) has 1 value(s) [0.5] but 'data.channels' (--channels) is 3",
        ),
        (["--channels", "1", "--mean", "0.5", "0.5", "0.5"], "'data.mean' (--mean) has 3 value(s)"),
        (["--std", "0", "1", "1"], "'data.std' (--std) must hold values > 0"),
        (["--input-size", "300", "--resize-size", "256"], "'data.crop' (--input-size) is 300, larger than"),
        (["--class-index", "x.csv"], "needs data.kind imagefolder"),
        (["--model-kwargs", "img_size"], "--model-kwargs 'img_size': expected KEY=VALUE"),
        (["--model-kwargs", "a=1", "a=2"], "'a' is given twice"),
        (["--num-classes", "0"], "--num-classes must be >= 1"),
        (["--input-size", "0"], "--input-size must be >= 1"),
    ],
)
def test_flags_that_cannot_fit_are_one_line_errors(tmp_path, capsys, argv, expected):
    code = salbench(["diagnostics", "--output-root", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_channels_flag_accepts_only_1_or_3(capsys):
    with pytest.raises(SystemExit) as exc:
        salbench(["diagnostics", "--channels", "2"])
    assert exc.value.code == 2 and "invalid choice: 2" in capsys.readouterr().err


# --- data for such models --------------------------------------------------------------------------


def _folder(root: Path, classes: list[str], side: int = 8, per_class: int = 2, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shape = (side, side, 3) if mode == "RGB" else (side, side)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")
    return root


def _folder_config(root: Path, **data):
    return resolve_config(overrides={"data": {"kind": "imagefolder", "root": str(root), **data}})


def test_class_index_maps_a_subset_of_the_model_classes(tmp_path):
    root = _folder(tmp_path / "images", ["cat", "dog"])
    index = tmp_path / "index.csv"
    index.write_text("folder,index\ncat,3\ndog,7,good dog\nbird,1\n")
    cfg = _folder_config(root, class_index=str(index))
    data = open_data(cfg)
    assert [r.label for r in data.records] == [3, 3, 7, 7]
    fitted = fit_to_model(data, cfg, InputSpec(num_classes=10), "m")
    assert fitted.num_classes == 10 and fitted.class_names[3] == "cat" and fitted.class_names[7] == "good dog"
    assert fitted.class_names[1] == "bird" and fitted.class_names[0] == "0"
    assert fitted.class_names_source == f"class index {index}"
    # 8x8 images, no sides given, a model without a specification: kept at their own size
    assert fitted.preprocess == Preprocess(8, 8)
    assert fitted.input_spec()["from"]["crop"] == "the images' own size (8x8)"
    json_index = tmp_path / "index.json"
    json_index.write_text(json.dumps({"cat": 0, "dog": 4}))
    data = open_data(_folder_config(root, class_index=str(json_index)))
    assert [r.label for r in data.records] == [0, 0, 4, 4]
    keras = tmp_path / "imagenet_class_index.json"
    keras.write_text(json.dumps({"5": ["cat", "tabby"], "9": ["dog", "beagle"]}))
    assert read_class_index(keras) == {"cat": (5, "tabby"), "dog": (9, "beagle")}


def test_imagenet_wnid_folders_map_to_torchvision_order_for_1000_outputs(tmp_path):
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and list(wnids) == sorted(wnids)
    root = _folder(tmp_path / "val", [wnids[207], wnids[1]], per_class=1)
    cfg = _folder_config(root)
    fitted = fit_to_model(open_data(cfg), cfg, InputSpec(num_classes=1000), "m")
    assert sorted(r.label for r in fitted.records) == [1, 207]
    assert fitted.class_names[207] == "golden retriever" and fitted.num_classes == 1000
    # the same folders for a 2-output model: classes 0..1 in sorted order (e.g. Imagenette)
    two = fit_to_model(open_data(cfg), cfg, InputSpec(num_classes=2), "m")
    assert sorted(r.label for r in two.records) == [0, 1]


def test_list_csv_with_a_header_row(tmp_path):
    _folder(tmp_path, ["val"], per_class=2)
    (tmp_path / "list.csv").write_text("path,label\nval/0.png,3\nval/1.png,5\n")
    records = read_list_csv(tmp_path / "list.csv", tmp_path, 10)
    assert [(r.image_id, r.label) for r in records] == [("val/0", 3), ("val/1", 5)]
    cfg = resolve_config(
        overrides={"data": {"kind": "imagenet", "root": str(tmp_path), "list_csv": "list.csv"}}
    )
    data = open_data(cfg)  # same-size square images keep their size; listed photos of mixed sizes do not
    assert [r.label for r in data.records] == [3, 5] and data.preprocess == Preprocess(8, 8)
    photos = make_imagenet(tmp_path / "photos")
    mixed = resolve_config(
        overrides={"data": {"kind": "imagenet", "root": str(photos), "list_csv": "val_list.csv"}}
    )
    assert open_data(mixed).preprocess == preprocess_for(mixed) == Preprocess(256, 224)
    (tmp_path / "bad.csv").write_text("val/0.png,3\npath,label\n")  # only a first line is a header
    with pytest.raises(DataError, match=r"bad\.csv:2: label 'label' is not an integer"):
        read_list_csv(tmp_path / "bad.csv", tmp_path, 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cat,1\ncat,2\n", "index.csv:2: class folder 'cat' is given twice"),
        ("cat,1\ndog,1\n", "index.csv:2: index 1 is given to 'cat' and 'dog'"),
        ("cat,-1\n", "index.csv:1: index -1 of class 'cat' is not an integer >= 0"),
        ("cat,1\ndog,x\n", "index.csv:2: index 'x' of class 'dog' is not an integer"),
        ("cat\n", "index.csv:1: expected 'folder,index'"),
    ],
)
def test_bad_class_index_files_name_the_file_and_line(tmp_path, text, expected):
    (tmp_path / "index.csv").write_text(text)
    with pytest.raises(DataError, match=expected):
        read_class_index(tmp_path / "index.csv")


# --- checks before any work: the CLI ---------------------------------------------------------------


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    """A folder of 16x16 RGB images in two classes and ``tinymodel:make`` importable."""
    (tmp_path / "tinymodel.py").write_text(MODEL_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield _folder(tmp_path / "images", ["a", "b"], side=16)
    sys.modules.pop("tinymodel", None)


def _errors(capsys) -> list[str]:
    """The ``error:`` lines on stderr (log lines of the stage aside); never a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error: ")]


def _run(tmp_path, root, *argv):
    base = ["--output-root", str(tmp_path / "out"), "--data-kind", "imagefolder", "--data-root", str(root)]
    return salbench(["diagnostics", *base, "--model", "tinymodel:make", *argv])


def test_a_user_model_on_small_images_records_its_input(tmp_path, tiny_run, capsys):
    assert _run(tmp_path, tiny_run, "--limit", "3") == 0
    manifest = json.loads(
        (tmp_path / "out" / model_folder("tinymodel:make") / "diagnostics" / "manifest.json").read_text()
    )
    spec = manifest["data"]["input"]
    assert spec["channels"] == 3 and (spec["resize"], spec["crop"]) == (16, 16)
    assert spec["mean"] == list(IMAGENET_MEAN) and spec["num_classes"] == 2
    assert spec["class_names"] == "class folders in sorted order"
    assert spec["from"]["resize"] == "the images' own size (16x16)"
    ws = open_workspace(
        _config("--data-kind", "imagefolder", "--data-root", str(tiny_run), "--model", "tinymodel:make")
    )
    assert ws.cfg.data.crop == 16 and ws.cfg.data.mean == IMAGENET_MEAN  # later splits open alike
    assert type(fresh_model(ws)).__name__ == "Tiny"  # ROAR / sanity re-train the user's architecture


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--channels", "1"], "'data.channels' (--channels) is 1 and 'data.mean' (--mean) is not given"),
        (
            ["--channels", "1", "--mean", "0.5", "--std", "0.5"],
            "model 'tinymodel:make' takes 3-channel input (its first convolution 'features.0' has "
            "in_channels 3) but 'data.channels' (--channels) is 1: give --channels 3",
        ),
        (["--model-kwargs", "classes=5"], "has 2 class folders but model 'tinymodel:make' has 5 outputs"),
        (["--num-classes", "5"], "model.num_classes is 5 but model 'tinymodel:make' has 2 outputs"),
        (
            ["--model", "resnet18", "--num-classes", "1"],
            "has 2 class folders but model 'resnet18' has 1 outputs",
        ),
        (
            ["--model", "timm:vit_tiny_patch16_224", "--model-kwargs", "img_size=16", "--input-size", "32"],
            "takes 16x16 inputs only (timm patch_embed.img_size) but the crop is 32",
        ),
        (["--input-size", "32", "--resize-size", "20"], "'data.crop' (--input-size) is 32, larger than"),
        (
            ["--model", "tinymodel:mlp", "--input-size", "32"],
            "model 'tinymodel:mlp' fails on a (1, 3, 32, 32) input (RuntimeError: mat1 and mat2 shapes "
            "cannot be multiplied",
        ),
    ],
)
def test_inputs_that_do_not_fit_the_model_are_one_line_errors(tmp_path, tiny_run, capsys, argv, expected):
    assert _run(tmp_path, tiny_run, *argv) == 2
    err = _errors(capsys)
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.csv"))


def test_a_model_whose_outputs_are_not_its_class_count(tmp_path, tiny_run, capsys):
    index = tmp_path / "index.csv"
    index.write_text("a,0\nb,1\n")
    assert _run(tmp_path, tiny_run, "--class-index", str(index), "--model-kwargs", "declared=3") == 2
    assert _errors(capsys) == [
        "error: model 'tinymodel:make' returns logits of shape (1, 2) for a (1, 3, 16, 16) input, expected "
        "(1, 3): set 'model.num_classes' (--num-classes) to its number of outputs"
    ]


def test_class_index_mismatches_are_one_line_errors(tmp_path, tiny_run, capsys):
    index = tmp_path / "index.csv"
    index.write_text("a,0\n")
    assert _run(tmp_path, tiny_run, "--class-index", str(index)) == 2
    err = _errors(capsys)
    assert err == [
        f"error: class index {str(index)!r} does not name class folder 'b' of image folder "
        f"{str(tiny_run)!r} (1 folder(s) missing)"
    ]
    index.write_text("a,0\nb,12\n")
    assert _run(tmp_path, tiny_run, "--class-index", str(index), "--model-kwargs", "classes=10") == 2
    err = _errors(capsys)
    assert err == [
        f"error: class index {str(index)!r} maps class folder 'b' to 12, not an output of model "
        "'tinymodel:make' (10 outputs)"
    ]
    index.write_text("a,0\nb,9\n")
    assert _run(tmp_path, tiny_run, "--class-index", str(index), "--model-kwargs", "classes=10") == 0


def test_a_grey_model_on_grey_images(tmp_path, tiny_run, capsys):
    root = _folder(tmp_path / "grey", ["a", "b"], side=12, mode="L")
    argv = ["--channels", "1", "--mean", "0.5", "--std", "0.25", "--model-kwargs", "channels=1"]
    assert _run(tmp_path, root, *argv) == 0
    ws = open_workspace(
        _config(
            "--data-kind", "imagefolder", "--data-root", str(root), "--model", "tinymodel:make", *argv
        )
    )  # fmt: skip
    assert ws.data.preprocess == Preprocess(12, 12, (0.5,), (0.25,), channels=1)
    assert ws.images.load(np.array([0, 1])).shape == (2, 1, 12, 12)


def test_augmentations_and_materialised_images_keep_one_channel(tmp_path):
    from salbench.data.augmentations import PartnerPool, apply_variant, study_variants
    from salbench.data.images import save_array_images

    x, labels, ids = torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 0]), ["a", "b", "c"]
    pool = PartnerPool(tuple(ids), (0, 1, 0), lambda idx: x[idx])
    for variant in study_variants(16):
        out = apply_variant(variant, x, labels, ids, partner_pool=pool)
        assert out.images.shape[:2] == (3, 1), variant
    saved = save_array_images(tmp_path / "v", x.numpy(), ids, labels.numpy(), {})
    assert saved.load(np.array([2, 0])).shape == (2, 1, 16, 16)


def test_a_model_id_with_a_path_gets_a_folder_inside_the_output_root(tmp_path):
    """A ``path/to/file.py:factory`` id must neither escape the root (an absolute path) nor make nested
    folders or ':' in a name; the folder stays readable and differs for two files with one stem."""
    from salbench.store.layout import RunLayout, model_folder

    assert model_folder("embedded_resnet") == "embedded_resnet" and model_folder("resnet50") == "resnet50"
    absolute = RunLayout(tmp_path, "/elsewhere/models/tiny_cnn.py:make_model").model_dir
    relative = RunLayout(tmp_path, "examples/byo_model/tiny_cnn.py:make_model").model_dir
    for folder in (absolute, relative):
        assert folder.parent == tmp_path and folder.name.startswith("tiny_cnn.make_model-")
    assert absolute != relative
    assert model_folder("timm:vit_tiny_patch16_224").startswith("timm.vit_tiny_patch16_224-")
    assert ":" not in model_folder("pkg.module:Class.build") and "/" not in model_folder("..")
