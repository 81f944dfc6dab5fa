"""Stage 3, fidelity/complexity analysis: monotonicity, sensitivity, sparseness, complexity, completeness.

Example: ``python evaluation/complexity_analysis.py --label-set groundtruth``
"""

from __future__ import annotations

import sys

from salbench.cli import entry
from salbench.evaluators import evaluation_parser, run_evaluation_script


def build_parser():
    return evaluation_parser(__doc__.splitlines()[0])


@entry
def main(argv: list[str] | None = None) -> int:
    return run_evaluation_script(build_parser().parse_args(argv), "complexity")


if __name__ == "__main__":
    sys.exit(main())
