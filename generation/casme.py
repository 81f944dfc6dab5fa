"""Stage 2, CASME: the classifier-agnostic masker of ``casme_utils`` (train it with main/train_casme.py).

The masker checkpoint is ``methods.casme.checkpoint``; empty = the embedded default next to the model.
Example: ``python generation/casme.py --label-set all``
"""

from __future__ import annotations

import sys

from casme_utils.checkpoint import resolve_checkpoint
from salbench.stages.cli import config_from_args, entry
from salbench.stages.generate import generation_parser, run_generation_script

METHOD_IDS = ["casme"]


def build_parser():
    p = generation_parser(__doc__.splitlines()[0], METHOD_IDS)
    p.add_argument("--masker", help="CASME masker checkpoint (overrides methods.casme.checkpoint)")
    return p


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = args.masker or resolve_checkpoint(config_from_args(args))
    return run_generation_script(args, METHOD_IDS, {"checkpoint": checkpoint})


if __name__ == "__main__":
    sys.exit(main())
