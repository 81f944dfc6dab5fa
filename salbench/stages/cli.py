"""Command-line plumbing: the common flags, config resolution, the error boundary and the commands.

Every stage is a :class:`Command` in :data:`COMMANDS` (registered by its stage module): the
``salbench`` console command runs them as subcommands (``salbench generate --method gradcam``), the
study's stage scripts are one-line wrappers (:func:`script`) and the pipeline calls them in order. A
command's ``main`` is wrapped by :func:`entry`, so user errors print one line and exit 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from salbench.config import LABEL_SETS, PROTOCOLS, Config, resolve_config
from salbench.errors import EXIT_USAGE, SalbenchError
from salbench.registry import Registry

ALL = "all"


def common_parser(description: str, label_sets: bool = True) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every stage takes (SPEC section 1)."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    g = p.add_argument_group("common options")
    g.add_argument("--config", help="YAML config; precedence: defaults < protocol preset < this file < flags")
    g.add_argument("--output-root", help="run output folder (default runs/embedded)")
    g.add_argument("--protocol", choices=PROTOCOLS, help="parameter preset (default acml2024)")
    if label_sets:
        g.add_argument(
            "--label-set",
            choices=[*LABEL_SETS, ALL],
            help="targets: ground truth, top-1 prediction, least likely",
        )
    g.add_argument("--device", choices=["cpu", "cuda", "auto"], help="compute device (default cpu)")
    g.add_argument("--batch-size", type=int, help="images per batch")
    g.add_argument("--max-batch", type=int, help="most (perturbed) inputs per model pass")
    g.add_argument("--limit", type=int, help="only the first N listed images (0 = all)")
    g.add_argument("--seed", type=int, help="seed of every random draw")
    g.add_argument("--threads", type=int, help="CPU threads for torch (0 = torch default)")
    precision = "autocast of re-inference metrics' and sampling methods' forward passes (default fp32)"
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help=precision)
    g.add_argument("--workers", type=int, help="image-decoding processes (-1: 0 on CPU, up to 8 on CUDA)")
    g.add_argument("--overwrite", action="store_true", default=None, help="recompute completed outputs")
    no_reuse = "compute every label set's maps and scores, also those of an earlier label set's target"
    g.add_argument("--no-reuse", dest="reuse", action="store_false", default=None, help=no_reuse)
    m = p.add_argument_group("model and its input ([key]: the config key a flag sets)")
    m.add_argument(
        "--model",
        help="classifier: embedded_resnet, embedded_vgg, a torchvision name (resnet50), timm:<name> "
        "(timm:vit_tiny_patch16_224), package.module:factory or path/to/file.py:factory",
    )
    m.add_argument(
        "--weights", help="torchvision weights, e.g. IMAGENET1K_V1 (read offline; clears a checkpoint)"
    )
    m.add_argument("--checkpoint", help="local state dict (weights_only=True; clears a config's weights)")
    m.add_argument(
        "--model-kwargs",
        nargs="+",
        metavar="KEY=VALUE",
        help="[model.kwargs] keyword arguments of the factory, timm.create_model or torchvision's "
        "builder, values read as YAML (img_size=32 drop_rate=0.1)",
    )
    m.add_argument("--num-classes", type=int, help="[model.num_classes] the model's number of outputs")
    m.add_argument("--target-layer", help="[model.target_layer] module path of the CAM/IBA layer: layer4[-1]")
    m.add_argument("--data-kind", choices=["embedded", "imagenet", "imagefolder"], help="data source kind")
    m.add_argument("--data-root", help="data root folder")
    m.add_argument("--list-csv", help="image list: 'relative/path,label' lines (a header line is skipped)")
    m.add_argument("--annotations", help="folder of ILSVRC XML box files (<image stem>.xml)")
    m.add_argument(
        "--class-index", help="[data.class_index] imagefolder: 'folder,index' lines or a JSON object"
    )
    m.add_argument("--channels", type=int, choices=[1, 3], help="[data.channels] 3: RGB, 1: grey")
    m.add_argument("--input-size", type=int, help="[data.crop] side of the centre crop the model sees")
    m.add_argument("--resize-size", type=int, help="[data.resize] side of the square resize before it")
    m.add_argument("--mean", type=float, nargs="+", metavar="M", help="[data.mean] one per channel")
    m.add_argument("--std", type=float, nargs="+", metavar="S", help="[data.std] one per channel")
    g.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bars on stderr (auto: on a terminal only)",
    )
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


_FLAG_KEYS: dict[str, tuple[str, str]] = {
    "output_root": ("run", "output_root"),
    "protocol": ("run", "protocol"),
    "device": ("run", "device"),
    "batch_size": ("run", "batch_size"),
    "max_batch": ("run", "max_batch"),
    "limit": ("run", "limit"),
    "seed": ("run", "seed"),
    "threads": ("run", "threads"),
    "precision": ("run", "precision"),
    "workers": ("run", "workers"),
    "overwrite": ("run", "overwrite"),
    "reuse": ("run", "reuse"),
    "model": ("model", "name"),
    "weights": ("model", "weights"),
    "checkpoint": ("model", "checkpoint"),
    "model_kwargs": ("model", "kwargs"),
    "num_classes": ("model", "num_classes"),
    "target_layer": ("model", "target_layer"),
    "data_kind": ("data", "kind"),
    "data_root": ("data", "root"),
    "list_csv": ("data", "list_csv"),
    "annotations": ("data", "annotations"),
    "class_index": ("data", "class_index"),
    "channels": ("data", "channels"),
    "input_size": ("data", "crop"),
    "resize_size": ("data", "resize"),
    "mean": ("data", "mean"),
    "std": ("data", "std"),
}
"""Flag (argparse dest) -> (config section, key): a flag the user gave overrides that key."""

_POSITIVE = ("batch_size", "max_batch", "num_classes", "input_size", "resize_size")
"""Integer flags that must be >= 1 (0 would mean 'not given' in the config)."""


def parse_kwargs(items: list[str], flag: str = "--model-kwargs") -> dict[str, Any]:
    """``['img_size=32', 'drop_rate=0.1']`` -> ``{'img_size': 32, 'drop_rate': 0.1}`` (values read as YAML).

    Raises:
        SalbenchError: an item without ``=`` or a key, a value that is not YAML, a key given twice.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SalbenchError(f"{flag} {item!r}: expected KEY=VALUE with KEY a Python identifier")
        if key in out:
            raise SalbenchError(f"{flag}: {key!r} is given twice")
        try:
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise SalbenchError(f"{flag} {item!r}: the value is not a YAML value") from None
    return out


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Nested override mapping from the flags the user actually gave (None = not given)."""
    out: dict[str, dict[str, Any]] = {}
    for attr, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if attr == "model_kwargs" and value is not None:
            value = parse_kwargs(value)
        if value is not None:
            out.setdefault(section, {})[key] = value
    model = out.get("model", {})
    # torchvision weights and a local checkpoint exclude each other: the one given as a flag replaces
    # the other from the config (a preset's weights, a --checkpoint of one's own)
    if "checkpoint" in model and "weights" not in model:
        model["weights"] = ""
    elif "weights" in model and "checkpoint" not in model:
        model["checkpoint"] = ""
    label_set = getattr(args, "label_set", None)
    if label_set is not None:
        out.setdefault("run", {})["label_sets"] = list(LABEL_SETS) if label_set == ALL else [label_set]
    lowest = {**dict.fromkeys(_POSITIVE, 1), "limit": 0, "threads": 0, "workers": -1}
    for name, low in lowest.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise SalbenchError(f"--{name.replace('_', '-')} must be >= {low}")
    return out


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    """Resolve the frozen config: defaults < protocol preset < --config < ``extra`` < flags."""
    from salbench.config import deep_merge

    overrides = deep_merge(extra or {}, overrides_from_args(args))
    return resolve_config(args.config, overrides)


def configure_progress(args: argparse.Namespace) -> None:
    """``--progress on|off`` -> ``SALBENCH_PROGRESS`` (read by :mod:`salbench.progress`); auto: unchanged."""
    choice = getattr(args, "progress", "auto")
    if choice != "auto":
        os.environ["SALBENCH_PROGRESS"] = "1" if choice == "on" else "0"


def configure_logging(verbose: bool = False, rank: int = 0) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``); ranks other than 0 of a ``torchrun`` group log
    warnings and errors only, so that a run of N processes logs its progress once."""
    logging.basicConfig(
        level=logging.WARNING if rank else logging.DEBUG if verbose else logging.INFO,
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def entry(fn: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a script's ``main``: user errors -> ``error: <one line>`` on stderr and exit code 2.

    A file-system error (a read-only folder, a full disk, a file where a folder is expected) is a user
    error too: completed work is on disk already (every output is written atomically), so the message
    says so.
    """

    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return fn(argv)
        except SalbenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            where = f" {str(exc.filename)!r}" if exc.filename else ""
            what = exc.strerror or type(exc).__name__
            print(f"error: cannot write or read{where}: {what}; completed work is kept", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted: completed work is kept; rerun to resume", file=sys.stderr)
            return 130

    return wrapper


Options = Mapping[str, Any]
"""What a script fixes for its command, e.g. the methods of one family or the evaluation kind."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One stage on the command line.

    Attributes:
        name: subcommand of the ``salbench`` console command.
        help: one line for ``salbench --help``.
        add_arguments: ``add_arguments(parser, options)`` adds the command's own flags.
        run: ``run(args, options) -> exit code``: config -> workspace -> stage function -> summary.
        common: takes the common flags (:func:`common_parser`).
        label_sets: takes ``--label-set``.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser, Options], None]
    run: Callable[[argparse.Namespace, Options], int]
    common: bool = True
    label_sets: bool = True

    def parser(self, options: Options | None = None, description: str = "", prog: str | None = None):
        """The command's ArgumentParser (common flags first when it takes them)."""
        text = description or self.help
        if self.common:
            p = common_parser(text, self.label_sets)
        else:
            p = argparse.ArgumentParser(
                description=text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
            )
        if prog:
            p.prog = prog
        self.add_arguments(p, options or {})
        return p

    def main(
        self, argv: list[str] | None = None, options: Options | None = None, prog: str | None = None
    ) -> int:
        """Parse ``argv`` and run; user errors -> one ``error:`` line and exit code 2."""

        def run(argv: list[str] | None) -> int:
            args = self.parser(options, prog=prog).parse_args(argv)
            configure_progress(args)
            return self.run(args, options or {})

        return entry(run)(argv)


COMMANDS: Registry[Command] = Registry("command")
ORDER = (
    "run",
    "plan",
    "explain",
    "train",
    "train-casme",
    "diagnostics",
    "generate",
    "evaluate",
    "augment",
    "report",
    "sanity",
    "roar",
    "verify",
    "export",
)
"""How ``salbench --help`` lists the commands: the pipeline, its stages in order, then the extras."""


def register(command: Command) -> Command:
    """Add ``command`` to :data:`COMMANDS` (stage modules call it at import)."""
    return COMMANDS.register(command.name)(command)


def load_commands() -> Registry[Command]:
    """Import every stage module, so that each registers its command; returns :data:`COMMANDS`."""
    from salbench.stages import (  # noqa: F401  (registration)
        augmented,
        diagnostics,
        embedded,
        evaluate,
        explain,
        generate,
        pipeline,
        plan,
        report,
        retraining,
        sanity,
        submit,
    )

    return COMMANDS


def script(name: str, doc: str, **options: Any) -> tuple[Callable[[], argparse.ArgumentParser], Callable]:
    """``(build_parser, main)`` of a stage script: command ``name`` with ``options`` fixed, described by
    the first line of the script's docstring."""
    command = load_commands().get(name)

    def build_parser() -> argparse.ArgumentParser:
        return command.parser(options, doc.splitlines()[0])

    def main(argv: list[str] | None = None) -> int:
        return command.main(argv, options)

    return build_parser, main


def _export_arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("store", help="path of a <method>.zarr map store")
    p.add_argument("out_dir", help="folder to write <image id>.npy files into")
    p.add_argument("--overwrite", action="store_true", help="rewrite .npy files that already exist")


def _export(args: argparse.Namespace, options: Options) -> int:
    from salbench.store.export import export_npy

    n = export_npy(args.store, args.out_dir, overwrite=args.overwrite)
    print(f"wrote {n} maps to {args.out_dir}")
    return 0


def _verify_arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("stores", nargs="*", help="map stores to check (default: every store of the run)")


def _verify(args: argparse.Namespace, options: Options) -> int:
    from salbench.store.layout import RunLayout
    from salbench.store.maps import MapStore

    configure_logging(args.verbose)
    cfg = config_from_args(args)
    folder = RunLayout.from_config(cfg).model_dir
    stores = [Path(s) for s in args.stores] or sorted(folder.rglob("*.zarr"))
    if not stores:
        raise SalbenchError(f"no map store under {folder}; nothing to verify")
    total = 0
    for path in stores:
        reset = MapStore.open_existing(path).verify()
        total += reset
        print(f"{path}: {'ok' if not reset else f'{reset} rows reset to pending; rerun generation'}")
    print(f"{len(stores)} stores checked, {total} rows reset")
    return 0


register(
    Command(
        "verify",
        "check every chunk of the map stores; reset damaged or missing ones so generation redoes them",
        _verify_arguments,
        _verify,
        label_sets=False,
    )
)
register(
    Command(
        "export",
        "write one <image id>.npy per image from a map store (the original study's layout)",
        _export_arguments,
        _export,
        common=False,
    )
)


@entry
def main(argv: list[str] | None = None) -> int:
    """``salbench <command> ...``: every stage of the pipeline from the installed package."""
    commands = load_commands()
    p = argparse.ArgumentParser(
        prog="salbench", description="Saliency maps and their evaluation, stage by stage."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    order = [c for c in ORDER if c in commands] + [c for c in commands.names() if c not in ORDER]
    for name in order:
        sub.add_parser(name, help=commands.get(name).help, add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        p.parse_args(argv)  # prints help or the usage error
        return EXIT_USAGE
    return commands.get(argv[0]).main(argv[1:], {}, prog=f"salbench {argv[0]}")
