"""Stage 2, gradient family: gradient, guided backprop, integrated gradients, SmoothGrad, input x gradient.

Example: ``python generation/gradients.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script
from salbench.stages.generate import methods_of_family

build_parser, main = script("generate", __doc__, methods=methods_of_family("Gradient"))

if __name__ == "__main__":
    sys.exit(main())
