"""Stage 3, localization: energy pointing game, pointing game, localization error, official metric.

Example: ``python evaluation/localization.py --label-set groundtruth``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("evaluate", __doc__, kind="localization")

if __name__ == "__main__":
    sys.exit(main())
