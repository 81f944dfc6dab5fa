"""Saliency methods: one protocol (:mod:`salbench.methods.base`), one registry (:data:`METHODS`).

Importing this package registers every method. :func:`build_method` builds one as the stages do under a
protocol (:mod:`salbench.methods.factory`).
"""

from salbench.methods import baselines, cams, casme, gradients, iba, lime, rise  # noqa: F401  (registration)
from salbench.methods.base import METHODS, MethodContext, MethodParams, SaliencyMethod, build_params
from salbench.methods.factory import build_method, create_method, method_context, method_values

__all__ = [
    "METHODS",
    "MethodContext",
    "MethodParams",
    "SaliencyMethod",
    "build_method",
    "build_params",
    "create_method",
    "method_context",
    "method_values",
]
