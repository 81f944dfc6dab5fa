"""Stage 2, CASME: the classifier-agnostic masker of ``casme_utils`` (train it with main/train_casme.py).

The masker checkpoint is ``methods.casme.checkpoint``; empty = the embedded default next to the model.
Example: ``python generation/casme.py --label-set all``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("generate", __doc__, methods=["casme"])

if __name__ == "__main__":
    sys.exit(main())
