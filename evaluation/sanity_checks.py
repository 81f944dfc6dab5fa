"""Sanity checks (Adebayo et al. 2018): model-parameter and data randomisation of every method's maps.

Cascading and independent re-initialisation of the model's blocks from the output layer down, and (on
the embedded benchmark) a model trained on shuffled labels; per method Spearman (absolute and signed),
SSIM and HOG similarity to the original maps. The model-free controls must come out as failing.
Example: ``python evaluation/sanity_checks.py --method fakecam gradient gradcam --quick``
"""

from __future__ import annotations

import dataclasses
import sys

from salbench.methods import METHODS
from salbench.stages.cli import common_parser, config_from_args, configure_logging, entry
from salbench.stages.sanity import (
    DEFAULT_LIMIT,
    DEFAULT_METHODS,
    METRIC_IDS,
    QUICK_EPOCHS,
    VARIANTS,
    SanitySettings,
    run_sanity,
    with_image_limit,
)
from salbench.stages.workspace import open_workspace


def build_parser():
    p = common_parser(__doc__.splitlines()[0])
    p.add_argument(
        "--method", nargs="+", choices=METHODS.names(), help=f"default: {' '.join(DEFAULT_METHODS)}"
    )
    p.add_argument("--variant", nargs="+", choices=VARIANTS, help="default: every variant that applies")
    p.add_argument("--threshold", type=float, default=0.5, help="fails when similarity stays above it")
    p.add_argument("--flag-metric", choices=METRIC_IDS, default="sanity_spearman_abs")
    p.add_argument(
        "--quick", action="store_true", help=f"train the shuffled-label model for {QUICK_EPOCHS} epochs"
    )
    p.epilog = f"--limit defaults to the first {DEFAULT_LIMIT} images of the run."
    return p


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    cfg = with_image_limit(config_from_args(args), args.limit)
    train = dataclasses.replace(cfg.train, epochs=QUICK_EPOCHS) if args.quick else cfg.train
    settings = SanitySettings(
        tuple(args.method or DEFAULT_METHODS),
        tuple(args.variant) if args.variant else None,
        args.threshold,
        args.flag_metric,
        train,
    )
    ws = open_workspace(cfg)
    flags = run_sanity(ws, settings)
    verdict = {True: "FAILS", False: "passes"}
    for r in flags.itertuples():
        model = verdict.get(r.fails_model_randomisation, "-")
        data = verdict.get(r.fails_data_randomisation, "-")
        print(
            f"{r.label_set:12s} {r.method:32s} {r.flag_metric} (fails above {r.threshold:g}): "
            f"model {r.similarity_full_randomisation:6.3f} {model:6s} "
            f"data {r.similarity_data_randomisation:6.3f} {data:6s}{'  [control]' if r.control else ''}"
        )
    passed = flags.fails_model_randomisation.eq(False) | flags.fails_data_randomisation.eq(False)
    missed = flags[flags.control & passed]
    if len(missed):
        print(f"warning: controls not flagged ({', '.join(missed.method)}): the check is not trustworthy")
    for key in ("model", "data"):
        like = flags[~flags.control & flags[f"fails_{key}_randomisation"].eq(True)]
        print(f"fail {key} randomisation like the controls: {', '.join(sorted(set(like.method))) or 'none'}")
    print(f"wrote {ws.layout.model_dir / 'sanity'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
