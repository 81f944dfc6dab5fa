"""``python -m salbench <command> ...``: the same as the ``salbench`` console command."""

import sys

from salbench.stages.cli import main

sys.exit(main())
