"""Stage 0 of the embedded default: the generated benchmark, its trained classifiers and CASME masker.

``salbench train`` generates the benchmark (once, deterministic for its seed) and trains or reuses the
embedded classifiers, printing their accuracy, confidence and calibration; ``salbench train-casme``
trains or reuses the CASME masker of the run's classifier.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from salbench.data.sources import ensure_embedded
from salbench.errors import ConfigError
from salbench.models.registry import EMBEDDED_MODELS
from salbench.models.training import train_embedded_model
from salbench.runtime import setup_runtime
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register

log = logging.getLogger(__name__)


def _check_embedded(kind: str, command: str) -> None:
    if kind != "embedded":
        raise ConfigError(f"{command} trains on the embedded benchmark only (data.kind=embedded)")


def _train_arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("--models", nargs="+", choices=EMBEDDED_MODELS.names(), help="embedded models to train")
    p.add_argument("--epochs", type=int, help="training epochs")


def _train(args: argparse.Namespace, options: Options) -> int:
    configure_logging(args.verbose)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    cfg = config_from_args(args, {"train": {"epochs": args.epochs}} if args.epochs else {})
    _check_embedded(cfg.data.kind, "salbench train (main/train_embedded.py)")
    runtime = setup_runtime(cfg.run)
    log.info("benchmark: %s", ensure_embedded(cfg))
    for name in args.models or [cfg.model.name]:
        model_cfg = dataclasses.replace(cfg.model, name=name, checkpoint="")
        meta = train_embedded_model(dataclasses.replace(cfg, model=model_cfg), runtime.torch_device)
        ev = meta["eval"]
        print(
            f"{name}: eval top-1 {ev['top1_accuracy']:.3f} ({ev['n_misclassified']} errors of "
            f"{ev['n_images']}), median p(gt) {ev['gt_prob_median']:.3f}, ECE {ev['ece']:.3f}"
        )
    return 0


def _casme_arguments(p: argparse.ArgumentParser, options: Options) -> None:
    from casme_utils.training import CasmeTrainConfig

    p.add_argument("--epochs", type=int, help=f"training epochs (default {CasmeTrainConfig.epochs})")


def _train_casme(args: argparse.Namespace, options: Options) -> int:
    from casme_utils.embedded import train_casme
    from casme_utils.training import CasmeTrainConfig

    configure_logging(args.verbose)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    cfg = config_from_args(args)
    _check_embedded(cfg.data.kind, "salbench train-casme (main/train_casme.py)")
    runtime = setup_runtime(cfg.run)
    ensure_embedded(cfg)
    train_cfg = CasmeTrainConfig(seed=cfg.run.seed)
    if args.epochs is not None:
        train_cfg = dataclasses.replace(train_cfg, epochs=args.epochs)
    path, meta = train_casme(cfg, runtime.torch_device, train_cfg)
    q = meta["quality"]
    print(f"casme masker: {path}")
    print(
        f"{cfg.model.name} on {q['n_images']} eval images: accuracy clean {q['accuracy_clean']:.3f}, "
        f"masked-in {q['accuracy_masked_in']:.3f}, masked-out {q['accuracy_masked_out']:.3f}, "
        f"mean mask {q['mask_mean']:.3f}"
    )
    return 0


TRAIN = register(
    Command(
        "train",
        "stage 0: generate the embedded benchmark and train (or reuse) its classifiers",
        _train_arguments,
        _train,
        label_sets=False,
    )
)
TRAIN_CASME = register(
    Command(
        "train-casme",
        "stage 0: train (or reuse) the CASME masker of the embedded classifier",
        _casme_arguments,
        _train_casme,
        label_sets=False,
    )
)
