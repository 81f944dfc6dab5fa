"""Stage 3, interpretable recognition: AD, AI, AG, insertion, deletion (curves kept).

Example: ``python evaluation/interpretable_recognition.py --label-set groundtruth``
"""

from __future__ import annotations

import sys

from salbench.stages.evaluate import evaluation_script

build_parser, main = evaluation_script(__doc__, "recognition")

if __name__ == "__main__":
    sys.exit(main())
