"""A registry maps stable lower_snake ids to factories; it is the single list of methods, metrics, models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from salbench.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Ordered id -> object mapping whose ids feed argparse ``choices`` and CSV columns.

    Args:
        kind: what is registered ("method", "metric", "model"), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; ids are unique and never reused."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def alias(self, name: str, target: str) -> None:
        """Let ``name`` (an id earlier versions used) stand for the registered ``target``."""
        if name in self._items or target not in self._items:
            raise ValueError(f"{self.kind} alias {name!r} -> {target!r}: taken, or target not registered")
        self._aliases[name] = target

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` (or an alias of it), else raise :class:`ConfigError`."""
        try:
            return self._items[self._aliases.get(name, name)]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose from: {', '.join(self._items)}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
