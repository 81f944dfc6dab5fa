"""Stage 4a: transform images (MixUp, CutMix, Resize, Rotation, Crop), rerun diagnostics, generate maps.

Each variant's images are materialised once (with a content hash) so every method sees identical inputs.
Example: ``python augmented/generate.py --augmentation mixup rotation --n-images 50``
"""

from __future__ import annotations

import sys

from salbench.stages.augmented import run_generate, select_variants
from salbench.stages.augmented_cli import augmented_parser, augmented_workspace
from salbench.stages.cli import entry


def build_parser():
    return augmented_parser(__doc__.splitlines()[0])


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ws, opts = augmented_workspace(args)
    variants = select_variants(ws, opts["augmentations"], args.variant)
    for name, rec in run_generate(ws, variants, opts["methods"], opts["n_images"]):
        state = (
            f"{rec.n_computed} maps, {rec.seconds_per_image * 1000:.1f} ms/image"
            if rec.n_computed
            else "complete"
        )
        print(f"{name:14s} {rec.label_set:12s} {rec.method:32s} {state}")
    print(f"augmented outputs under {ws.layout.model_dir / 'augmented'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
