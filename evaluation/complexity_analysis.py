"""Stage 3, fidelity/complexity analysis: monotonicity, sensitivity, sparseness, complexity, completeness.

Example: ``python evaluation/complexity_analysis.py --label-set groundtruth``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("evaluate", __doc__, kind="complexity")

if __name__ == "__main__":
    sys.exit(main())
