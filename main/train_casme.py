"""Train (or reuse) the CASME masker of an embedded classifier and report its masked-in/out accuracy.

Example: ``python main/train_casme.py --model embedded_resnet --epochs 3``. The classifier must be
trained first (``main/train_embedded.py``); the masker is written to
``<output_root>/models/casme_<model>_seed<seed>.pt``.
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("train-casme", __doc__)

if __name__ == "__main__":
    sys.exit(main())
