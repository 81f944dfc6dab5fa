"""Stage 2, uninformed and control maps: fakecam, random, edge.

Example: ``python generation/baselines.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script
from salbench.stages.generate import methods_of_family

build_parser, main = script("generate", __doc__, methods=methods_of_family("Uninformed", "Control"))

if __name__ == "__main__":
    sys.exit(main())
