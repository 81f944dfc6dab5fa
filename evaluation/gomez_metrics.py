"""Stage 3, Gomez et al.'s faithfulness metrics: IIC, AD, ADD, DAUC, DC, IAUC, IC, black and blur filling.

Metric ids in results.csv: ``<metric>_<filling>`` (``iic_black``, ..., ``ic_blur``); parameters from the
config's ``metrics.gomez`` section (``clamp_mask``, ``bound_max_step``, ``max_step_nb``).
Example: ``python evaluation/gomez_metrics.py --label-set groundtruth --method gradcam fakecam``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("evaluate", __doc__, kind="gomez")

if __name__ == "__main__":
    sys.exit(main())
