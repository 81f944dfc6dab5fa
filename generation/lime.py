"""Stage 2, LIME on quickshift superpixels.

Example: ``python generation/lime.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("generate", __doc__, methods=["lime"])

if __name__ == "__main__":
    sys.exit(main())
