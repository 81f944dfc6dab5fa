"""Command-line plumbing shared by the stage scripts: common flags, config resolution, error boundary.

Stage scripts are thin: ``build_parser()`` adds their own flags to :func:`common_parser`, and
``main(argv)`` is wrapped by :func:`entry` so user errors print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from salbench.config import LABEL_SETS, PROTOCOLS, Config, resolve_config
from salbench.errors import EXIT_USAGE, SalbenchError

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
    g.add_argument(
        "--max-batch", type=int, help="largest batch of (perturbed) inputs pushed through the model"
    )
    g.add_argument("--limit", type=int, help="only the first N listed images (0 = all)")
    g.add_argument("--seed", type=int, help="seed of every random draw")
    g.add_argument("--threads", type=int, help="CPU threads for torch (0 = torch default)")
    g.add_argument("--overwrite", action="store_true", default=None, help="recompute completed outputs")
    g.add_argument("--model", help="model id: embedded_resnet, embedded_vgg or a torchvision classifier")
    g.add_argument("--weights", help="torchvision weights enum member, e.g. IMAGENET1K_V1 (read offline)")
    g.add_argument("--checkpoint", help="local state-dict checkpoint (loaded with weights_only=True)")
    g.add_argument("--data-kind", choices=["embedded", "imagenet", "imagefolder"], help="data source kind")
    g.add_argument("--data-root", help="data root folder")
    g.add_argument("--list-csv", help="image list: 'relative/path,label' lines")
    g.add_argument("--annotations", help="folder of ILSVRC XML box files (<image stem>.xml)")
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
    "overwrite": ("run", "overwrite"),
    "model": ("model", "name"),
    "weights": ("model", "weights"),
    "checkpoint": ("model", "checkpoint"),
    "data_kind": ("data", "kind"),
    "data_root": ("data", "root"),
    "list_csv": ("data", "list_csv"),
    "annotations": ("data", "annotations"),
}


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Nested override mapping from the flags the user actually gave (None = not given)."""
    out: dict[str, dict[str, Any]] = {}
    for attr, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.setdefault(section, {})[key] = value
    label_set = getattr(args, "label_set", None)
    if label_set is not None:
        out.setdefault("run", {})["label_sets"] = list(LABEL_SETS) if label_set == ALL else [label_set]
    for name in ("batch_size", "max_batch", "limit", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name in ("limit", "threads") else 1):
            raise SalbenchError(
                f"--{name.replace('_', '-')} must be {'>= 0' if name in ('limit', 'threads') else '>= 1'}"
            )
    return out


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    """Resolve the frozen config: defaults < protocol preset < --config < ``extra`` < flags."""
    from salbench.config import deep_merge

    overrides = deep_merge(extra or {}, overrides_from_args(args))
    return resolve_config(args.config, overrides)


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def entry(fn: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a script's ``main``: user errors -> ``error: <one line>`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return fn(argv)
        except SalbenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted: completed work is kept; rerun to resume", file=sys.stderr)
            return 130

    return wrapper


@entry
def main(argv: list[str] | None = None) -> int:
    """``salbench`` console command: ``salbench export STORE OUT_DIR`` (one .npy per image)."""
    p = argparse.ArgumentParser(prog="salbench", description="salbench utilities")
    sub = p.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write one .npy per image from a map store (original study layout)")
    exp.add_argument("store", help="path of a <method>.zarr map store")
    exp.add_argument("out_dir", help="folder to write <image id>.npy files into")
    exp.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    from salbench.store.maps import export_npy

    n = export_npy(args.store, args.out_dir, overwrite=args.overwrite)
    print(f"wrote {n} maps to {args.out_dir}")
    return 0
