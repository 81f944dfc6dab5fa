"""Stage 2, CAM family through pytorch-grad-cam.

Methods: gradcam, gradcampp, scorecam, xgradcam, layercam, ablationcam, eigengradcam.

Example: ``python generation/cams.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script
from salbench.stages.generate import methods_of_family

build_parser, main = script("generate", __doc__, methods=methods_of_family("CAM"))

if __name__ == "__main__":
    sys.exit(main())
