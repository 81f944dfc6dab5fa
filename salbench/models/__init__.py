"""Classifier registry: torchvision models by name, the embedded models, local checkpoints."""

from salbench.models.embedded import EmbeddedResNet, EmbeddedVGG
from salbench.models.layers import get_submodule, resolve_target_layer
from salbench.models.registry import EMBEDDED_MODELS, build_model, load_checkpoint

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedResNet",
    "EmbeddedVGG",
    "build_model",
    "get_submodule",
    "load_checkpoint",
    "resolve_target_layer",
]
