"""Model-parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps", Sec. 3).

The model's parameterised top-level blocks, output layer first (:func:`randomisation_blocks`), and a
copy of the model with some of them re-initialised (:func:`randomised_copy`), for the cascading and
independent randomisation of the sanity checks.
"""

from __future__ import annotations

import copy
import dataclasses
import zlib
from collections.abc import Sequence

import torch
from torch import nn

from salbench.errors import ConfigError
from salbench.models.layers import get_submodule
from salbench.scoped import seeded_global_rng

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclasses.dataclass(frozen=True)
class LayerBlock:
    """One randomisation level: ``name`` (``fc``, ``layer4``, ``conv1+bn1``) and its module paths."""

    name: str
    modules: tuple[str, ...]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_leaf(module: nn.Module) -> bool:
    return not any(True for _ in module.children())


def randomisation_blocks(model: nn.Module) -> list[LayerBlock]:
    """The model's parameterised top-level blocks, output layer first (the cascading order).

    A top-level container whose children are all leaves (a VGG's ``features``/``classifier``) is split
    into its children; a parameterised leaf that is not a convolution or linear layer (a norm layer)
    joins the block before it. torchvision ResNets: ``fc, layer4, layer3, layer2, layer1, conv1+bn1``;
    VGGs: the classifier's linear layers, then the ``features`` conv(+bn) blocks, top down.
    """
    atoms: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        kids = list(child.named_children())
        if kids and all(_is_leaf(k) for _, k in kids):
            atoms += [(f"{name}.{k}", m) for k, m in kids]
        else:
            atoms.append((name, child))
    groups: list[list[str]] = []
    for name, module in atoms:
        if not _has_params(module):
            continue
        if groups and _is_leaf(module) and not isinstance(module, _WEIGHT_LAYERS):
            groups[-1].append(name)
        else:
            groups.append([name])
    if not groups:
        raise ConfigError(f"model {type(model).__name__} has no parameterised blocks to randomise")
    return [LayerBlock("+".join(g), tuple(g)) for g in reversed(groups)]


def _reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` in place from ``generator`` (see :func:`randomised_copy`)."""
    params = list(module.named_parameters())
    covered = {id(p) for m in module.modules() if hasattr(m, "reset_parameters") for p in m.parameters()}
    device = params[0][1].device if params else torch.device("cpu")
    with seeded_global_rng(device, int(torch.randint(2**62, (1,), generator=generator))), torch.no_grad():
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    with torch.no_grad():
        for _, p in params:
            if id(p) not in covered:
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                p.copy_((noise * p.double().std().nan_to_num(0.0) + p.double().mean()).to(p))


def randomised_copy(model: nn.Module, blocks: Sequence[LayerBlock], generator: torch.Generator) -> nn.Module:
    """A deep copy of ``model`` with the parameters of ``blocks`` re-initialised; ``model`` is untouched.

    Each module's own ``reset_parameters`` (PyTorch's default initialisation: U(+-1/sqrt(fan_in)) for
    conv/linear weights and biases; weight 1, bias 0, running statistics reset for norm layers) runs under
    the global RNG seeded from one draw of a per-block generator and restored afterwards. Parameters no
    ``reset_parameters`` covers are drawn normal with the original tensor's mean and std. The per-block
    generator is seeded from one draw of ``generator`` and the block's name, so for generators in the
    same state a block gets the same weights whichever other blocks are randomised with it.
    """
    base = int(torch.randint(2**62, (1,), generator=generator))
    out = copy.deepcopy(model)
    for block in blocks:
        g = torch.Generator().manual_seed((base + zlib.crc32(block.name.encode()) * 7919) % 2**63)
        for path in block.modules:
            _reinitialise(get_submodule(out, path), g)
    return out
