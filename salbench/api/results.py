"""Results of the library API as plain data: JSON/YAML-safe values, written atomically by suffix."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from salbench.errors import ConfigError
from salbench.store.outputs import write_text

SUFFIXES = (".json", ".yaml", ".yml")


def plain(value: Any) -> Any:
    """``value`` as builtin Python data: NaN/inf -> None, arrays/tensors -> lists, tuples -> lists.

    JSON has no NaN, so a missing or undefined number is ``null``; the result is unchanged by a
    JSON or YAML round trip.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dump_result(result: Mapping[str, Any], path: str | Path) -> Path:
    """Atomically write ``result`` as JSON (``.json``) or YAML (``.yaml``/``.yml``); returns the path.

    Raises:
        ConfigError: the suffix is none of :data:`SUFFIXES`.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"dump path {str(target)!r}: suffix must be one of {', '.join(SUFFIXES)}")
    data = plain(result)
    if suffix == ".json":
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    write_text(target, text)
    return target


def load_result(path: str | Path) -> Any:
    """Read back a file written by :func:`dump_result` (safe loaders only)."""
    target = Path(path)
    text = target.read_text()
    return json.loads(text) if target.suffix.lower() == ".json" else yaml.safe_load(text)
