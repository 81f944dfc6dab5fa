"""Stage 5: the study's tables, figures and claims from ``<output_root>/results.csv``.

Writes ``<output_root>/report/`` (``REPORT.md``, ``tables/``, ``figures/``, ``manifest.json``) and prints
the REPORT.md path. Per-image CSVs, curves, map stores and stage manifests are used when present.
Example: ``python evaluation/report.py --config configs/embedded.yaml``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("report", __doc__)

if __name__ == "__main__":
    sys.exit(main())
