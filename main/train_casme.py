"""Train (or reuse) the CASME masker of an embedded classifier and report its masked-in/out accuracy.

Example: ``python main/train_casme.py --model embedded_resnet --epochs 3``. The classifier must be
trained first (``main/train_embedded.py``); the masker is written to
``<output_root>/models/casme_<model>_seed<seed>.pt``.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from casme_utils.embedded import train_casme
from casme_utils.training import CasmeTrainConfig
from salbench.data.sources import ensure_embedded
from salbench.errors import ConfigError
from salbench.runtime import setup_runtime
from salbench.stages.cli import common_parser, config_from_args, configure_logging, entry

log = logging.getLogger("train_casme")


def build_parser():
    p = common_parser(__doc__.splitlines()[0], label_sets=False)
    p.add_argument("--epochs", type=int, help=f"training epochs (default {CasmeTrainConfig.epochs})")
    return p


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    cfg = config_from_args(args)
    if cfg.data.kind != "embedded":
        raise ConfigError("main/train_casme.py trains on the embedded benchmark only (data.kind=embedded)")
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


if __name__ == "__main__":
    sys.exit(main())
