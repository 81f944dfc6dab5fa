"""What the metrics of one image share across the methods evaluated on it.

:class:`StartCache` holds the probabilities of the insertion/deletion curve ends, which do not depend on
the map, and any other per-batch result every method of the same images may reuse (sensitivity's
plain-gradient re-explanations of its noisy inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from salbench.errors import ConfigError


class StartCache:
    """Probabilities of the map-independent curve ends, computed once per image and shared by methods.

    For one image and target the original image (deletion start, insertion end), the blurred image
    (insertion start) and the fully deleted image (deletion end) do not depend on the map, so every
    method after the first reuses them. Keys combine the image id, the target and every setting that
    changes those images (size, substrate, blur, normalisation). Use one cache per model.
    """

    def __init__(self) -> None:
        self._probs: dict[Hashable, tuple[float, float, float]] = {}
        self._shared: dict[Hashable, Any] = {}
        self._ends: dict[Hashable, float] = {}

    def shared(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once for ``key`` while the same images are evaluated (the last few keys are
        kept: per-batch results such as sensitivity's re-explained noisy inputs, shared by methods)."""
        if key not in self._shared:
            if len(self._shared) >= 8:
                self._shared.clear()
            self._shared[key] = compute()
        return self._shared[key]

    def __len__(self) -> int:
        return len(self._probs)

    def get(self, key: Hashable) -> tuple[float, float, float] | None:
        """(f(original), f(blurred), f(deleted)) for ``key``, or None when not computed yet."""
        return self._probs.get(key)

    def put(self, key: Hashable, probs: tuple[float, float, float]) -> None:
        self._probs[key] = probs

    def end(self, key: Hashable) -> float | None:
        """The probability of one map-independent curve end (Gomez et al.'s curves), or None."""
        return self._ends.get(key)

    def put_end(self, key: Hashable, prob: float) -> None:
        self._ends[key] = prob


def check_ids(cache: StartCache | None, ids: Sequence[Hashable] | None, n: int) -> None:
    """A cache is keyed by image id: with a ``cache``, ``ids`` must name each of the ``n`` images."""
    if cache is not None and (ids is None or len(ids) != n):
        raise ConfigError("ids: one id per image is required when a cache is given")
