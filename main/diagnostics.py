"""Stage 1: ground-truth, top-1 and least-likely labels and probabilities for every listed image.

Writes ``<output_root>/<model>/diagnostics/diagnostics.csv`` and ``complete_info.json`` (the study's keys).
Example: ``python main/diagnostics.py --config configs/embedded.yaml``
"""

from __future__ import annotations

import sys

from salbench.stages.cli import common_parser, config_from_args, configure_logging, entry
from salbench.stages.diagnostics import run_diagnostics
from salbench.stages.workspace import open_workspace


def build_parser():
    return common_parser(__doc__.splitlines()[0], label_sets=False)


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    ws = open_workspace(config_from_args(args))
    frame = run_diagnostics(ws)
    acc = float(frame["correct"].mean())
    print(
        f"{ws.cfg.model.name} on {ws.data.name}: top-1 accuracy {acc:.4f} over {len(frame)} images "
        f"({int((~frame['correct']).sum())} misclassified); wrote {ws.layout.diagnostics_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
