"""Build classifiers: the embedded models, torchvision and timm classifiers by name, a researcher's own
``nn.Module`` factory, local checkpoints.

``model.name`` selects one of four entry points (:func:`entry_point`): an embedded model, a torchvision
classifier, ``timm:<name>``, or ``package.module:factory`` / ``path/to/file.py:factory``. Nothing here
downloads: torchvision weights are read from the torch hub cache (``$TORCH_HOME/hub/checkpoints``, where
``torchvision.models.<name>(weights=...)`` stores them), timm models are built with
``pretrained=False`` and take their weights from ``model.checkpoint``, and every checkpoint is loaded
with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torchvision
from torch import nn

from salbench.config import ModelConfig
from salbench.errors import ConfigError, DataError, SalbenchError
from salbench.models.embedded import EmbeddedResNet, EmbeddedVGG
from salbench.models.factory import factory_file, first_line, load_factory
from salbench.registry import Registry

log = logging.getLogger(__name__)

EMBEDDED_MODELS: Registry[Callable[[int], nn.Module]] = Registry("embedded model")
EMBEDDED_MODELS.register("embedded_resnet")(lambda num_classes: EmbeddedResNet(num_classes=num_classes))
EMBEDDED_MODELS.register("embedded_vgg")(lambda num_classes: EmbeddedVGG(num_classes=num_classes))


EntryPoint = Literal["embedded", "torchvision", "timm", "factory"]
TIMM_PREFIX = "timm:"


def model_names() -> list[str]:
    """Every model id accepted by ``model.name`` besides ``timm:<name>`` and ``module:factory``: the
    embedded models, then torchvision classifiers."""
    return [*EMBEDDED_MODELS.names(), *torchvision.models.list_models(module=torchvision.models)]


def entry_point(name: str) -> EntryPoint:
    """Which builder ``model.name`` selects.

    Raises:
        ConfigError: ``name`` is none of: an embedded model, a torchvision classifier, ``timm:<name>``,
            ``package.module:factory`` or ``path/to/file.py:factory``.
    """
    if name in EMBEDDED_MODELS:
        return "embedded"
    if name.startswith(TIMM_PREFIX):
        return "timm"
    if ":" in name:
        return "factory"
    if name in torchvision.models.list_models(module=torchvision.models):
        return "torchvision"
    raise ConfigError(
        f"unknown model {name!r}; give an embedded model, a torchvision classifier, timm:<name>, "
        "package.module:factory or path/to/file.py:factory"
    )


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a state dict (and metadata, if the file has one) without unpickling arbitrary objects.

    Accepts a bare state dict, or a dict with ``state_dict`` / ``model`` and optional ``meta``, read with
    ``torch.load(weights_only=True)``; a ``.safetensors`` file (timm / Hugging Face) with safetensors.

    Raises:
        DataError: naming the file when it is missing or not a readable tensor checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"checkpoint {str(p)!r} does not exist")
    try:
        if p.suffix == ".safetensors":  # timm / Hugging Face weights: tensors only, no code
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise DataError(f"checkpoint {str(p)!r} cannot be loaded safely: {_load_failure(exc)}") from None
    if not isinstance(obj, Mapping):
        raise DataError(f"checkpoint {str(p)!r} does not hold a state dict")
    meta = dict(obj.get("meta", {})) if isinstance(obj.get("meta", {}), Mapping) else {}
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise DataError(f"checkpoint {str(p)!r} holds no tensors")
    return state, meta


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line that keeps the meaning."""
    text = str(exc)
    blocked = re.search(r"unsupported GLOBAL ([\w.]+)", text) or re.search(
        r"Unsupported global: GLOBAL ([\w.]+)", text
    )
    if blocked:
        return (
            f"it would run the Python object {blocked.group(1)!r} when unpickled, which loading with "
            "weights_only=True refuses (only tensors and plain containers are read)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return f"it is not a readable PyTorch checkpoint ({reason})"


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in want.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes))
            if keys
        ]
        raise DataError(
            f"checkpoint {source!r} does not fit model {type(model).__name__}: {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=True)


def torchvision_weights_file(name: str, weights: str) -> tuple[Any, Path]:
    """The weights enum member and the hub-cache path its file lives at (may not exist yet)."""
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ConfigError(f"model {name!r} has no torchvision weights enum") from None
    try:
        member = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        choices = ", ".join(m.name for m in enum)
        raise ConfigError(f"unknown weights {weights!r} for model {name!r}; choose from: {choices}") from None
    filename = Path(member.url.split("/")[-1])
    return member, Path(torch.hub.get_dir()) / "checkpoints" / filename


def build_model(cfg: ModelConfig, num_classes: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """Build the classifier of ``cfg`` in eval mode on CPU and return it with its provenance.

    Args:
        cfg: model section of the run configuration.
        num_classes: number of classes of the data set (used when the model/weights do not fix it).

    Returns:
        ``(model, info)`` where ``info`` records name, entry point, keyword arguments, weights,
        checkpoint, number of classes, memory format and ``state_sha256`` (the weights' digest), plus
        the factory (and its file's SHA-256) or the timm version where they apply.

    Raises:
        ConfigError: an unknown model, bad keyword arguments, a factory that fails (one line each).
        DataError: a missing or unreadable model file or checkpoint, or a checkpoint that does not fit.
    """
    kind = entry_point(cfg.name)
    n_classes = cfg.num_classes or num_classes
    info: dict[str, Any] = {
        "name": cfg.name,
        "entry_point": kind,
        "kwargs": dict(cfg.kwargs),
        "weights": cfg.weights,
        "checkpoint": cfg.checkpoint,
    }
    if kind == "embedded":
        if cfg.weights:
            raise ConfigError(f"model {cfg.name!r} has no torchvision weights; use model.checkpoint")
        if cfg.kwargs:
            raise ConfigError(f"model {cfg.name!r} takes no model.kwargs (got {', '.join(cfg.kwargs)})")
        if not cfg.checkpoint:
            raise ConfigError(
                f"model {cfg.name!r} needs model.checkpoint (train it with main/train_embedded.py)"
            )
        state, meta = load_checkpoint(cfg.checkpoint)
        n_classes = int(meta.get("num_classes", n_classes or 10))
        model = EMBEDDED_MODELS.get(cfg.name)(n_classes)
        _load_state(model, state, cfg.checkpoint)
        info["meta"] = meta
    elif kind == "torchvision":
        model, n_classes = _build_torchvision(cfg, n_classes, info)
    elif kind == "timm":
        model, n_classes = _build_timm(cfg, n_classes, info)
    else:
        model, n_classes = _build_factory(cfg, n_classes, info)
    info["num_classes"] = n_classes
    info["memory_format"] = cfg.memory_format
    source = cfg.checkpoint or info.get("weights_file") or f"random initialisation of {cfg.name}"
    info["state_sha256"] = state_digest(model, source)
    return with_memory_format(model, cfg.memory_format).eval(), info


def state_digest(model: nn.Module, source: str) -> str:
    """SHA-256 of the model's parameters and buffers (names, dtypes, shapes, values): its identity.

    Two runs with the same digest explain the same function whatever the file was called; every
    skip-if-done check of the stages compares it.

    Raises:
        DataError: a parameter or buffer holds NaN or inf (naming ``source``, e.g. the checkpoint).
    """
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise DataError(f"{source}: {bad} values of {name!r} are NaN or inf; the weights are unusable")
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def with_memory_format(model: nn.Module, name: str) -> nn.Module:
    """``model`` with its 4-d parameters in memory format ``name`` (``channels_last``/``contiguous``)."""
    if name not in MEMORY_FORMATS:
        raise ConfigError(f"model.memory_format: {name!r} is not one of {', '.join(MEMORY_FORMATS)}")
    return model.to(memory_format=MEMORY_FORMATS[name])


def _build_torchvision(cfg: ModelConfig, n_classes: int, info: dict[str, Any]) -> tuple[nn.Module, int]:
    if cfg.weights and cfg.checkpoint:
        raise ConfigError("give model.weights or model.checkpoint, not both")
    if cfg.weights:
        member, path = torchvision_weights_file(cfg.name, cfg.weights)
        n_classes = len(member.meta.get("categories", [])) or n_classes or 1000
        if not path.is_file():
            raise DataError(
                f"weights {cfg.name}.{member.name} not found at {str(path)!r} (torch hub cache); "
                f"fetch them once on a machine with internet or pass model.checkpoint"
            )
        state, _ = load_checkpoint(path)
        info["weights_file"] = str(path)
    elif cfg.checkpoint:
        state, _ = load_checkpoint(cfg.checkpoint)
        n_classes = n_classes or 1000
    else:
        log.warning("model %s has neither weights nor checkpoint: random initialisation", cfg.name)
        state, n_classes = {}, n_classes or 1000
    _check_kwargs(cfg, _TORCHVISION_RESERVED)
    model = _call_builder(
        cfg, lambda: torchvision.models.get_model(cfg.name, weights=None, num_classes=n_classes, **cfg.kwargs)
    )
    if state:
        _load_state(model, state, info.get("weights_file", cfg.checkpoint))
    return model, n_classes


def _build_timm(cfg: ModelConfig, n_classes: int, info: dict[str, Any]) -> tuple[nn.Module, int]:
    """``timm.create_model(name, pretrained=False)``; weights only from ``model.checkpoint``.

    The class count is ``model.num_classes``, else the rows of the checkpoint's classifier (timm's
    ``pretrained_cfg['classifier']``), else the data set's, else timm's default.
    """
    arch = cfg.name.removeprefix(TIMM_PREFIX)
    if cfg.weights:
        raise ConfigError(
            f"model {cfg.name!r}: model.weights names torchvision weights; give timm weights as a local "
            "model.checkpoint file"
        )
    try:
        import timm  # lazily: only timm models need it
    except ImportError:
        raise ConfigError(f"model {cfg.name!r} needs the timm package (pip install timm)") from None
    if not timm.is_model(arch):
        raise ConfigError(f"unknown timm model {arch!r} in {cfg.name!r}; see timm.list_models()")
    info["timm_version"] = timm.__version__
    _check_kwargs(cfg, _TIMM_RESERVED)
    state: dict[str, torch.Tensor] = {}
    if cfg.checkpoint:
        state, _ = load_checkpoint(cfg.checkpoint)
        head = timm.models.get_pretrained_cfg_value(arch, "classifier")
        head_weight = state.get(f"{head}.weight") if isinstance(head, str) else None
        n_classes = cfg.num_classes or (int(head_weight.shape[0]) if head_weight is not None else n_classes)
    else:
        log.warning("model %s has no checkpoint: random initialisation", cfg.name)
    extra = {"num_classes": n_classes} if n_classes else {}
    model = _call_builder(cfg, lambda: timm.create_model(arch, pretrained=False, **extra, **cfg.kwargs))
    if state:
        _load_state(model, state, cfg.checkpoint)
    return model, int(getattr(model, "num_classes", n_classes))


def _build_factory(cfg: ModelConfig, n_classes: int, info: dict[str, Any]) -> tuple[nn.Module, int]:
    """Call ``package.module:factory`` or ``path/to/file.py:factory`` with ``model.kwargs``."""
    if cfg.weights:
        raise ConfigError(
            f"model {cfg.name!r}: model.weights names torchvision weights; give model.checkpoint"
        )
    factory = load_factory(cfg.name)
    info["factory"] = cfg.name
    path = factory_file(cfg.name)
    if path is not None:
        info["factory_file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    model = _call_builder(cfg, lambda: factory(**cfg.kwargs))
    if cfg.checkpoint:
        state, _ = load_checkpoint(cfg.checkpoint)
        _load_state(model, state, cfg.checkpoint)
    else:
        log.info("model %s has no checkpoint: the factory's own weights are used", cfg.name)
    outputs = _output_count(model)
    if cfg.num_classes and outputs and cfg.num_classes != outputs:
        raise ConfigError(
            f"model.num_classes is {cfg.num_classes} but model {cfg.name!r} has {outputs} outputs"
        )
    n_classes = cfg.num_classes or outputs or n_classes
    if not n_classes:
        raise ConfigError(f"model {cfg.name!r}: cannot tell its number of outputs; set model.num_classes")
    return model, n_classes


def _output_count(model: nn.Module) -> int:
    """The model's class count when it says so: a ``num_classes`` attribute, else the last
    ``nn.Linear``'s ``out_features`` (0 when neither exists)."""
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0


# keyword arguments salbench sets itself: weights come only from local files, through load_checkpoint
_TORCHVISION_RESERVED = ("num_classes", "weights")
_TIMM_RESERVED = ("num_classes", "pretrained", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay")


def _check_kwargs(cfg: ModelConfig, reserved: tuple[str, ...]) -> None:
    """Refuse ``model.kwargs`` that would set the class count or fetch/load weights behind our back."""
    taken = [k for k in reserved if k in cfg.kwargs]
    if taken:
        raise ConfigError(
            f"model {cfg.name!r}: model.kwargs may not set {', '.join(taken)}; use model.num_classes "
            "and model.checkpoint"
        )


def _call_builder(cfg: ModelConfig, build: Callable[[], Any]) -> nn.Module:
    """Run a model constructor; any exception or a result that is not an ``nn.Module`` is one line."""
    try:
        model = build()
    except SalbenchError:
        raise
    except Exception as exc:  # a user's factory may raise anything
        raise ConfigError(
            f"model {cfg.name!r} with kwargs {dict(cfg.kwargs)!r} failed: {first_line(exc)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {cfg.name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_architecture(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """A randomly initialised model of ``cfg``'s architecture with ``num_classes`` outputs (no weights
    loaded; draws from the global RNG), for the stages that retrain or randomise a model.

    A factory model is built by calling its factory with ``model.kwargs`` (its class count is its own).
    """
    kind = entry_point(cfg.name)
    if kind == "embedded":
        return EMBEDDED_MODELS.get(cfg.name)(num_classes)
    if kind == "torchvision":
        _check_kwargs(cfg, _TORCHVISION_RESERVED)
        return _call_builder(
            cfg,
            lambda: torchvision.models.get_model(
                cfg.name, weights=None, num_classes=num_classes, **cfg.kwargs
            ),
        )
    if kind == "timm":
        import timm

        _check_kwargs(cfg, _TIMM_RESERVED)
        arch = cfg.name.removeprefix(TIMM_PREFIX)
        return _call_builder(
            cfg, lambda: timm.create_model(arch, pretrained=False, num_classes=num_classes, **cfg.kwargs)
        )
    factory = load_factory(cfg.name)
    return _call_builder(cfg, lambda: factory(**cfg.kwargs))
