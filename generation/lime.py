"""Stage 2, LIME on quickshift superpixels.

Example: ``python generation/lime.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.generate import generation_script

METHOD_IDS = ["lime"]
build_parser, main = generation_script(__doc__, METHOD_IDS)

if __name__ == "__main__":
    sys.exit(main())
