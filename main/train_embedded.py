"""Train (or reuse) the embedded classifiers on the embedded benchmark and report their accuracy.

Example: ``python main/train_embedded.py --model embedded_resnet``
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from salbench.data.sources import ensure_embedded
from salbench.errors import ConfigError
from salbench.models.registry import EMBEDDED_MODELS
from salbench.models.training import train_embedded_model
from salbench.runtime import setup_runtime
from salbench.stages.cli import common_parser, config_from_args, configure_logging, entry

log = logging.getLogger("train_embedded")


def build_parser():
    p = common_parser(__doc__.splitlines()[0], label_sets=False)
    p.add_argument("--models", nargs="+", choices=EMBEDDED_MODELS.names(), help="embedded models to train")
    p.add_argument("--epochs", type=int, help="training epochs")
    return p


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    extra = {"train": {"epochs": args.epochs}} if args.epochs else {}
    cfg = config_from_args(args, extra)
    if cfg.data.kind != "embedded":
        raise ConfigError("main/train_embedded.py trains on the embedded benchmark only (data.kind=embedded)")
    runtime = setup_runtime(cfg.run)
    root = ensure_embedded(cfg)
    log.info("benchmark: %s", root)
    for name in args.models or [cfg.model.name]:
        model_cfg = dataclasses.replace(cfg.model, name=name, checkpoint="")
        meta = train_embedded_model(dataclasses.replace(cfg, model=model_cfg), runtime.torch_device)
        ev = meta["eval"]
        print(
            f"{name}: eval top-1 {ev['top1_accuracy']:.3f} ({ev['n_misclassified']} errors of "
            f"{ev['n_images']}), median p(gt) {ev['gt_prob_median']:.3f}, ECE {ev['ece']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
