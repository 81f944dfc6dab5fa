"""Every bad input is one ``error:`` line naming what is wrong, exit code 2, no traceback.

Each case runs a command in-process (``salbench <command> ...`` as a user types it) or a library call on
a tiny run (six images, a random 1000-class embedded ResNet). The table of cases and the messages they
produce is ``docs/bad_inputs.md``; this test checks it is current. After changing a message, rewrite it
with ``SALBENCH_WRITE_DOCS=1 bash sh_scripts/run_tests.sh tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from salbench.errors import SalbenchError
from salbench.models.embedded import EmbeddedResNet, EmbeddedVGG
from salbench.stages.cli import main as salbench
from tests.conftest import make_imagenet, write_stage_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


@dataclasses.dataclass(frozen=True)
class Case:
    """A bad input: ``run(base)`` returns the exit code (commands) or raises (library calls)."""

    area: str
    what: str
    run: Callable[[Path], object]
    expect: str


def _cfg(base: Path, text: str) -> str:
    """A config file holding the tiny run's config plus ``text`` (later keys of a section win)."""
    path = base / f"cfg_{zlib.crc32(text.encode())}.yaml"
    path.write_text((base / "c.yaml").read_text() + text)
    return str(path)


def _cmd(*argv: str, config: str | None = None) -> Callable[[Path], int]:
    def run(base: Path) -> int:
        args = [a.replace("<base>", str(base)) for a in argv]
        cfg = (
            ["--config", str(base / "c.yaml")]
            if config is None
            else ["--config", config.replace("<base>", str(base))]
        )
        return salbench([args[0], *cfg, *args[1:]])

    return run


def _with_cfg(command: str, text: str, *argv: str) -> Callable[[Path], int]:
    return lambda base: salbench([command, "--config", _cfg(base, text), *argv])


def _file(name: str, content: bytes | str, command: str, flag: str, *argv: str) -> Callable[[Path], int]:
    def run(base: Path) -> int:
        path = base / "bad" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return salbench([command, "--config", str(base / "c.yaml"), flag, str(path), *argv])

    return run


def _checkpoint(make: Callable[[Path], object], command: str = "diagnostics") -> Callable[[Path], int]:
    def run(base: Path) -> int:
        path = base / "bad" / "model.pt"
        path.parent.mkdir(exist_ok=True)
        make(path)
        return salbench([command, "--config", str(base / "c.yaml"), "--checkpoint", str(path)])

    return run


def _nan_weights(path: Path) -> None:
    state = EmbeddedResNet(num_classes=1000).state_dict()
    state["fc.bias"][3] = float("inf")
    torch.save({"state_dict": state, "meta": {"num_classes": 1000}}, path)


def _evil(path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo never",))

    torch.save({"state_dict": {"w": Evil()}}, path)


def _list(lines: bytes | str, *argv: str) -> Callable[[Path], int]:
    """Diagnostics on a list file holding ``lines`` (``<img>`` = the first fixture image)."""

    def run(base: Path) -> int:
        data = lines if isinstance(lines, bytes) else lines.encode()
        (base / "imagenet" / "bad_list.csv").write_bytes(
            data.replace(b"<img>", b"val/ILSVRC2012_val_00000001.png")
        )
        cfg = base / "bad" / "list.yaml"
        cfg.write_text(
            (base / "c.yaml").read_text().replace("list_csv: val_list.csv", "list_csv: bad_list.csv")
        )
        return salbench(["diagnostics", "--config", str(cfg), "--output-root", str(base / "list_out"), *argv])

    return run


def _folder(classes: list[str], *argv: str) -> Callable[[Path], int]:
    """Diagnostics on an image folder of one image per class (a copy of a fixture image)."""

    def run(base: Path) -> int:
        root = base / "folders" / "_".join(classes)  # not under bad/: a case needs it without folders
        for name in classes:
            (root / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(base / "imagenet" / "val" / "ILSVRC2012_val_00000001.png", root / name / "x.png")
        args = [a.replace("<base>", str(base)) for a in argv]
        flags = ["--data-kind", "imagefolder", "--data-root", str(root), "--annotations", ""]
        return salbench(["diagnostics", "--config", str(base / "c.yaml"), *flags, *args])

    return run


def _image(content: bytes) -> Callable[[Path], int]:
    def run(base: Path) -> int:
        img = base / "imagenet" / "val" / "ILSVRC2012_val_00000001.png"
        original = img.read_bytes()
        img.write_bytes(content)
        try:
            return salbench(
                ["diagnostics", "--config", str(base / "c.yaml"), "--output-root", str(base / "img_out")]
            )
        finally:
            img.write_bytes(original)

    return run


def _box(xml: str) -> Callable[[Path], int]:
    def run(base: Path) -> int:
        box = base / "imagenet" / "boxes" / "ILSVRC2012_val_00000002.xml"
        original = box.read_text()
        box.write_text(xml)
        try:
            return salbench(
                [
                    "evaluate",
                    "localization",
                    "--config",
                    str(base / "c.yaml"),
                    "--method",
                    "gradcam",
                    "--overwrite",
                ]
            )
        finally:
            box.write_text(original)

    return run


def _copied_store(base: Path) -> int:
    maps = base / "out" / "embedded_resnet" / "maps" / "groundtruth"
    shutil.rmtree(maps / "random.zarr", ignore_errors=True)
    shutil.copytree(maps / "gradcam.zarr", maps / "random.zarr")
    try:
        return salbench(["evaluate", "recognition", "--config", str(base / "c.yaml"), "--method", "random"])
    finally:
        shutil.rmtree(maps / "random.zarr")


def _deleted_chunk(base: Path) -> int:
    work = base / "chunk_out"
    shutil.copytree(base / "out", work, dirs_exist_ok=True)
    store = work / "embedded_resnet" / "maps" / "groundtruth" / "gradcam.zarr"
    next(p for p in (store / "maps").rglob("*") if p.is_file() and p.name != "zarr.json").unlink()
    return salbench(
        [
            "evaluate",
            "recognition",
            "--config",
            str(base / "c.yaml"),
            "--output-root",
            str(work),
            "--method",
            "gradcam",
        ]
    )


def _results(content: str, command: str = "evaluate", *argv: str) -> Callable[[Path], int]:
    def run(base: Path) -> int:
        work = base / f"results_out_{zlib.crc32(content.encode())}"
        shutil.copytree(base / "out", work, dirs_exist_ok=True)
        (work / "results.csv").write_text(content)
        extra = ["recognition", "--method", "gradcam", "--overwrite"] if command == "evaluate" else []
        return salbench(
            [command, "--config", str(base / "c.yaml"), "--output-root", str(work), *extra, *argv]
        )

    return run


HEADER = (
    "model,dataset,label_set,method,augmentation,variant,metric,value,n_images,n_skipped,"
    "higher_is_better,protocol\n"
)
ROW = "embedded_resnet,imagenet,groundtruth,gradcam,none,,insertion,{v},6,0,True,acml2024\n"


def _api(call: Callable[[], object]) -> Callable[[Path], object]:
    return lambda base: call()


def _metric(config: dict, model: bool = True, **extras) -> Callable[[], object]:
    def call() -> object:
        from salbench.api import build_metric

        m = build_metric(config, model=EmbeddedResNet(num_classes=10).eval() if model else None)
        x = torch.zeros(2, 3, 32, 32)
        return m.evaluate_batch(x, torch.rand(2, 32, 32), torch.tensor([1, extras.get("t", 5)]))

    return call


def _method(targets: list[int], images: torch.Tensor | None = None) -> Callable[[], object]:
    def call() -> object:
        from salbench.methods import METHODS, MethodContext

        cls = METHODS.get("gradient")
        x = torch.zeros(len(targets), 3, 32, 32) if images is None else images
        return cls(EmbeddedVGG(num_classes=10).eval(), MethodContext(num_classes=10))(
            x, torch.tensor(targets)
        )

    return call


CASES = [
    # command-line flags
    Case("flags", "--batch-size 0", _cmd("diagnostics", "--batch-size", "0"), "--batch-size must be >= 1"),
    Case("flags", "--max-batch -1", _cmd("diagnostics", "--max-batch", "-1"), "--max-batch must be >= 1"),
    Case("flags", "--limit -5", _cmd("diagnostics", "--limit", "-5"), "--limit must be >= 0"),
    Case("flags", "--threads -1", _cmd("diagnostics", "--threads", "-1"), "--threads must be >= 0"),
    Case("flags", "--device tpu", _cmd("diagnostics", "--device", "tpu"), "invalid choice: 'tpu'"),
    Case("flags", "--workers -2", _cmd("diagnostics", "--workers", "-2"), "--workers must be >= -1"),
    Case("flags", "--precision fp8", _cmd("evaluate", "--precision", "fp8"), "invalid choice: 'fp8'"),
    Case("flags", "--protocol paper", _cmd("generate", "--protocol", "paper"), "invalid choice: 'paper'"),
    Case("flags", "--label-set worst", _cmd("generate", "--label-set", "worst"), "invalid choice: 'worst'"),
    Case(
        "flags",
        "--method nosuch (generate)",
        _cmd("generate", "--method", "nosuch"),
        "invalid choice: 'nosuch'",
    ),
    Case("flags", "unknown command", lambda base: salbench(["explode"]), "invalid choice: 'explode'"),
    Case("flags", "--model nosuch", _cmd("diagnostics", "--model", "nosuch"), "unknown model 'nosuch'"),
    Case(
        "flags",
        "--weights on an embedded model",
        _cmd("diagnostics", "--weights", "IMAGENET1K_V1"),
        "has no torchvision weights",
    ),
    Case(
        "flags",
        "--output-root is a file",
        _cmd("diagnostics", "--output-root", "<base>/c.yaml"),
        "exists and is not a folder",
    ),
    Case("flags", "train on ImageNet data", _cmd("train"), "trains on the embedded benchmark only"),
    Case("flags", "train --epochs 0", _cmd("train", "--epochs", "0"), "--epochs must be >= 1"),
    Case("flags", "augment --n-images -1", _cmd("augment", "--n-images", "-1"), "--n-images must be >= 0"),
    Case(
        "flags",
        "augment --variant nosuch",
        _cmd("augment", "--variant", "nosuch"),
        "--variant 'nosuch' unknown",
    ),
    Case(
        "flags", "sanity --threshold 2", _cmd("sanity", "--threshold", "2"), "--threshold must be in [-1, 1]"
    ),
    Case(
        "flags",
        "sanity --variant data on ImageNet",
        _cmd("sanity", "--variant", "data"),
        "needs data.kind embedded",
    ),
    Case("flags", "roar on ImageNet data", _cmd("roar"), "it needs data.kind embedded"),
    # the model input
    Case(
        "input",
        "--mean with one value for 3 channels",
        _cmd("diagnostics", "--mean", "0.5"),
        "'data.mean' (--mean) has 1 value(s) [0.5] but 'data.channels' (--channels) is 3",
    ),
    Case(
        "input",
        "--channels 1 without --mean/--std",
        _cmd("diagnostics", "--channels", "1"),
        "'data.channels' (--channels) is 1 and 'data.mean' (--mean) is not given",
    ),
    Case(
        "input",
        "--channels 1 for an RGB model",
        _cmd("diagnostics", "--channels", "1", "--mean", "0.5", "--std", "0.25"),
        "takes 3-channel input (its first convolution 'conv1' has in_channels 3)",
    ),
    Case(
        "input",
        "--input-size larger than the resize",
        _cmd("diagnostics", "--input-size", "96"),
        "'data.crop' (--input-size) is 96, larger than 'data.resize' (--resize-size) 72",
    ),
    Case(
        "input",
        "--model-kwargs without '='",
        _cmd("diagnostics", "--model-kwargs", "width"),
        "--model-kwargs 'width': expected KEY=VALUE",
    ),
    Case(
        "input",
        "--num-classes below the labels",
        _cmd("diagnostics", "--model", "resnet18", "--checkpoint", "", "--num-classes", "5"),
        "label 7 of image 'val/ILSVRC2012_val_00000002' is not a class of model 'resnet18' (5 outputs)",
    ),
    Case(
        "input",
        "--class-index on list data",
        _cmd("diagnostics", "--class-index", "<base>/c.yaml"),
        "needs data.kind imagefolder",
    ),
    Case(
        "input",
        "2 class folders, 1000 outputs",
        _folder(["cat", "dog"]),
        "has 2 class folders but model 'embedded_resnet' has 1000 outputs: give 'data.class_index'",
    ),
    Case(
        "input",
        "class index without a folder",
        _folder(["cat", "dog"], "--class-index", "<base>/bad/index.csv"),
        "does not name class folder 'dog'",
    ),
    Case(
        "input",
        "class index beyond the outputs",
        _folder(["cat"], "--class-index", "<base>/bad/index.csv"),
        "maps class folder 'cat' to 1000, not an output of model 'embedded_resnet' (1000 outputs)",
    ),
    # config files
    Case("config", "missing config file", _cmd("diagnostics", config="<base>/nope.yaml"), "does not exist"),
    Case(
        "config", "not YAML", _file("x.yaml", "run: [a, b\n", "diagnostics", "--config"), "is not valid YAML"
    ),
    Case(
        "config",
        "a list, not a mapping",
        _file("l.yaml", "- run\n", "diagnostics", "--config"),
        "must hold a mapping",
    ),
    Case(
        "config",
        "Latin-1 config file",
        _file("e.yaml", b"# caf\xe9\n", "diagnostics", "--config"),
        "cannot be read as UTF-8",
    ),
    Case(
        "config",
        "duplicate YAML key",
        _file("d.yaml", "run: {}\nrun: {}\n", "diagnostics", "--config"),
        "key 'run' is given twice",
    ),
    Case(
        "config", "unknown section", _with_cfg("diagnostics", "nosuch: {}\n"), "unknown config key 'nosuch'"
    ),
    Case(
        "config",
        "run.batch_size: 0",
        _file("b.yaml", "run: {batch_size: 0}\n", "diagnostics", "--config"),
        "'run.batch_size' must be >= 1",
    ),
    Case(
        "config",
        "run.limit: -5",
        _file("m.yaml", "run: {limit: -5}\n", "diagnostics", "--config"),
        "'run.limit' must be >= 0",
    ),
    Case(
        "config",
        "run.batch_size: a",
        _file("a.yaml", "run: {batch_size: a}\n", "diagnostics", "--config"),
        "expected an integer, got 'a'",
    ),
    Case(
        "config",
        "run.protocol: paper",
        _file("p.yaml", "run: {protocol: paper}\n", "diagnostics", "--config"),
        "'paper' is not one of",
    ),
    Case(
        "config",
        "run.foo",
        _file("f.yaml", "run: {foo: 1}\n", "diagnostics", "--config"),
        "unknown config key 'run.foo'",
    ),
    Case(
        "config",
        "methods.nosuch",
        _with_cfg("diagnostics", "methods: {nosuch: {}}\n"),
        "unknown config section 'methods.nosuch'",
    ),
    Case(
        "config",
        "methods.rise.foo",
        _with_cfg("diagnostics", "methods: {rise: {foo: 1}}\n"),
        "unknown parameter 'foo' for method 'rise'",
    ),
    Case(
        "config",
        "methods.rise.n_masks: a",
        _with_cfg("diagnostics", "methods: {rise: {n_masks: a}}\n"),
        "'n_masks' of method 'rise': expected an integer",
    ),
    Case(
        "config",
        "methods.gradient.deprocess: x",
        _with_cfg("diagnostics", "methods: {gradient: {deprocess: x}}\n"),
        "'x' is not one of",
    ),
    Case(
        "config",
        "metrics.nosuch",
        _with_cfg("diagnostics", "metrics: {nosuch: {}}\n"),
        "unknown config section 'metrics.nosuch'",
    ),
    Case(
        "config",
        "metrics.recognition.foo",
        _with_cfg("diagnostics", "metrics: {recognition: {foo: 1}}\n"),
        "unknown config key 'metrics.recognition.foo'",
    ),
    Case(
        "config",
        "metrics.recognition.substrate: x",
        _with_cfg("evaluate", "metrics: {recognition: {substrate: x}}\n", "recognition"),
        "'x' is not one of",
    ),
    Case(
        "config",
        "metrics.recognition.step: a",
        _with_cfg("evaluate", "metrics: {recognition: {step: a}}\n", "recognition"),
        "expected an integer or null, got 'a'",
    ),
    Case(
        "config",
        "augmentations.foo",
        _with_cfg("augment", "augmentations: {foo: 1}\n"),
        "unknown config key 'augmentations.foo'",
    ),
    # checkpoints
    Case(
        "checkpoint",
        "missing checkpoint",
        _cmd("diagnostics", "--checkpoint", "<base>/none.pt"),
        "does not exist",
    ),
    Case(
        "checkpoint",
        "not a checkpoint",
        _checkpoint(lambda p: p.write_text("hello")),
        "cannot be loaded safely",
    ),
    Case("checkpoint", "malicious pickle", _checkpoint(_evil), "would run the Python object"),
    Case(
        "checkpoint",
        "another architecture",
        _checkpoint(lambda p: torch.save(EmbeddedVGG(num_classes=1000).state_dict(), p)),
        "does not fit model EmbeddedResNet",
    ),
    Case("checkpoint", "NaN/inf weights", _checkpoint(_nan_weights), "values of 'fc.bias' are NaN or inf"),
    Case(
        "checkpoint",
        "10 classes, labels up to 35",
        _checkpoint(
            lambda p: torch.save(
                {"state_dict": EmbeddedResNet(num_classes=10).state_dict(), "meta": {"num_classes": 10}}, p
            )
        ),
        "is not a class of model 'embedded_resnet' (10 outputs)",
    ),
    Case(
        "checkpoint",
        "a tensor list, no state dict",
        _checkpoint(lambda p: torch.save([torch.zeros(1)], p)),
        "does not hold a state dict",
    ),
    # data
    Case(
        "data",
        "missing data root",
        _cmd("diagnostics", "--data-root", "<base>/none"),
        "does not exist or is not a folder",
    ),
    Case("data", "missing image list", _cmd("diagnostics", "--list-csv", "none.csv"), "does not exist"),
    Case("data", "malformed list line", _list("<img>\n"), "expected 'relative/path,label'"),
    Case("data", "label not an integer", _list("<img>,cat\n"), "label 'cat' is not an integer"),
    Case("data", "negative label", _list("<img>,-1\n"), "label -1 out of range"),
    Case("data", "label out of range", _list("<img>,1000\n"), "label 1000 out of range"),
    Case("data", "absolute path in the list", _list("/etc/passwd,1\n"), "must be relative to the data root"),
    Case("data", "missing image file", _list("val/none.png,1\n"), "does not exist"),
    Case("data", "image listed twice", _list("<img>,1\n<img>,2\n"), "listed twice"),
    Case("data", "a list holding only a header", _list("path,label\n"), "lists no images"),
    Case("data", "Latin-1 list file", _list(b"val/caf\xe9.png,1\n"), "is not UTF-8"),
    Case("data", "unreadable image", _image(b"not an image"), "cannot be read"),
    Case(
        "data",
        "truncated image",
        lambda base: _image((base / "imagenet" / "val" / "ILSVRC2012_val_00000003.png").read_bytes()[:200])(
            base
        ),
        "cannot be read",
    ),
    Case("data", "malformed box XML", _box("<annotation><object>"), "ILSVRC2012_val_00000002.xml"),
    Case(
        "data",
        "box outside the image",
        _box(
            "<annotation><size><width>88</width><height>64</height></size><object><bndbox><xmin>200"
            "</xmin><ymin>1</ymin><xmax>300</xmax><ymax>9</ymax></bndbox></object></annotation>"
        ),
        "lies outside the 88x64 image",
    ),
    Case(
        "data",
        "empty ImageFolder",
        lambda base: salbench(
            [
                "diagnostics",
                "--config",
                str(base / "c.yaml"),
                "--data-kind",
                "imagefolder",
                "--data-root",
                str(base / "bad"),
            ]
        ),
        "has no class sub-folders",
    ),
    # stores and results
    Case(
        "stores",
        "evaluate --method nosuch",
        _cmd("evaluate", "recognition", "--method", "nosuch"),
        "nothing to evaluate",
    ),
    Case(
        "stores",
        "a store holding another method's maps",
        _copied_store,
        "made for method 'gradcam', this run has 'random'",
    ),
    Case("stores", "a deleted chunk", _deleted_chunk, "read as missing maps"),
    Case(
        "stores",
        "maps of another protocol",
        _cmd("evaluate", "recognition", "--protocol", "reference"),
        "made for protocol 'acml2024'",
    ),
    Case(
        "stores",
        "regenerating maps with another seed",
        _cmd("generate", "--method", "gradcam", "--seed", "5"),
        "attrs differ from the stored ones in ['seed']",
    ),
    Case(
        "stores",
        "export to an existing file",
        lambda base: salbench(
            [
                "export",
                str(base / "out" / "embedded_resnet" / "maps" / "groundtruth" / "gradcam.zarr"),
                str(base / "c.yaml"),
            ]
        ),
        "exists and is not a folder",
    ),
    Case(
        "stores",
        "export of a missing store",
        lambda base: salbench(["export", str(base / "none.zarr"), str(base / "x")]),
        "not found",
    ),
    Case(
        "stores", "verify an empty run", _cmd("verify", "--output-root", "<base>/empty"), "no map store under"
    ),
    Case(
        "results",
        "results.csv value not a number",
        _results(HEADER + ROW.format(v="abc")),
        "column 'value' is not a number",
    ),
    Case(
        "results",
        "results.csv with a duplicate row",
        _results(HEADER + ROW.format(v=0.1) + ROW.format(v=0.2)),
        "a second row for the same result",
    ),
    Case("results", "results.csv missing a column", _results("model,value\nx,1\n"), "missing column(s)"),
    Case(
        "results",
        "report without results",
        _cmd("report", "--output-root", "<base>/empty"),
        "not found (run the evaluation stages first)",
    ),
    # library API
    Case(
        "api",
        "build_metric step='a'",
        _api(lambda: _metric({"type": "insertion", "step": "a"})()),
        "'step' of metric 'insertion': expected an integer or null",
    ),
    Case(
        "api",
        "build_metric unknown type",
        _api(lambda: _metric({"type": "nosuch"})()),
        "unknown metric type 'nosuch'",
    ),
    Case(
        "api",
        "build_metric unknown parameter",
        _api(lambda: _metric({"type": "insertion", "foo": 1})()),
        "unknown parameter 'foo' for metric 'insertion'",
    ),
    Case(
        "api",
        "metric target out of range",
        _api(_metric({"type": "insertion"}, t=12)),
        "class 12 is out of range for a model with 10 outputs",
    ),
    Case(
        "api",
        "metric without a model",
        _api(_metric({"type": "insertion"}, model=False)),
        "re-runs the model; pass model=",
    ),
    Case(
        "api",
        "localization without boxes",
        _api(lambda: _metric({"type": "energy_pointing_game"}, model=False)()),
        "needs boxes=",
    ),
    Case(
        "api", "method target out of range", _api(_method([1, 10])), "target class 10 is out of range [0, 10)"
    ),
    Case(
        "api",
        "method images without a batch axis",
        _api(_method([1], torch.zeros(3, 32, 32))),
        "images must be a float tensor (N,C,H,W)",
    ),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The tiny run every case starts from: diagnostics and the gradcam/fakecam maps are complete."""
    root = tmp_path_factory.mktemp("bad")
    write_stage_config(root, make_imagenet(root), "groundtruth")
    c = ["--config", str(root / "c.yaml")]
    assert salbench(["diagnostics", *c]) == 0
    assert salbench(["generate", *c, "--method", "fakecam", "gradcam"]) == 0
    (root / "bad").mkdir(exist_ok=True)
    (root / "bad" / "index.csv").write_text("folder,index\ncat,1000\n")
    (root / "empty").mkdir(exist_ok=True)
    return root


def _outcome(case: Case, base: Path, capsys) -> str:
    capsys.readouterr()
    try:
        code = case.run(base)
    except SystemExit as exc:  # argparse
        code = exc.code
    except SalbenchError as exc:  # library calls
        return f"{type(exc).__name__}: {exc}"
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    if "Traceback" in err or code != 2 or len(errors) != 1:
        return f"NOT ONE LINE (exit {code}): {err.strip().splitlines()[-1:]!r}"
    return errors[0][errors[0].index("error:") :]


def test_every_bad_input_is_one_line(base, capsys):
    lines = [
        "# Bad inputs and their messages",
        "",
        "Generated by `tests/test_bad_inputs.py` (which runs every case and checks this file is current).",
        "Each command exits with code 2 and prints exactly one `error:` line, never a traceback; library",
        "calls raise a `SalbenchError` subclass with the same kind of message. `<run>` is the run's folder.",
        "",
        "| # | area | bad input | message |",
        "|--:|:--|:--|:--|",
    ]
    failures = []
    for i, case in enumerate(CASES, start=1):
        message = _outcome(case, base, capsys)
        if case.expect not in message:
            failures.append(f"{case.what}: expected {case.expect!r} in {message!r}")
        shown = re.sub(r"\s+", " ", message.replace(str(base), "<run>")).replace("|", "\\|")
        lines.append(f"| {i} | {case.area} | {case.what} | `{shown}` |")
    assert not failures, "\n".join(failures)
    assert len(CASES) >= 60
    text = "\n".join(lines) + "\n"
    if os.environ.get("SALBENCH_WRITE_DOCS") == "1":
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, "docs/bad_inputs.md is out of date (see module doc)"
