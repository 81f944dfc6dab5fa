"""Stage 4b: recognition metrics (AD, AI, AG, insertion, deletion) on every materialised variant.

Rows go to results.csv with ``augmentation``/``variant`` filled; ``<model>/augmented/summary.csv`` holds
each variant and the mean over the variants of each augmentation.
Example: ``python augmented/evaluate.py``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("augment", __doc__, step="evaluate")

if __name__ == "__main__":
    sys.exit(main())
