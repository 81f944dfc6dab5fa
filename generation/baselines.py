"""Stage 2, uninformed and control maps: fakecam, random, edge.

Example: ``python generation/baselines.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.generate import generation_script, methods_of_family

METHOD_IDS = methods_of_family("Uninformed", "Control")
build_parser, main = generation_script(__doc__, METHOD_IDS)

if __name__ == "__main__":
    sys.exit(main())
