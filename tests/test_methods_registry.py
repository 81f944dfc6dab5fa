"""Registry-wide properties: every method on both embedded architectures (random weights, 112x112)."""

from __future__ import annotations

import copy

import pytest
import torch

from salbench.errors import SalbenchError
from salbench.methods import METHODS, MethodContext, build_params
from salbench.methods.base import Preparation
from salbench.models import EmbeddedResNet, EmbeddedVGG, resolve_target_layer

# Cheaper settings so the whole registry runs in seconds; the defaults are tested per family.
FAST = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 3},
    "rise": {"n_masks": 8},
    "lime": {"n_samples": 8},
    "iba": {"steps": 2, "n_noise": 2},
    "scorecam": {"batch_size": 64},
}
NEEDS_CHECKPOINT = {"casme"}
METHOD_IDS = [m for m in METHODS.names() if m not in NEEDS_CHECKPOINT]


def _hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


@pytest.fixture(scope="module", params=[EmbeddedResNet, EmbeddedVGG], ids=["resnet", "vgg"])
def model(request):
    torch.manual_seed(0)
    return request.param(num_classes=10).eval()


@pytest.mark.parametrize("method_id", METHOD_IDS)
def test_every_method_on_embedded_models(model, method_id):
    _, layer = resolve_target_layer(model)
    cls = METHODS.get(method_id)
    method = cls(
        model,
        MethodContext(target_layer=layer, num_classes=10),
        build_params(cls.params_cls, FAST.get(method_id, {}), method_id),
    )
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([3, 7])
    before = images.clone()
    hooks = _hook_count(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    method.prepare(Preparation(lambda: [images], (112, 112)))

    maps = method(images, targets, torch.Generator().manual_seed(5))
    again = method(images, targets, torch.Generator().manual_seed(5))

    assert maps.shape == (2, 112, 112) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    # same seed, same computation in the same layouts: equal on one machine (1e-6 is slack only)
    torch.testing.assert_close(maps, again, rtol=0, atol=1e-6)
    assert torch.equal(images, before)  # inputs not mutated
    assert _hook_count(model) == hooks and not model.training  # hooks removed, mode restored
    for k, v in model.state_dict().items():  # parameters and BN buffers untouched
        assert torch.equal(v, state[k]), k


@pytest.mark.numeric
@pytest.mark.parametrize("method_id", [m for m in METHOD_IDS if METHODS.get(m).deterministic])
def test_deterministic_method_single_image_equals_its_batch_row(model, method_id):
    """A float64 copy of the model and images: one image alone and in a batch of two go through the
    network in other layouts, ~1e-16 relative apart. The maps are float32 and some methods finish in
    float32 (pytorch-grad-cam's cast, resize and min-max; jacobgil), where that noise can flip a
    rounding: a few 2**-24 on values in [0, 1] after min-max, hence 1e-6. (In float32 the embedded
    models' layouts alone move maps by up to ~3e-6 after the min-max.)"""
    model64 = copy.deepcopy(model).double()
    _, layer = resolve_target_layer(model64)
    cls = METHODS.get(method_id)
    params = build_params(cls.params_cls, FAST.get(method_id, {}), method_id)
    method = cls(model64, MethodContext(target_layer=layer, num_classes=10), params)
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = torch.tensor([3, 7])
    method.prepare(Preparation(lambda: [images], (112, 112)))
    maps = method(images, targets, None)
    single = method(images[1:], targets[1:], None)
    torch.testing.assert_close(single[0], maps[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method_id", ["gradient", "gradcam", "rise"])
def test_mode_and_hooks_restored_after_error(model, method_id):
    _, layer = resolve_target_layer(model)
    cls = METHODS.get(method_id)
    method = cls(
        model,
        MethodContext(target_layer=layer, num_classes=10),
        build_params(cls.params_cls, FAST.get(method_id, {}), method_id),
    )
    model.train()
    hooks = _hook_count(model)
    with pytest.raises((IndexError, RuntimeError, ValueError, SalbenchError)):  # 4 channels: the model fails
        method(torch.randn(1, 4, 112, 112), torch.tensor([1]), torch.Generator().manual_seed(0))
    assert model.training and _hook_count(model) == hooks
    model.eval()


def test_train_mode_gradients_on_inputs_too_small_for_batch_statistics():
    """acml2024 train mode on a 16x16 input: layer4 is 1x1, its batch norm falls back to running stats."""
    model = EmbeddedResNet(num_classes=10).eval()
    cls = METHODS.get("gradient")
    params = build_params(cls.params_cls, {"train_mode": True}, "gradient")
    method = cls(model, MethodContext(num_classes=10), params)
    maps = method(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]))
    assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()
    assert not model.training and all(not m.training for m in model.modules())
