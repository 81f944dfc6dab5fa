"""Random draws per image: what makes a map or a score a function of (image, target) alone.

Methods and metrics take ``generator``: one ``torch.Generator`` (the draws of a batch come from it in
order, so an image's draw depends on its place in the batch) or a sequence of generators, one per image
(:func:`row_generators`: each image's draws come from its own generator, keyed by the run seed, what
is drawn, the image id and its target). The stages pass per-image generators, so the map and the scores
of an image for a target do not depend on the batch the image is in: a target shared by two label sets
is computed once (:mod:`salbench.stages.reuse`), and resumed or sharded runs stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from salbench.runtime import keyed_generator

Generators = torch.Generator | Sequence[torch.Generator] | None
"""What a method or metric accepts as ``generator``."""

SEEDING = "image-target"
"""How the stages seed random draws (recorded in every map store and evaluation key)."""


def row_generators(
    seed: int, key: str, image_ids: Sequence[str], targets: Sequence[int], device: str | torch.device = "cpu"
) -> list[torch.Generator]:
    """One generator per image: a stable function of (run ``seed``, ``key``, image id, target)."""
    return [
        keyed_generator(seed, f"{key}|{image_id}|{int(target)}", 0, device)
        for image_id, target in zip(image_ids, targets, strict=True)
    ]


def per_image(generator: Generators, n: int) -> list[torch.Generator] | None:
    """The per-image generators of ``generator`` (checked to be ``n``), or None for a single one."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    gens = list(generator)
    if len(gens) != n:
        raise ValueError(f"{len(gens)} generators for {n} images: pass one per image")
    return gens


def first(generator: Generators) -> torch.Generator | None:
    """A single generator: ``generator`` itself, or the first of a per-image sequence."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return next(iter(generator), None)


def draw_seeds(generator: Generators, n: int, high: int) -> list[int]:
    """``n`` integer seeds in [0, ``high``): one per image from its own generator, or ``n`` in order from a
    single one (torch's global RNG if None)."""
    if n == 0:
        return []
    gens = per_image(generator, n)
    if gens is not None:
        return [int(torch.randint(0, high, (1,), generator=g, device=g.device)) for g in gens]
    if generator is None:
        return [int(v) for v in torch.randint(0, high, (n,))]
    dev = generator.device
    return [int(v) for v in torch.randint(0, high, (n,), generator=generator, device=dev)]


def rand(
    generator: Generators,
    shape: Sequence[int],
    dim: int,
    *,
    normal: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) draws of ``shape``, whose axis ``dim`` runs over images.

    A single generator fills the whole tensor in one draw; per-image generators each fill their own
    slice along ``dim`` (on the generators' device).
    """
    fn = torch.randn if normal else torch.rand
    n = shape[dim]
    if n == 0:
        return torch.empty(tuple(shape), dtype=dtype)
    gens = per_image(generator, n)
    if gens is None:
        device = generator.device if generator is not None else None
        return fn(tuple(shape), generator=generator, dtype=dtype, device=device)
    one = tuple(s for i, s in enumerate(shape) if i != dim % len(shape))
    return torch.stack([fn(one, generator=g, dtype=dtype, device=g.device) for g in gens], dim=dim)
