"""Stage 5, the report: the study's Tables 1-4, Figures 1-2 and claims, built from ``results.csv``.

:func:`build_report` is the entry point; the modules are usable on their own:
:mod:`~salbench.report.tables` (tables), :mod:`~salbench.report.render` (CSV/Markdown/LaTeX),
:mod:`~salbench.report.figures` (PNG figures), :mod:`~salbench.report.claims` (claims),
:mod:`~salbench.report.published` (the paper's numbers), :mod:`~salbench.stages.report` (per-image
files, curves, manifests, Figure 1 inputs).
"""

from salbench.report.claims import ClaimResult, ClaimThresholds, evaluate_claims
from salbench.report.figures import Figure1Inputs, figure1, figure2, figure_curves, figure_rank_agreement
from salbench.report.markdown import build_report
from salbench.report.results import load_results
from salbench.report.tables import Table, build_tables

__all__ = [
    "ClaimResult",
    "ClaimThresholds",
    "Figure1Inputs",
    "Table",
    "build_report",
    "build_tables",
    "evaluate_claims",
    "figure1",
    "figure2",
    "figure_curves",
    "figure_rank_agreement",
    "load_results",
]
