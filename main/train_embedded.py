"""Train (or reuse) the embedded classifiers on the embedded benchmark and report their accuracy.

Example: ``python main/train_embedded.py --model embedded_resnet``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("train", __doc__)

if __name__ == "__main__":
    sys.exit(main())
