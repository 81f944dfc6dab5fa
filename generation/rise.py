"""Stage 2, RISE (random input sampling), batched.

Example: ``python generation/rise.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.generate import generation_script

METHOD_IDS = ["rise"]
build_parser, main = generation_script(__doc__, METHOD_IDS)

if __name__ == "__main__":
    sys.exit(main())
