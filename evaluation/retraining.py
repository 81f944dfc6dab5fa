"""ROAR re-training metric (Hooker et al. 2019): remove each method's top-k% pixels, re-train, test.

For every method and k, the k% most salient pixels of every training and test image of the embedded
benchmark are replaced (``--fill``), the classifier is re-trained from scratch and its test accuracy
recorded (lower = better map); the ``random`` map is always run as the control and the unmodified
re-training (k = 0) as the reference. Each accuracy is saved as soon as it is computed; a rerun resumes.
Examples::

    python evaluation/retraining.py --quick                       # smoke run, ~2 min on 2 CPU cores
    python evaluation/retraining.py --method gradcam rise --k 10 50 90
    torchrun --nproc_per_node 4 evaluation/retraining.py --device cuda   # DDP, one GPU per process
    torchrun --nproc_per_node 2 evaluation/retraining.py --quick         # DDP on CPU (gloo)
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from salbench.errors import ConfigError
from salbench.methods import METHODS
from salbench.metrics.retraining import (
    BASELINE,
    CONTROL,
    DEFAULT_KS,
    DEFAULT_METHODS,
    FILLS,
    QUICK_BATCH_SIZE,
    QUICK_EPOCHS,
    QUICK_KS,
    QUICK_LR,
    QUICK_METHODS,
    QUICK_TRAIN_IMAGES,
    RoarSettings,
)
from salbench.runtime import distributed, rank_zero_first
from salbench.stages.cli import common_parser, config_from_args, configure_logging, entry
from salbench.stages.retraining import check_data, prepare_model, run_retraining
from salbench.stages.workspace import open_workspace


def build_parser():
    p = common_parser(__doc__.splitlines()[0], label_sets=False)
    p.add_argument(
        "--method",
        nargs="+",
        choices=METHODS.names(),
        help=f"methods, the {CONTROL} control always added (None: {' '.join(DEFAULT_METHODS)})",
    )
    p.add_argument(
        "--k",
        nargs="+",
        type=int,
        help=f"percent of pixels removed, 1..99 (None: {' '.join(map(str, DEFAULT_KS))})",
    )
    p.add_argument(
        "--fill", default="mean", metavar="{" + ",".join(FILLS) + "}", help="removed pixels become"
    )
    p.add_argument("--epochs", type=int, help="re-training epochs (None: the run's train.epochs)")
    p.add_argument("--train-images", type=int, help="first N training images (None or 0: all)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"short preset: all training images, {QUICK_EPOCHS} epochs in batches of {QUICK_BATCH_SIZE} at "
        f"lr {QUICK_LR}, k {' '.join(map(str, QUICK_KS))}, methods {' '.join(QUICK_METHODS)} "
        "(explicit flags win; a few minutes on 2 CPU cores)",
    )
    p.epilog = "--limit: test images (default: every image of the run's split, whatever run.limit says)."
    return p


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, limit=args.limit or 0))
    check_data(cfg)
    quick = (
        {"ks": QUICK_KS, "epochs": QUICK_EPOCHS, "batch_size": QUICK_BATCH_SIZE, "lr": QUICK_LR}
        if args.quick
        else {}
    )
    given = {"ks": tuple(args.k) if args.k else None, "epochs": args.epochs, "fill": args.fill}
    settings = RoarSettings.from_train(
        cfg.train, **{**quick, **{k: v for k, v in given.items() if v is not None}}
    )
    methods = args.method or (QUICK_METHODS if args.quick else DEFAULT_METHODS)
    n_train = args.train_images if args.train_images is not None else (QUICK_TRAIN_IMAGES * args.quick)
    if n_train < 0:
        raise ConfigError(f"--train-images must be >= 0, got {n_train}")
    with distributed(cfg.run.device) as (rank, world):
        configure_logging(args.verbose)
        if rank:
            logging.getLogger().setLevel(logging.WARNING)
        with rank_zero_first():
            prepare_model(cfg, progress=rank == 0)
            ws = open_workspace(cfg)
        scores = run_retraining(ws, settings, methods, n_train)
    if rank == 0:
        table = scores.pivot_table(index="method", columns="k", values="accuracy", sort=False)
        table["mean"] = table.drop(columns=0, errors="ignore").mean(axis=1)
        table.loc[BASELINE, "mean"] = float("nan")
        print(f"ROAR test accuracy ({len(table) - 1} methods, {world} process(es), fill {settings.fill}):")
        print(table.to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"))
        print(f"wrote {ws.layout.model_dir / 'retraining'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
