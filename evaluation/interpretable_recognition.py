"""Stage 3, interpretable recognition: AD, AI, AG, insertion, deletion (curves kept).

Example: ``python evaluation/interpretable_recognition.py --label-set groundtruth``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("evaluate", __doc__, kind="recognition")

if __name__ == "__main__":
    sys.exit(main())
