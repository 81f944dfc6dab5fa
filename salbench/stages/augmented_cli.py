"""Shared command line of the augmented-image scripts (generate and evaluate)."""

from __future__ import annotations

import argparse

from salbench.data.augmentations import AUGMENTATIONS
from salbench.stages.cli import common_parser, config_from_args, configure_logging
from salbench.stages.workspace import Workspace, open_workspace


def augmented_parser(description: str) -> argparse.ArgumentParser:
    p = common_parser(description)
    p.add_argument(
        "--augmentation", nargs="+", choices=AUGMENTATIONS.names(), help="augmentations (default all)"
    )
    p.add_argument("--variant", nargs="+", help="variant names, e.g. mixup_32 resize_64 (default all)")
    p.add_argument("--method", nargs="+", help="methods (default: the study's ten of its Table 4)")
    p.add_argument("--n-images", type=int, help="images transformed per variant (0 = all listed images)")
    return p


def augmented_workspace(args: argparse.Namespace) -> tuple[Workspace, dict]:
    """Workspace of the base images (label sets default to ground truth) and the resolved settings."""
    from salbench.stages.augmented import settings

    configure_logging(args.verbose)
    extra = {} if args.label_set else {"run": {"label_sets": ["groundtruth"]}}
    ws = open_workspace(config_from_args(args, extra))
    opts = settings(ws)
    if args.n_images is not None:
        opts["n_images"] = args.n_images
    if args.method:
        opts["methods"] = args.method
    if args.augmentation:
        opts["augmentations"] = args.augmentation
    return ws, opts
