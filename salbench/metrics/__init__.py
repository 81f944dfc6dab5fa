"""Evaluation metrics: one protocol (:mod:`salbench.metrics.base`), one registry (:data:`METRICS`).

Importing this package registers every metric.
"""

from salbench.metrics import complexity, fidelity, gomez, localization, recognition, robustness  # noqa: F401
from salbench.metrics.base import METRICS, Metric, MetricParams, Summary

__all__ = ["METRICS", "Metric", "MetricParams", "Summary"]
