"""Stage 2, RISE (random input sampling), batched.

Example: ``python generation/rise.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.cli import entry
from salbench.generation import generation_parser, run_generation_script

METHOD_IDS = ["rise"]


def build_parser():
    return generation_parser(__doc__.splitlines()[0], METHOD_IDS)


@entry
def main(argv: list[str] | None = None) -> int:
    return run_generation_script(build_parser().parse_args(argv), METHOD_IDS)


if __name__ == "__main__":
    sys.exit(main())
