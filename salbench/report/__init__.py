"""The report: the study's Tables 1-4, Figures 1-2 and claims, built from ``results.csv``.

:func:`build_report` is the entry point; the modules are usable on their own:
:mod:`~salbench.report.tables` (tables), :mod:`~salbench.report.render` (CSV/Markdown/LaTeX),
:mod:`~salbench.report.figures` (PNG figures), :mod:`~salbench.report.claims` (claims),
:mod:`~salbench.report.published` (the paper's numbers). Every fact about a run comes from
``results.csv`` (:func:`salbench.store.results.read_results`); the per-image values, curves, maps and
manifests that some figures draw are read by the report stage (:mod:`salbench.stages.report`) and
handed in as data. This package imports neither models, methods, metrics nor stages.
"""

from salbench.report.agreement import figure_rank_agreement
from salbench.report.claims import ClaimResult, ClaimThresholds, evaluate_claims
from salbench.report.figures import Figure1Inputs, figure1, figure2, figure_curves
from salbench.report.markdown import build_report
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
]
