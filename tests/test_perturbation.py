"""Pure perturbation functions of the recognition metrics, on hand-computable tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from salbench.errors import ConfigError
from salbench.metrics.perturbation import (
    auc,
    black_images,
    blend_rows,
    default_step,
    deletion_inputs,
    gaussian_blur,
    gaussian_kernel,
    insertion_inputs,
    mask_pixels,
    n_steps,
    pixel_order,
    pixel_ranks,
    step_counts,
)


@pytest.mark.numeric
def test_mask_pixels_masks_denormalised_pixels_to_black() -> None:
    # float64: a few elementwise operations on values <= 2, ~1e-16, hence 1e-12
    f64 = {"dtype": torch.float64}
    mean, std = (0.5, 0.25), (0.25, 0.5)
    pixels = torch.tensor([[[[0.2, 1.0]], [[0.6, 0.0]]]], **f64)  # (1, 2, 1, 2) pixels in [0, 1]
    images = (pixels - torch.tensor(mean, **f64).view(1, 2, 1, 1)) / torch.tensor(std, **f64).view(1, 2, 1, 1)
    maps = torch.tensor([[[0.5, 0.0]]], **f64)
    out = mask_pixels(images, maps, mean, std)
    # pixel * m, re-normalised by hand:
    # ch0 (0.1 - 0.5) / 0.25, (0 - 0.5) / 0.25; ch1 (0.3 - 0.25) / 0.5, (0 - 0.25) / 0.5
    expected = torch.tensor([[[[-1.6, -2.0]], [[0.1, -0.5]]]], **f64)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(out[..., 1:], black_images(images, mean, std)[..., 1:])


def test_mask_pixels_identity_statistics_is_plain_product() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 4, 5, generator=gen)
    maps = torch.rand(2, 4, 5, generator=gen)
    out = mask_pixels(images, maps, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    # exact: x * 1 + 0 and (y - 0) / 1 are exact, leaving the one product
    torch.testing.assert_close(out, images * maps.unsqueeze(1), atol=0, rtol=0)
    with pytest.raises(ConfigError, match="mean"):
        mask_pixels(images, maps, (0.0, 0.0), (1.0, 1.0, 1.0))


def test_pixel_order_breaks_ties_by_raster_index() -> None:
    maps = torch.tensor(
        [
            [[1.0, 0.5, 1.0], [0.5, 2.0, 0.5]],
            [[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]],  # constant: raster order
            [[0.0, -0.0, 0.1], [0.1, 0.0, 0.2]],  # -0.0 == 0.0 is a tie
        ]
    )
    order = pixel_order(maps)
    assert order.dtype == torch.long
    assert order.tolist() == [[4, 0, 2, 1, 3, 5], [0, 1, 2, 3, 4, 5], [5, 2, 3, 0, 1, 4]]
    ranks = pixel_ranks(order)
    assert ranks.tolist()[0] == [1, 3, 2, 4, 0, 5]
    assert torch.equal(torch.gather(ranks, 1, order), torch.arange(6).expand(3, 6))


def test_gaussian_kernel_constructions() -> None:
    rise = gaussian_kernel(5, 5.0, "rise")
    assert rise.shape == (5, 5)
    assert rise.sum() == pytest.approx(1.0, abs=1e-12)
    # scipy's 4-sigma Gaussian folded back into a 5 x 5 window: a near box filter
    assert np.abs(rise - 0.04).max() < 3.1e-6
    assert rise[2, 2] == rise.max()
    sampled = gaussian_kernel(3, 1.0, "sampled")
    e = math.exp(-0.5)
    g = np.array([e, 1.0, e]) / (1.0 + 2.0 * e)
    np.testing.assert_allclose(sampled, np.outer(g, g), atol=1e-15)
    for bad in ({"size": 4}, {"sigma": 0.0}, {"construction": "box"}):
        with pytest.raises(ConfigError):
            gaussian_kernel(**{"size": 5, "sigma": 5.0, "construction": "rise", **bad})


def test_gaussian_blur_zero_padding_per_channel() -> None:
    images = torch.ones(1, 2, 5, 5, dtype=torch.float64)
    images[:, 1] = 3.0
    out = gaussian_blur(images, kernel=3, sigma=1.0, construction="sampled")
    e = math.exp(-0.5)
    g0, g1 = e / (1 + 2 * e), 1 / (1 + 2 * e)
    # interior: whole kernel (1); edge: two kernel rows (g1 + g0); corner: a 2 x 2 block (g1 + g0)^2
    assert out[0, 0, 2, 2].item() == pytest.approx(1.0, abs=1e-12)
    assert out[0, 0, 0, 2].item() == pytest.approx(g1 + g0, abs=1e-12)
    assert out[0, 0, 0, 0].item() == pytest.approx((g1 + g0) ** 2, abs=1e-12)
    torch.testing.assert_close(out[:, 1], 3.0 * out[:, 0], atol=1e-12, rtol=0)
    # acml2024: 5 x 5, sigma 5, here in float64 (25-tap sums: ~1e-15; a float32 blur could be off by
    # up to 25 * 2**-24 = 1.5e-6); the corner covers 9 taps, each within 3.1e-6 of 0.04: abs 1e-4
    study = gaussian_blur(images)
    assert study.shape == images.shape
    assert study[0, 0, 2, 2].item() == pytest.approx(1.0, abs=1e-12)
    assert study[0, 0, 0, 0].item() == pytest.approx(9 * 0.04, abs=1e-4)


def test_step_rules() -> None:
    assert default_step(224, 224) == 1792
    assert n_steps(224, 224, 1792) == 28
    assert default_step(112, 112) == 448
    assert n_steps(112, 112, default_step(112, 112)) == 28
    assert n_steps(4, 4, 3) == 6
    assert step_counts(4, 4, 3).tolist() == [0, 3, 6, 9, 12, 15, 16]
    with pytest.raises(ConfigError, match="step"):
        n_steps(4, 4, 0)


def test_deletion_and_insertion_inputs_hand_example() -> None:
    images = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    blurred = torch.full_like(images, 10.0)
    order = pixel_order(torch.tensor([[[0.1, 0.9], [0.5, 0.3]]]))  # pixels 1, 2, 3, 0
    dele = deletion_inputs(images, order, step=3, substrate=-1.0)
    assert dele.shape == (3, 1, 2, 2)
    assert dele[:, 0].flatten(1).tolist() == [[1, 2, 3, 4], [1, -1, -1, -1], [-1, -1, -1, -1]]
    ins = insertion_inputs(images, blurred, order, step=3)
    assert ins[:, 0].flatten(1).tolist() == [[10, 10, 10, 10], [10, 2, 3, 4], [1, 2, 3, 4]]


def test_blend_rows_matches_materialised_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(3, 2, 4, 3, generator=gen)
    blurred = gaussian_blur(images)
    order = pixel_order(torch.rand(3, 4, 3, generator=gen))
    full = insertion_inputs(images, blurred, order, step=5)  # 12 pixels: counts 0, 5, 10, 12
    sources = torch.cat([images, blurred])
    img = torch.arange(3).repeat_interleave(4)
    counts = step_counts(4, 3, 5).repeat(3)
    lazy = blend_rows(sources, img, 3 + img, pixel_ranks(order)[img], counts)
    torch.testing.assert_close(lazy, full, atol=0, rtol=0)  # exact: lerp with 0/1 weights copies


def test_auc_trapezoid_rule() -> None:
    assert auc(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert auc(np.array([0.0, 0.5, 1.0])) == pytest.approx(0.5)
    assert auc(np.array([0.9, 0.1, 0.1, 0.1])) == pytest.approx((1.2 - 0.45 - 0.05) / 3)
    np.testing.assert_allclose(auc(np.array([[1.0, 0.0], [0.2, 0.4]])), [0.5, 0.3])
    torch.testing.assert_close(auc(torch.tensor([0.0, 1.0])), torch.tensor(0.5))
    with pytest.raises(ConfigError):
        auc(np.array([1.0]))
