"""Stage 4a: transform images (MixUp, CutMix, Resize, Rotation, Crop), rerun diagnostics, generate maps.

Each variant's images are materialised once (with a content hash) so every method sees identical inputs.
Example: ``python augmented/generate.py --augmentation mixup rotation --n-images 50``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import script

build_parser, main = script("augment", __doc__, step="generate")

if __name__ == "__main__":
    sys.exit(main())
