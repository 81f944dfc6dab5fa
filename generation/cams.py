"""Stage 2, CAM family through pytorch-grad-cam.

Methods: gradcam, gradcampp, scorecam, xgradcam, layercam, ablationcam, eigengradcam.

Example: ``python generation/cams.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.generate import generation_script, methods_of_family

METHOD_IDS = methods_of_family("CAM")
build_parser, main = generation_script(__doc__, METHOD_IDS)

if __name__ == "__main__":
    sys.exit(main())
