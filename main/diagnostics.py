"""Stage 1: ground-truth, top-1 and least-likely labels and probabilities for every listed image.

Writes ``<output_root>/<model>/diagnostics/diagnostics.csv`` and ``complete_info.json`` (the study's keys).
Example: ``python main/diagnostics.py --config configs/embedded.yaml``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("diagnostics", __doc__)

if __name__ == "__main__":
    sys.exit(main())
