"""RISE: mask construction, recovery of a known region, batching, mask storage, protocol properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.transform import resize
from torch import nn

from salbench.errors import ConfigError, SalbenchError
from salbench.methods.base import METHODS, MethodContext
from salbench.methods.rise import (
    Rise,
    RiseParams,
    generate_masks,
    interpolation_matrix,
    load_masks,
    save_masks,
    upsample_grids,
)

CTX = MethodContext(num_classes=3)


class RegionMean(nn.Module):
    """Class-0 logit = mean of all channels over rows 8:20, cols 10:22; class 1 = its negative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, :, 8:20, 10:22].mean((1, 2, 3))
        return torch.stack([m, -m], 1)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("boom")
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean((2, 3)))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_with_metadata():
    assert METHODS.get("rise") is Rise
    assert Rise.family == "Occlusion" and Rise.deterministic is False
    assert RiseParams() == RiseParams(n_masks=32, grid_size=4, p1=0.1, score="logits")


def test_generate_masks_deterministic_shape_range_fraction():
    a = generate_masks(2000, 4, 0.1, (20, 24), _gen(3))
    b = generate_masks(2000, 4, 0.1, (20, 24), _gen(3))
    c = generate_masks(2000, 4, 0.1, (20, 24), _gen(4))
    assert a.shape == (2000, 20, 24) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # every upsampled pixel is a convex combination of Bernoulli(p1) cells: expectation p1. Seeded draws;
    # sd of the mean ~ sqrt(p1 (1 - p1) / cells): 0.0017 for 2000 x 4 x 4 cells (bound: 6 sd), 0.0016
    # for 2000 x 7 x 7 cells at p1 = 0.5 (bound: 12 sd)
    assert abs(float(a.mean()) - 0.1) < 0.01
    assert abs(float(generate_masks(2000, 7, 0.5, (16, 16), _gen(0)).mean()) - 0.5) < 0.02


@pytest.mark.numeric
def test_upsample_matches_skimage_resize_and_crop():
    """Paper code: resize(grid, (s+1)*cell, order=1, mode='reflect', anti_aliasing=False), then crop."""
    g = torch.Generator().manual_seed(1)
    grids = (torch.rand(5, 4, 4, generator=g) < 0.5).float()
    H, W = 14, 10
    cell = (math.ceil(H / 4), math.ceil(W / 4))
    shifts = torch.stack(
        [torch.randint(0, cell[0], (5,), generator=g), torch.randint(0, cell[1], (5,), generator=g)], 1
    )
    ours = upsample_grids(grids, shifts, (H, W))
    for i in range(5):
        up = resize(
            grids[i].numpy(), (5 * cell[0], 5 * cell[1]), order=1, mode="reflect", anti_aliasing=False
        )
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        # 0/1 cells, the same bilinear weights: ours float64 rounded once to float32, skimage float32
        # (<= 7 roundings of values <= 1): <= 8 * 2**-24
        np.testing.assert_allclose(ours[i].numpy(), up[dy : dy + H, dx : dx + W], rtol=0, atol=8 * 2**-24)


def test_rise_recovers_the_region_the_score_depends_on():
    rise = Rise(RegionMean(), CTX, RiseParams(n_masks=8000, grid_size=8, p1=0.5, max_batch=2048))
    m = rise.explain(torch.ones(1, 3, 32, 32), torch.tensor([0]), _gen(0))[0]
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[8:20, 10:22] = True
    top = torch.zeros(32 * 32, dtype=torch.bool)
    top[m.flatten().topk(int(region.sum())).indices] = True
    top = top.view(32, 32)
    iou = float((top & region).sum() / (top | region).sum())
    assert iou > 0.8
    inner = torch.zeros_like(region)
    inner[10:18, 12:20] = True
    far = torch.ones_like(region)
    far[4:24, 6:26] = False
    assert float(m[inner].min()) > float(m[far].max()) + 0.2
    assert float(m[region].mean() - m[~region].mean()) > 0.4


@pytest.mark.numeric
@pytest.mark.parametrize("score", ["logits", "probs"])
def test_batched_equals_per_image_loop(score):
    """float64 model, images and reference loop: the loop is exact to ~1e-16. salbench's RISE keeps
    float32 scores (``Rise.scores`` casts the logits) and sums s M / (N p1) over the 20 masks in
    float32: <= 23 * 2**-24 * max|s| * max(sum M) / (N p1) relative to the map's span (that product
    is <= 1.9 here), ~2.6e-6 after the min-max: atol 1e-5. (A float32 model would add its batch-layout
    noise, amplified by the same factor.)"""
    model = TinyNet().eval().double()
    images = torch.randn(3, 3, 12, 12, generator=_gen(5), dtype=torch.float64)
    targets = torch.tensor([0, 2, 1])
    p = RiseParams(n_masks=20, grid_size=3, p1=0.3, score=score, max_batch=7)  # chunks straddle images
    rise = Rise(model, CTX, p)
    maps = rise.explain(images, targets, _gen(9))
    masks = rise.masks
    assert masks is not None and torch.equal(masks, generate_masks(20, 3, 0.3, (12, 12), _gen(9)))
    ref = []
    with torch.no_grad():
        for b in range(3):
            sal = torch.zeros(12, 12, dtype=torch.float64)
            for n in range(20):
                out = model((images[b] * masks[n])[None])[0]
                if score == "probs":
                    out = torch.softmax(out, 0)
                sal += out[targets[b]] * masks[n]
            sal /= 20 * 0.3
            ref.append((sal - sal.min()) / (sal.max() - sal.min()))
    torch.testing.assert_close(maps.double(), torch.stack(ref), atol=1e-5, rtol=0)


def test_masks_generated_once_and_reusable(tmp_path):
    model = TinyNet().eval()
    images = torch.randn(2, 3, 10, 10, generator=_gen(1))
    t = torch.tensor([1, 0])
    rise = Rise(model, CTX, RiseParams(n_masks=16, grid_size=2))
    first = rise.explain(images, t, _gen(0))
    masks = rise.masks.clone()
    again = rise.explain(images, t, _gen(123))  # masks are kept: the generator is not used again
    assert torch.equal(first, again) and torch.equal(rise.masks, masks)
    save_masks(masks, tmp_path / "masks.npy")
    loaded = load_masks(tmp_path / "masks.npy")
    assert torch.equal(loaded, masks)
    other = Rise(model, CTX, RiseParams(n_masks=16, grid_size=2), masks=loaded)
    assert torch.equal(other.explain(images, t), first)
    with pytest.raises(SalbenchError, match="use one image size per run"):
        rise.explain(torch.randn(1, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(ConfigError, match="n_masks"):
        other.set_masks(masks[:3])


def test_protocol_properties_and_state_restored_on_error():
    model = TinyNet()
    model.train()
    images = torch.randn(4, 3, 12, 12, generator=_gen(2))
    before = images.clone()
    rise = Rise(model, CTX, RiseParams(n_masks=12, grid_size=3, max_batch=5))
    maps = rise.explain(images, torch.tensor([0, 1, 2, 0]), _gen(0))
    assert maps.shape == (4, 12, 12) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.amax((1, 2)), torch.ones(4))
    assert torch.equal(images, before)
    assert model.training and model.bn.training
    assert not any(m._forward_hooks for m in model.modules())
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        rise.explain(images, torch.tensor([0, 1, 2, 0]))
    assert model.training and model.bn.training


@pytest.mark.parametrize(
    "kwargs", [{"n_masks": 0}, {"grid_size": 0}, {"p1": 0.0}, {"p1": 1.5}, {"score": "x"}, {"max_batch": 0}]
)
def test_invalid_params_rejected(kwargs):
    with pytest.raises(ConfigError):
        RiseParams(**kwargs)


def test_interpolation_matrix_by_hand():
    # src = (o + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> mirrored 0.25, 0.25, 0.75, 0.75
    expected = torch.tensor([[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]], dtype=torch.float64)
    torch.testing.assert_close(interpolation_matrix(2, 4), expected)
    assert torch.equal(interpolation_matrix(1, 3), torch.ones(3, 1, dtype=torch.float64))
