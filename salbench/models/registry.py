"""Build classifiers: the embedded models, any torchvision classifier by name, local checkpoints.

Nothing here downloads: torchvision weights are read from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, where ``torchvision.models.<name>(weights=...)`` stores them), and
every checkpoint is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from salbench.config import ModelConfig
from salbench.errors import ConfigError, DataError
from salbench.models.embedded import EmbeddedResNet, EmbeddedVGG
from salbench.registry import Registry

log = logging.getLogger(__name__)

EMBEDDED_MODELS: Registry[Callable[[int], nn.Module]] = Registry("embedded model")
EMBEDDED_MODELS.register("embedded_resnet")(lambda num_classes: EmbeddedResNet(num_classes=num_classes))
EMBEDDED_MODELS.register("embedded_vgg")(lambda num_classes: EmbeddedVGG(num_classes=num_classes))


def model_names() -> list[str]:
    """Every model id accepted by ``model.name``: the embedded models, then torchvision classifiers."""
    return [*EMBEDDED_MODELS.names(), *torchvision.models.list_models(module=torchvision.models)]


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a state dict (and metadata, if the file has one) without unpickling arbitrary objects.

    Accepts a bare state dict, or a dict with ``state_dict`` / ``model`` and optional ``meta``.

    Raises:
        DataError: naming the file when it is missing or not a readable tensor checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"checkpoint {str(p)!r} does not exist")
    try:
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
        ``(model, info)`` where ``info`` records name, weights, checkpoint, number of classes.
    """
    n_classes = cfg.num_classes or num_classes
    info: dict[str, Any] = {"name": cfg.name, "weights": cfg.weights, "checkpoint": cfg.checkpoint}
    if cfg.name in EMBEDDED_MODELS:
        if cfg.weights:
            raise ConfigError(f"model {cfg.name!r} has no torchvision weights; use model.checkpoint")
        if not cfg.checkpoint:
            raise ConfigError(
                f"model {cfg.name!r} needs model.checkpoint (train it with main/train_embedded.py)"
            )
        state, meta = load_checkpoint(cfg.checkpoint)
        n_classes = int(meta.get("num_classes", n_classes or 10))
        model = EMBEDDED_MODELS.get(cfg.name)(n_classes)
        _load_state(model, state, cfg.checkpoint)
        info["meta"] = meta
    elif cfg.name in torchvision.models.list_models(module=torchvision.models):
        model, n_classes = _build_torchvision(cfg, n_classes, info)
    else:
        raise ConfigError(f"unknown model {cfg.name!r}; choose an embedded model or a torchvision classifier")
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
    model = torchvision.models.get_model(cfg.name, weights=None, num_classes=n_classes)
    if state:
        _load_state(model, state, info.get("weights_file", cfg.checkpoint))
    return model, n_classes
