"""Sanity checks (Adebayo et al. 2018): model-parameter and data randomisation of every method's maps.

Cascading and independent re-initialisation of the model's blocks from the output layer down, and (on
the embedded benchmark) a model trained on shuffled labels; per method Spearman (absolute and signed),
SSIM and HOG similarity to the original maps. The model-free controls must come out as failing.
Example: ``python evaluation/sanity_checks.py --method fakecam gradient gradcam --quick``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("sanity", __doc__)

if __name__ == "__main__":
    sys.exit(main())
