"""User model factories: ``package.module:factory`` and ``path/to/file.py:factory`` names resolved to a
callable (the file imported through :func:`importlib.util.spec_from_file_location`), every failure one
line naming the file or module and the factory."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from salbench.errors import ConfigError, DataError


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _split_factory(name: str) -> tuple[str, str]:
    """``'pkg.mod:make'`` -> ``('pkg.mod', 'make')``; the factory may be dotted (``Class.build``)."""
    where, _, attr = name.rpartition(":")
    if not where or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", attr):
        raise ConfigError(f"model {name!r} is not 'package.module:factory' or 'path/to/file.py:factory'")
    return where, attr


def factory_file(name: str) -> Path | None:
    """The Python file of a ``path/to/file.py:factory`` name (None for a module name)."""
    where, _ = _split_factory(name)
    if where.endswith(".py") or "/" in where or "\\" in where:
        return Path(where).expanduser()
    return None


def load_factory(name: str) -> Callable[..., Any]:
    """The callable named by ``package.module:factory`` or ``path/to/file.py:factory``.

    A file is imported through :func:`importlib.util.spec_from_file_location` as a fresh module (its
    folder on ``sys.path`` while it runs, so it may import its neighbours).

    Raises:
        DataError: the file does not exist.
        ConfigError: the module cannot be imported, lacks the attribute, or it is not callable.
    """
    where, attr = _split_factory(name)
    path = factory_file(name)
    if path is None:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # an import runs arbitrary code
            raise ConfigError(f"model {name!r}: cannot import module {where!r} ({first_line(exc)})") from None
        label = f"module {where!r}"
    else:
        if not path.is_file():
            raise DataError(f"model {name!r}: file {str(path)!r} does not exist")
        module = _import_file(path, name)
        label = f"file {str(path)!r}"
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model {name!r}: {label} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model {name!r}: {attr!r} in {label} is a {type(obj).__name__}, not callable")
    return obj


def _import_file(path: Path, name: str) -> ModuleType:
    """Execute ``path`` as a new module registered under a name unique to its resolved path."""
    resolved = path.resolve()
    module_name = "salbench_user_model_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model {name!r}: {str(path)!r} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    # registered while it runs: dataclasses and typing resolve names through sys.modules
    sys.modules[module_name] = module
    try:
        with _on_sys_path(resolved.parent):
            spec.loader.exec_module(module)
    except Exception as exc:  # the file runs arbitrary code
        sys.modules.pop(module_name, None)
        raise ConfigError(f"model {name!r}: importing {str(path)!r} failed: {first_line(exc)}") from None
    return module


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path`` inside the block only."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
