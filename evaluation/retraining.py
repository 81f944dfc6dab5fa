"""ROAR re-training metric (Hooker et al. 2019): remove each method's top-k% pixels, re-train, test.

For every method and k, the k% most salient pixels of every training and test image of the embedded
benchmark are replaced (``--fill``), the classifier is re-trained from scratch and its test accuracy
recorded (lower = better map); the ``random`` map is always run as the control and the unmodified
re-training (k = 0) as the reference. Each accuracy is saved as soon as it is computed; a rerun resumes.
Examples::

    python evaluation/retraining.py --quick                       # smoke run, ~2 min on 2 CPU cores
    python evaluation/retraining.py --method gradcam rise --k 10 50 90
    torchrun --nproc_per_node 4 evaluation/retraining.py --device cuda   # DDP, one GPU per process
    torchrun --nproc_per_node 2 evaluation/retraining.py --quick         # DDP on CPU (gloo)
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("roar", __doc__)

if __name__ == "__main__":
    sys.exit(main())
