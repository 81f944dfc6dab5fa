"""Save and load CASME maskers without unpickling arbitrary objects (``torch.load(weights_only=True)``).

Two layouts are read:

* **salbench** (written by :func:`save_masker`, ``meta["format"] == "salbench-casme-v1"``)::

      {"state_dict": {"encoder.<key>": tensor, ..., "decoder.<key>": tensor, ...},
       "meta": {"format", "encoder" (model id: embedded_resnet, embedded_vgg or a torchvision
                classifier name), "num_classes", "decoder_width", "in_planes", "mean", "std",
                "input_size", "upsample", ... training config and quality numbers}}

* **kondiz/casme** (the authors' ``train.py`` checkpoint, ``<name>.chk``)::

      {"epoch", "state_dict_classifier" (torchvision ResNet keys: conv1.weight, bn1.*, layer1.0.*, ...,
       fc.*), "state_dict_decoder" (conv1x1_1.0.weight, conv1x1_1.1.{weight,bias,running_mean,
       running_var,num_batches_tracked}, ..., conv1x1_4.*, final.0.weight, final.0.bias),
       "optimizer_classifier", "optimizer_decoder", "args" (an argparse.Namespace)}

  The encoder's ResNet variant (block type, blocks per stage, classes) is read off the classifier keys
  and shapes (ResNet-50 with 1000 classes for the authors' runs), the decoder width off
  ``conv1x1_1.0.weight``. ``argparse.Namespace`` is the one class allowed beyond what ``weights_only``
  accepts (a plain attribute container; :func:`torch.serialization.safe_globals`); the optimizer
  states and args are ignored apart from ``args.upsample``, recorded in the metadata with the
  authors' ImageNet mean/std (their ``train.py`` normalisation).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from casme_utils.architecture import Decoder, Masker, encoder_planes
from salbench.config import IMAGENET_MEAN, IMAGENET_STD, Config
from salbench.errors import ConfigError, DataError
from salbench.models.registry import EMBEDDED_MODELS
from salbench.store.outputs import atomic_path

log = logging.getLogger(__name__)

FORMAT = "salbench-casme-v1"
AUTHORS_KEYS = ("state_dict_classifier", "state_dict_decoder")


def default_checkpoint(cfg: Config) -> Path:
    """``<output_root>/models/casme_<model>_seed<run.seed>.pt``, next to the embedded classifiers."""
    return Path(cfg.run.output_root) / "models" / f"casme_{cfg.model.name}_seed{cfg.run.seed}.pt"


def resolve_checkpoint(cfg: Config) -> str:
    """The masker checkpoint of a run: ``methods.casme.checkpoint``, else the embedded default path.

    Raises:
        ConfigError: for a non-embedded model without ``methods.casme.checkpoint``.
    """
    given = str(cfg.method_params("casme").get("checkpoint", "") or "")
    if given:
        return given
    if cfg.model.name in EMBEDDED_MODELS:
        return str(default_checkpoint(cfg))
    raise ConfigError(
        f"methods.casme.checkpoint is required for model {cfg.model.name!r} (a CASME masker checkpoint)"
    )


def save_masker(path: str | Path, masker: Masker, meta: Mapping[str, Any]) -> Path:
    """Atomically write ``{"state_dict": tensors on CPU, "meta": JSON-able meta + format}`` to ``path``."""
    state = {k: v.detach().cpu().clone() for k, v in masker.state_dict().items()}
    payload = {"state_dict": state, "meta": {**dict(meta), "format": FORMAT}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _read(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise DataError(f"CASME checkpoint {str(path)!r} does not exist (methods.casme.checkpoint)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"CASME checkpoint {str(path)!r} cannot be loaded safely: {reason[:200]}") from None
    if not isinstance(obj, Mapping):
        raise DataError(f"CASME checkpoint {str(path)!r} does not hold a mapping")
    return obj


def _tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        return {}
    return {prefix + k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def build_encoder(name: str, num_classes: int) -> nn.Module:
    """An untrained classifier by model id (embedded model or torchvision classifier), to load into."""
    if name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS.get(name)(num_classes)
    if name in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    raise DataError(f"CASME checkpoint names an unknown encoder {name!r}")


def resnet_from_state(state: Mapping[str, torch.Tensor]) -> ResNet:
    """A torchvision ResNet whose block type, blocks per stage and classes fit a state dict's keys/shapes.

    Raises:
        DataError: when the keys are not those of a torchvision-style ResNet.
    """
    if "conv1.weight" not in state or "fc.weight" not in state:
        raise DataError("classifier state dict is not a torchvision-style ResNet (no conv1/fc weights)")
    block = Bottleneck if "layer1.0.conv3.weight" in state else BasicBlock
    layers = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not idx:
            raise DataError(f"classifier state dict has no layer{stage} blocks")
        layers.append(max(idx) + 1)
    planes = int(state["layer1.0.conv1.weight"].shape[0])
    width_per_group = planes if block is Bottleneck else 64
    return ResNet(
        block, layers, num_classes=int(state["fc.weight"].shape[0]), width_per_group=width_per_group
    )


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise DataError(f"CASME checkpoint {str(path)!r}: {what} does not fit: {first}") from None


def _from_salbench(obj: Mapping[str, Any], path: Path) -> tuple[Masker, dict[str, Any]]:
    meta = dict(obj.get("meta", {}))
    state = _tensors(obj.get("state_dict"))
    try:
        name, num_classes = str(meta["encoder"]), int(meta["num_classes"])
        width, in_planes = int(meta["decoder_width"]), [int(c) for c in meta["in_planes"]]
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"CASME checkpoint {str(path)!r}: meta needs encoder, num_classes, decoder_width, in_planes"
        ) from None
    masker = Masker(build_encoder(name, num_classes), Decoder(in_planes, width))
    _load_strict(masker, state, path, "masker state dict")
    return masker, meta


def _from_authors(obj: Mapping[str, Any], path: Path) -> tuple[Masker, dict[str, Any]]:
    enc_state = _tensors(obj["state_dict_classifier"])
    dec_state = _tensors(obj["state_dict_decoder"])
    encoder = resnet_from_state(enc_state)
    _load_strict(encoder, enc_state, path, "state_dict_classifier")
    if "conv1x1_1.0.weight" not in dec_state:
        raise DataError(f"CASME checkpoint {str(path)!r}: state_dict_decoder has no conv1x1_1.0.weight")
    width = int(dec_state["conv1x1_1.0.weight"].shape[0])
    decoder = Decoder(encoder_planes(encoder), width)
    _load_strict(decoder, dec_state, path, "state_dict_decoder")
    args = obj.get("args")
    meta = {
        "format": "kondiz-casme",
        "encoder": _resnet_name(encoder),
        "num_classes": int(encoder.fc.out_features),
        "decoder_width": width,
        "in_planes": list(decoder.in_planes),
        "epoch": int(obj["epoch"]) if isinstance(obj.get("epoch"), int) else None,
        "upsample": str(getattr(args, "upsample", "nearest")),
        "mean": list(IMAGENET_MEAN),  # the authors' train.py normalisation
        "std": list(IMAGENET_STD),
    }
    return Masker(encoder, decoder), meta


def _resnet_name(encoder: ResNet) -> str:
    """``resnet<depth>``: weighted layers in the blocks + stem conv + fc (ResNet-50 -> ``resnet50``)."""
    per_block = 3 if isinstance(encoder.layer1[0], Bottleneck) else 2
    blocks = sum(len(getattr(encoder, f"layer{i}")) for i in range(1, 5))
    return f"resnet{per_block * blocks + 2}"


def load_masker(path: str | Path) -> tuple[Masker, dict[str, Any]]:
    """Load a masker (eval mode, CPU) and its metadata from either layout of the module docstring.

    Raises:
        DataError: naming the file when it is missing, unsafe/corrupt, of an unknown layout or does
            not fit the architecture it describes.
    """
    p = Path(path)
    obj = _read(p)
    if all(k in obj for k in AUTHORS_KEYS):
        masker, meta = _from_authors(obj, p)
    elif isinstance(obj.get("meta"), Mapping) and obj["meta"].get("format") == FORMAT:
        masker, meta = _from_salbench(obj, p)
    else:
        raise DataError(
            f"CASME checkpoint {str(p)!r} has neither the salbench layout (meta.format={FORMAT!r}) nor "
            f"the kondiz/casme layout ({', '.join(AUTHORS_KEYS)})"
        )
    log.info("loaded CASME masker %s (%s, encoder %s)", p, meta.get("format"), meta.get("encoder"))
    return masker.eval(), meta
