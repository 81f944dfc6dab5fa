"""Stage 4b: recognition metrics (AD, AI, AG, insertion, deletion) on every materialised variant.

Rows go to results.csv with ``augmentation``/``variant`` filled; ``<model>/augmented/summary.csv`` holds
each variant and the mean over the variants of each augmentation.
Example: ``python augmented/evaluate.py``
"""

from __future__ import annotations

import sys

from salbench.stages.augmented import run_evaluate, select_variants
from salbench.stages.augmented_cli import augmented_parser, augmented_workspace
from salbench.stages.cli import entry


def build_parser():
    return augmented_parser(__doc__.splitlines()[0])


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ws, opts = augmented_workspace(args)
    variants = select_variants(ws, opts["augmentations"], args.variant)
    summary = run_evaluate(ws, variants, None)
    print(f"{len(summary)} summary rows in {ws.layout.model_dir / 'augmented' / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
