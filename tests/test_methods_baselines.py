"""Model-free maps: fakecam's exact map, random under a seed, Sobel edges on step images, properties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from salbench.errors import ConfigError, DataError
from salbench.methods import METHODS, MethodContext
from salbench.methods.baselines import EdgeMap, FakeCAM, RandomMap, grey, sobel_magnitude

H, W = 6, 8
CTX = MethodContext(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), num_classes=3)
BASELINE_IDS = ["fakecam", "random", "edge"]


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * H * W, 3))


def batch(n: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, H, W, generator=g), torch.arange(n) % 3


def test_fakecam_exact_map() -> None:
    maps = FakeCAM(model(), CTX)(*batch(2))
    expected = torch.ones(2, H, W)
    expected[:, 0, 0] = 0.0
    assert torch.equal(maps, expected) and maps.dtype == torch.float32
    assert FakeCAM.family == "Uninformed" and RandomMap.family == EdgeMap.family == "Control"


def test_random_same_seed_same_maps_and_uniform_range() -> None:
    method = RandomMap(model(), CTX)
    x, t = batch(4)
    a = method(x, t, torch.Generator().manual_seed(5))
    b = method(x, t, torch.Generator().manual_seed(5))
    c = method(x, t, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 1 and a.dtype == torch.float32
    assert torch.equal(a, torch.rand((4, H, W), generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ConfigError, match="Generator"):
        method(x, t, None)


def step_pixels(vertical: bool, at: int) -> torch.Tensor:
    """float64 pixels: normalise / de-normalise round trips stay within ~1e-16 of 0 and 1, so the
    min-max maps are 0 and 1 to ~1e-16 before their float32 rounding; hence atol 1e-12 below
    (float32 round trips leave ulps of ~1e-7 that Sobel and the min-max amplify)."""
    pixels = torch.zeros(1, 3, H, W, dtype=torch.float64)
    if vertical:
        pixels[..., at:] = 1.0
    else:
        pixels[..., at:, :] = 1.0
    return pixels


@pytest.mark.numeric
def test_edge_on_vertical_step_marks_the_two_columns_at_the_step() -> None:
    # Sobel d/dx of a unit step between columns 3 and 4 is 4 on columns 3 and 4 and 0 elsewhere (the
    # replicate-padded border rows see the same step, so d/dy = 0); min-max -> 1 there, 0 elsewhere.
    images = CTX.normalize(step_pixels(vertical=True, at=4))
    expected = torch.zeros(1, H, W)
    expected[..., 3:5] = 1.0
    torch.testing.assert_close(EdgeMap(model(), CTX)(images, torch.tensor([0])), expected, rtol=0, atol=1e-12)


@pytest.mark.numeric
def test_edge_on_horizontal_step_and_flat_image() -> None:
    flat = torch.full((1, 3, H, W), 0.3, dtype=torch.float64)
    images = CTX.normalize(torch.cat([step_pixels(vertical=False, at=2), flat]))
    maps = EdgeMap(model(), CTX)(images, torch.tensor([0, 1]))
    expected = torch.zeros(2, H, W)
    expected[0, 1:3, :] = 1.0
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-12)


def test_edge_uses_the_denormalised_grey_image() -> None:
    # A step in the blue channel only: grey step 0.114, still an edge; magnitude before min-max is 4 * 0.114.
    pixels = torch.zeros(1, 3, H, W)
    pixels[:, 2, :, 4:] = 1.0
    assert torch.allclose(grey(pixels)[0, 0, 0, 4:], torch.tensor(0.114))
    magnitude = sobel_magnitude(grey(pixels))
    assert (
        torch.allclose(magnitude[0, 0, 3:5], torch.tensor(4 * 0.114))
        and magnitude[0, 0, :3].abs().max() < 1e-6
    )
    # Normalised input whose channels differ only by mean/std: a flat grey image has no edges.
    flat = CTX.normalize(torch.full((1, 3, H, W), 0.5))
    assert torch.equal(EdgeMap(model(), CTX)(flat, torch.tensor([0])), torch.zeros(1, H, W))


@pytest.mark.numeric
@pytest.mark.parametrize("name", BASELINE_IDS)
def test_baseline_properties(name: str) -> None:
    net = model()
    state = [(m.training, len(m._forward_hooks), len(m._backward_hooks)) for m in net.modules()]
    cls = METHODS.get(name)
    method = cls(net, CTX)
    x, t = batch(3)
    x_copy, t_copy = x.clone(), t.clone()
    maps = method(x, t, torch.Generator().manual_seed(0))
    assert maps.shape == (3, H, W) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert torch.equal(x, x_copy) and torch.equal(t, t_copy)
    assert torch.equal(method(x, t, torch.Generator().manual_seed(0)), maps)
    assert method(x[:0], t[:0], torch.Generator().manual_seed(0)).shape == (0, H, W)
    if cls.deterministic:
        # float64 images: per-image and batched float64 maps differ by ~1e-16, then both are rounded
        # to float32 maps in [0, 1]: at most one float32 ulp (2**-24) apart
        xd = x.double()
        single = torch.cat([method(xd[i : i + 1], t[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(single, method(xd, t), rtol=0, atol=2**-24)
    assert [(m.training, len(m._forward_hooks), len(m._backward_hooks)) for m in net.modules()] == state
    assert method.store_id == name
    with pytest.raises(DataError, match="targets"):
        method(x, t[:2], torch.Generator().manual_seed(0))
