"""Stage 5: the study's tables, figures and claims from ``<output_root>/results.csv``.

Writes ``<output_root>/report/`` (``REPORT.md``, ``tables/``, ``figures/``, ``manifest.json``) and prints
the REPORT.md path. Per-image CSVs, curves, map stores and stage manifests are used when present.
Example: ``python evaluation/report.py --config configs/embedded.yaml``
"""

from __future__ import annotations

import sys
from pathlib import Path

from salbench.report import build_report
from salbench.stages.cli import common_parser, config_from_args, configure_logging, entry
from salbench.stages.report import collect_manifests, load_curves, load_figure1_inputs, load_per_image
from salbench.store.layout import RunLayout
from salbench.store.outputs import write_run_record
from salbench.store.results import read_results


def build_parser():
    p = common_parser(__doc__.splitlines()[0], label_sets=False)
    p.add_argument("--results", help="results CSV to report on (default <output_root>/results.csv)")
    p.add_argument("--out-dir", help="report folder (default <output_root>/report)")
    p.add_argument("--no-figure1", action="store_true", help="skip Figure 1 (reads images and map stores)")
    return p


@entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    cfg = config_from_args(args)
    layout = RunLayout.from_config(cfg)
    results = Path(args.results) if args.results else layout.results_csv
    out = Path(args.out_dir) if args.out_dir else layout.report_dir
    models = sorted(set(read_results(results, missing_ok=False)["model"]))
    per_image = load_per_image(layout.root, models)
    fig1 = None if args.no_figure1 else load_figure1_inputs(cfg, per_image)
    path = build_report(
        results,
        out,
        {"manifests": collect_manifests(layout.root)},
        per_image=per_image,
        curves=load_curves(layout.root, models),
        figure1_inputs=None if fig1 is None else {cfg.model.name: fig1},
    )
    write_run_record(out, cfg, None, "report", extra={"results": str(results)})
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
