"""Saliency methods: one protocol (:mod:`salbench.methods.base`), one registry (:data:`METHODS`)."""

from salbench.methods.base import METHODS, MethodContext, MethodParams, SaliencyMethod, build_params

__all__ = ["METHODS", "MethodContext", "MethodParams", "SaliencyMethod", "build_params"]
