"""Saliency methods: one protocol (:mod:`salbench.methods.base`), one registry (:data:`METHODS`).

Importing this package registers every method.
"""

from salbench.methods import baselines, cams, casme, gradients, iba, lime, rise  # noqa: F401  (registration)
from salbench.methods.base import METHODS, MethodContext, MethodParams, SaliencyMethod, build_params

__all__ = ["METHODS", "MethodContext", "MethodParams", "SaliencyMethod", "build_params"]
