"""Stage 2, CAM family through pytorch-grad-cam.

Methods: gradcam, gradcampp, scorecam, xgradcam, layercam, ablationcam, eigengradcam.

Example: ``python generation/cams.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.cli import entry
from salbench.generation import generation_parser, methods_of_family, run_generation_script

METHOD_IDS = methods_of_family("CAM")


def build_parser():
    return generation_parser(__doc__.splitlines()[0], METHOD_IDS)


@entry
def main(argv: list[str] | None = None) -> int:
    return run_generation_script(build_parser().parse_args(argv), METHOD_IDS)


if __name__ == "__main__":
    sys.exit(main())
