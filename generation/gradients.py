"""Stage 2, gradient family: gradient, guided backprop, integrated gradients, SmoothGrad, input x gradient.

Example: ``python generation/gradients.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.generate import generation_script, methods_of_family

METHOD_IDS = methods_of_family("Gradient")
build_parser, main = generation_script(__doc__, METHOD_IDS, deprocess=True)

if __name__ == "__main__":
    sys.exit(main())
