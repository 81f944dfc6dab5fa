"""Stage 2, RISE (random input sampling), batched.

Example: ``python generation/rise.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("generate", __doc__, methods=["rise"])

if __name__ == "__main__":
    sys.exit(main())
