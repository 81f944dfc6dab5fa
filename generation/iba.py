"""Stage 2, IBA (information bottleneck attribution) at the target layer.

Example: ``python generation/iba.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.generate import generation_script

METHOD_IDS = ["iba"]
build_parser, main = generation_script(__doc__, METHOD_IDS)

if __name__ == "__main__":
    sys.exit(main())
