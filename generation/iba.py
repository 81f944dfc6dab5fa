"""Stage 2, IBA (information bottleneck attribution) at the target layer.

Example: ``python generation/iba.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("generate", __doc__, methods=["iba"])

if __name__ == "__main__":
    sys.exit(main())
