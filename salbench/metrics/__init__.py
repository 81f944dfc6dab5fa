"""Evaluation metrics: declared once (:data:`METRICS`), computed by groups (:data:`GROUPS`) through one verb.

Importing this package registers every metric and group (:mod:`salbench.metrics.base`).
"""

from salbench.metrics import complexity, fidelity, gomez, localization, recognition, robustness  # noqa: F401
from salbench.metrics.base import (
    GROUPS,
    METRICS,
    Metric,
    MetricDef,
    MetricGroup,
    MetricInputs,
    MetricParams,
    Summary,
    compute,
)

__all__ = [
    "GROUPS",
    "METRICS",
    "Metric",
    "MetricDef",
    "MetricGroup",
    "MetricInputs",
    "MetricParams",
    "Summary",
    "compute",
]
