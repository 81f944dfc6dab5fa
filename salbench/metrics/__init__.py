"""Evaluation metrics: one protocol (:mod:`salbench.metrics.base`), one registry (:data:`METRICS`)."""

from salbench.metrics.base import METRICS, Metric, MetricParams, Summary

__all__ = ["METRICS", "Metric", "MetricParams", "Summary"]
