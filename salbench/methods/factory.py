"""``build_method``: a saliency method built as the stages build it, under a protocol.

The stages resolve a method's parameters from the configuration (dataclass defaults < protocol preset
< ``--config`` file < flags, :func:`salbench.config.resolve_config`) and build it on the run's model
with :func:`create_method`. :func:`build_method` resolves the same configuration for a model in memory,
so that the library explains with the command line's parameters: under ``acml2024`` the gradient family
runs with the network in training mode (the study's quirk), under ``reference`` in eval mode. A bare
``cls(model, context)`` (or ``build_params(cls.params_cls, {}, ...)``) gives the dataclass defaults,
which are no protocol's for every method (gradients: eval mode, where ``acml2024`` trains).

Example::

    from salbench.methods import build_method

    method = build_method("integrated_gradients", model, protocol="acml2024", mean=MEAN, std=STD)
    method.prepare(Preparation(lambda: [images], images.shape[-2:]))   # RISE, IBA: once per run
    maps = method(images, targets, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from salbench.config import IMAGENET_MEAN, IMAGENET_STD, Config, resolve_config
from salbench.errors import ConfigError
from salbench.methods.base import METHODS, MethodContext, SaliencyMethod, build_params
from salbench.models.layers import resolve_target_layer


def create_method(
    method_id: str, model: nn.Module, context: MethodContext, values: Mapping[str, Any]
) -> SaliencyMethod:
    """``method_id`` on ``model`` with parameter ``values`` (unknown keys and bad choices named), not
    prepared: the one constructor of the stages and :func:`build_method`.

    Raises:
        ConfigError: unknown method or parameter; NotApplicableError: the method cannot apply to the
            model as configured (e.g. IBA without a target layer).
    """
    cls = METHODS.get(method_id)
    return cls(model, context, build_params(cls.params_cls, values, method_id))


def method_values(
    method_id: str, protocol: str | None = None, config: Config | str | Path | None = None
) -> dict[str, Any]:
    """The parameters the command line resolves for ``method_id``: defaults < ``protocol``'s preset <
    ``config`` (a YAML file as ``--config``, or a resolved :class:`~salbench.config.Config`).

    Args:
        method_id: registry id.
        protocol: ``acml2024`` or ``reference`` (as ``--protocol``; default: the config's, else
            ``acml2024``).
        config: a YAML file, or a resolved config (its protocol must then be ``protocol``, if given).
    """
    METHODS.get(method_id)  # an unknown id fails here, naming the registered ones
    if isinstance(config, Config):
        if protocol is not None and protocol != config.run.protocol:
            raise ConfigError(
                f"protocol {protocol!r} differs from the config's run.protocol {config.run.protocol!r}"
            )
        return config.method_params(method_id)
    overrides = {"run": {"protocol": protocol}} if protocol is not None else None
    return resolve_config(config, overrides).method_params(method_id)


def method_context(
    model: nn.Module,
    target_layer: str | nn.Module | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    num_classes: int | None = None,
) -> MethodContext:
    """The :class:`MethodContext` the stages give ``model``'s methods.

    Args:
        model: the classifier.
        target_layer: a path (``"layer4[-1]"``), a module of ``model``, or None: the architecture's rule
            (:func:`~salbench.models.layers.resolve_target_layer`), no layer where none applies (the
            layer-based methods are then not applicable).
        mean: per-channel normalisation mean of the images (one value per channel).
        std: per-channel normalisation std.
        num_classes: model outputs; None reads ``model.num_classes`` or the last ``nn.Linear``'s
            ``out_features``.
    """
    if isinstance(target_layer, nn.Module):
        layer: nn.Module | None = target_layer
    else:
        try:
            _, layer = resolve_target_layer(model, target_layer or "")
        except ConfigError:
            if target_layer:
                raise
            layer = None
    if len(mean) != len(std):
        raise ConfigError(f"mean/std: {len(mean)} and {len(std)} values; give one per image channel")
    return MethodContext(
        target_layer=layer,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        num_classes=_num_classes(model) if num_classes is None else int(num_classes),
    )


def _num_classes(model: nn.Module) -> int:
    stated = getattr(model, "num_classes", None)
    if isinstance(stated, int) and stated > 0:
        return stated
    last = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    if last is None:
        raise ConfigError(f"num_classes: cannot tell how many classes {type(model).__name__} has; give it")
    return int(last.out_features)


def build_method(
    method_id: str,
    model: nn.Module,
    *,
    protocol: str | None = None,
    config: Config | str | Path | None = None,
    target_layer: str | nn.Module | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    num_classes: int | None = None,
    **overrides: Any,
) -> SaliencyMethod:
    """``method_id`` on ``model`` exactly as the stages build it under ``protocol`` (not prepared).

    Args:
        method_id: registry id (``gradient``, ``gradcam``, ``rise``, ...).
        model: the classifier (returns logits).
        protocol: parameter preset (``acml2024``, the default, or ``reference``), as ``--protocol``.
        config: optional YAML file (``--config``) or resolved config whose ``methods.<id>`` section
            applies over the preset.
        target_layer: for the layer-based methods, see :func:`method_context`.
        mean: per-channel normalisation mean of the images.
        std: per-channel normalisation std.
        num_classes: model outputs (see :func:`method_context`).
        **overrides: parameter values over the resolved ones (as a flag such as ``--deprocess``).

    Returns:
        The method; stochastic methods take a ``torch.Generator`` per call, RISE and IBA need
        :meth:`~salbench.methods.base.SaliencyMethod.prepare` first.

    Raises:
        ConfigError: unknown method, parameter or protocol; NotApplicableError: the method cannot
            apply to the model (e.g. IBA on a model without a target layer).
    """
    values = {**method_values(method_id, protocol, config), **overrides}
    context = method_context(model, target_layer, mean, std, num_classes)
    return create_method(method_id, model, context, values)
