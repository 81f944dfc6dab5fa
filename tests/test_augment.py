"""Augmentations of the augmented-image stage: determinism, seed-only dependence, exact reconstruction."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from salbench.data import augmentations as A
from salbench.errors import ConfigError, DataError

N_IMAGES, SIDE = 9, 16
LABELS = (0, 1, 2, 0, 1, 2, 0, 1, 2)
IDS = tuple(f"val/img_{i:03d}.png" for i in range(N_IMAGES))
Dataset = tuple[torch.Tensor, torch.Tensor, A.PartnerPool]


@pytest.fixture
def dataset() -> Dataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(N_IMAGES, 3, SIDE, SIDE, generator=g)
    labels = torch.tensor(LABELS)
    return images, labels, A.PartnerPool.from_tensor(images, LABELS, IDS)


def test_study_variants_and_resize_sizes() -> None:
    assert A.resize_sizes(224) == (32, 64, 128, 448)
    assert A.resize_sizes(112) == (16, 32, 64, 224)
    names = [v.name for v in A.STUDY_VARIANTS]
    assert names == [
        *(f"mixup_{s}" for s in (32, 44, 55, 93)),
        *(f"resize_{s}" for s in (32, 64, 128, 448)),
        *(f"rotation_{a}" for a in (45, 135, 225, 315)),
        *(f"crop_{s}" for s in (32, 44, 55, 93)),
        *(f"cutmix_{s}" for s in (32, 44, 55, 93)),
    ]
    assert A.STUDY_VARIANTS[4] == A.Variant("resize", "resize_32", 32)
    small = [v.seed_or_param for v in A.study_variants(112) if v.augmentation == "resize"]
    assert small == [16, 32, 64, 224]
    assert [v for v in A.study_variants(112) if v.augmentation != "resize"] == [
        v for v in A.STUDY_VARIANTS if v.augmentation != "resize"
    ]


@pytest.mark.parametrize(
    ("augmentation", "value"),
    [("blur", 3), ("mixup", -1), ("resize", 0), ("crop", 1.5), ("rotation", math.inf)],
)
def test_variant_rejects_bad_values(augmentation: str, value: float) -> None:
    with pytest.raises(ConfigError, match=augmentation):
        A.make_variant(augmentation, value)
    with pytest.raises(ConfigError, match="input_size"):
        A.resize_sizes(0)


def _apply_in_batches(
    variant: A.Variant,
    images: torch.Tensor,
    labels: torch.Tensor,
    pool: A.PartnerPool,
    rows: list[int],
    size: int,
) -> tuple[torch.Tensor, list[dict]]:
    outs, params = [], []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        res = A.apply_variant(variant, images[chunk], labels[chunk], [IDS[i] for i in chunk], pool)
        outs.append(res.images)
        params += res.params
    return torch.cat(outs), params


def test_same_seed_is_bit_identical_and_independent_of_batching(dataset: Dataset) -> None:
    images, labels, pool = dataset
    before = images.clone()
    for variant in A.study_variants(SIDE):
        full = A.apply_variant(variant, images, labels, IDS, pool)
        again = A.apply_variant(variant, images, labels, IDS, pool)
        assert torch.equal(full.images, again.images) and full.params == again.params, variant.name
        assert torch.equal(full.labels, labels), variant.name
        assert json.loads(json.dumps(full.params)) == full.params
        rows = list(range(N_IMAGES))
        for batch_size in (1, 5):
            out, params = _apply_in_batches(variant, images, labels, pool, rows, batch_size)
            assert torch.equal(out, full.images) and params == full.params, (variant.name, batch_size)
        subset = [7, 2, 4]  # other images, other order
        out, params = _apply_in_batches(variant, images, labels, pool, subset, 3)
        assert torch.equal(out, full.images[subset]), variant.name
        assert params == [full.params[i] for i in subset], variant.name
    assert torch.equal(images, before)


@pytest.mark.parametrize("augmentation", ["mixup", "cutmix", "crop"])
def test_different_seeds_differ(dataset: Dataset, augmentation: str) -> None:
    images, labels, pool = dataset
    a = A.apply_variant(A.make_variant(augmentation, 32), images, labels, IDS, pool)
    b = A.apply_variant(A.make_variant(augmentation, 44), images, labels, IDS, pool)
    assert not torch.equal(a.images, b.images)
    assert sum(pa != pb for pa, pb in zip(a.params, b.params)) >= N_IMAGES - 1


def test_partners_have_another_class_and_come_from_the_whole_pool(dataset: Dataset) -> None:
    images, labels, pool = dataset
    seen: set[str] = set()
    for seed in range(150):
        for augmentation in ("mixup", "cutmix"):
            res = A.apply_variant(A.make_variant(augmentation, seed), images[:1], labels[:1], IDS[:1], pool)
            p = res.params[0]
            assert p["partner_label"] != LABELS[0] == int(res.labels[0])
            assert (
                p["partner_label"] == LABELS[p["partner_index"]]
                and p["partner_id"] == IDS[p["partner_index"]]
            )
            seen.add(p["partner_id"])
    # batch of one image: partners are the 6 images of classes 1 and 2 of the full list
    assert seen == {IDS[i] for i in range(N_IMAGES) if LABELS[i] != 0}


def test_draws_are_uniform() -> None:
    pool = A.PartnerPool(IDS, LABELS, lambda idx: torch.zeros(len(idx)))
    counts = np.zeros(N_IMAGES)
    lams = []
    for seed in range(2000):
        g = A.image_generator("mixup", seed, IDS[0])
        counts[A.draw_partner(0, pool, g)] += 1
        lams.append(A.draw_lambda(g))
    assert counts[[0, 3, 6]].sum() == 0
    # 2000 draws over 6 partners: expected 333 each, sd 16.7; bounds at about 5 sd
    assert np.all(counts[[1, 2, 4, 5, 7, 8]] > 250) and np.all(counts[[1, 2, 4, 5, 7, 8]] < 417)
    # Beta(1,1) = U(0,1): mean 0.5 (sd of the mean 0.0065), variance 1/12 (sd of the sample variance
    # sqrt((1/80 - 1/144) / 2000) = 0.0017); seeded draws, bounds at >= 4.6 sd
    assert abs(np.mean(lams) - 0.5) < 0.03 and abs(np.var(lams) - 1 / 12) < 0.01
    assert min(lams) >= 0.0 and max(lams) < 1.0


def test_mixup_parameters_reproduce_the_image(dataset: Dataset) -> None:
    images, labels, pool = dataset
    res = A.apply_variant(A.make_variant("mixup", 55), images, labels, IDS, pool)
    for i, p in enumerate(json.loads(json.dumps(res.params))):
        partner = images[p["partner_index"]]
        assert torch.equal(A.reconstruct_mixup(images[i], partner, p["lam"]), res.images[i])
        expected = p["lam"] * images[i].double() + (1 - p["lam"]) * partner.double()
        # float32 mixing vs float64, elementwise (no reduction, so no layout dependence): lam cast to
        # float32, two products and a sum, each rounded by <= 2**-24 relative, terms |x| < 6 (randn):
        # <= 4 * 6e-8 * 6 ~ 1.4e-6 even with or without FMA; 1e-5 is that bound with a margin
        torch.testing.assert_close(res.images[i].double(), expected, rtol=0, atol=1e-5)


def test_cutmix_parameters_reproduce_the_image(dataset: Dataset) -> None:
    images, labels, pool = dataset
    res = A.apply_variant(A.make_variant("cutmix", 93), images, labels, IDS, pool)
    for i, p in enumerate(json.loads(json.dumps(res.params))):
        top, left, h, w = p["box"]
        assert 0 <= top <= SIDE - h and 0 <= left <= SIDE - w
        assert p["lam"] == 1 - h * w / SIDE**2
        assert torch.equal(
            A.reconstruct_cutmix(images[i], images[p["partner_index"]], p["box"]), res.images[i]
        )
        inside = torch.zeros(SIDE, SIDE, dtype=torch.bool)
        inside[top : top + h, left : left + w] = True
        assert torch.equal(res.images[i][:, inside], images[p["partner_index"]][:, inside])
        assert torch.equal(res.images[i][:, ~inside], images[i][:, ~inside])


def test_cutmix_box_follows_yun_et_al() -> None:
    # lam = 0.75: side ratio sqrt(0.25) = 0.5 -> cut 10 of 20 px, half-side 5, centre (cy, cx) drawn in order
    g = torch.Generator().manual_seed(3)
    cy, cx = int(torch.randint(20, (), generator=g)), int(torch.randint(20, (), generator=g))
    box = A.cutmix_box(20, 20, 0.75, torch.Generator().manual_seed(3))
    top, left = max(cy - 5, 0), max(cx - 5, 0)
    assert box == (top, left, min(cy + 5, 20) - top, min(cx + 5, 20) - left)
    # centre well inside: the box has the full 1 - lam area
    areas = [math.prod(A.cutmix_box(40, 40, 0.75, torch.Generator().manual_seed(s))[2:]) for s in range(50)]
    assert max(areas) == 400 and min(areas) < 400


@pytest.mark.numeric
def test_rotation_identities_and_sign(dataset: Dataset) -> None:
    images = dataset[0]
    assert torch.equal(A.rotate(images, 0), images) and torch.equal(A.rotate(images, 360), images)
    # counter-clockwise: 90 degrees = transpose then flip rows (torch.rot90 k=1). In float64 the sampling
    # grid (cos 90 = 6e-17) lands on pixel centres within ~1e-14 px; times neighbour differences < 10
    # that is < 1e-12 over the whole image, border included (float32 grids: ~1e-6 px, ~1e-5 in value)
    x = images.double()
    torch.testing.assert_close(A.rotate(x, 90), x.transpose(-2, -1).flip(-2), rtol=0, atol=1e-12)
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 6] = 1.0  # right of the centre -> above it
    assert torch.nonzero(A.rotate(dot, 90)[0, 0]).tolist() == [[2, 4]]
    assert torch.nonzero(A.rotate(dot, -90)[0, 0]).tolist() == [[6, 4]]


@pytest.mark.numeric
@pytest.mark.parametrize("angle", [45, 135, 225, 315, 30])
def test_rotation_matches_scipy_bilinear_with_zero_fill(angle: int) -> None:
    # scipy.ndimage.rotate(order=1, mode="grid-constant", cval=0) is bilinear sampling with 0 outside,
    # same centre and sense; float64 agreement to 1e-12 over the whole image, border included
    x = torch.randn(2, 3, 10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = A.rotate(x, angle)
    ref = ndi.rotate(x.numpy(), angle, axes=(3, 2), reshape=False, order=1, mode="grid-constant", cval=0.0)
    torch.testing.assert_close(out, torch.from_numpy(ref), rtol=0, atol=1e-12)


@pytest.mark.numeric
def test_resize_identity_hand_values_and_pil(dataset: Dataset) -> None:
    images = dataset[0]
    same = A.resize(images, SIDE)
    assert torch.equal(same, images) and same.data_ptr() != images.data_ptr()
    # antialiased bilinear 4 -> 2: triangle of half-width 2 input px, weights (3, 3, 1)/7 and (1, 3, 3)/7;
    # float64, 3-term sums of values <= 3: ~1e-15
    ramp = torch.arange(4.0, dtype=torch.float64).repeat(4, 1).reshape(1, 1, 4, 4)
    expected = torch.tensor([5 / 7, 16 / 7], dtype=torch.float64)
    torch.testing.assert_close(A.resize(ramp, 2)[0, 0, 0], expected, rtol=0, atol=1e-12)
    # PIL's bilinear resize (which the antialias option mimics) on a float image. PIL sums in double and
    # rounds to float32 after each of its two passes (<= 2**-24 each for values in [0, 1], positive
    # weights summing to 1); ours runs in float64 on the same float32 pixels: <= 2 * 2**-24 apart
    arr = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    pil = np.asarray(Image.fromarray(arr, mode="F").resize((3, 3), Image.Resampling.BILINEAR))
    ours = A.resize(torch.from_numpy(arr).double()[None, None], 3)[0, 0].numpy()
    np.testing.assert_allclose(ours, pil, rtol=0, atol=2 * 2**-24)
    assert A.resize(images, 40).shape == (N_IMAGES, 3, 40, 40)


def test_crop_params_match_torchvision_and_bounds() -> None:
    for seed in range(300):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            expected = RandomResizedCrop.get_params(torch.zeros(3, 224, 200), [0.08, 1.0], [3 / 4, 4 / 3])
        top, left, h, w = A.crop_params(224, 200, torch.Generator().manual_seed(seed))
        assert (top, left, h, w) == expected
        assert 0 <= top <= 224 - h and 0 <= left <= 200 - w
        # rounding of each side to whole pixels moves area and aspect slightly past the bounds
        assert 0.08 - 0.01 <= h * w / (224 * 200) <= 1.0
        assert 3 / 4 - 0.03 <= w / h <= 4 / 3 + 0.03
    # scale > 1 never fits: centre-crop fallback, 30 x 10 clamped to ratio 4/3 -> 13 wide at left (30-13)//2
    assert A.crop_params(10, 30, torch.Generator().manual_seed(0), scale=(2.0, 3.0)) == (0, 8, 10, 13)


@pytest.mark.numeric
def test_crop_variant_resizes_the_box_to_the_input_size(dataset: Dataset) -> None:
    # float64: the same interpolation kernel on the same crop, 2 taps per axis when upsampling; any
    # other summation order costs ~4 * 2**-53 * |x| (< 1e-14), hence 1e-12
    images, labels, _ = dataset
    images = images.double()
    pool = A.PartnerPool.from_tensor(images, LABELS, IDS)
    res = A.apply_variant(A.make_variant("crop", 44), images, labels, IDS, pool)
    assert res.images.shape == images.shape
    top, left, h, w = res.params[3]["box"]
    crop = images[3:4, :, top : top + h, left : left + w]
    ref = torch.nn.functional.interpolate(crop, size=(SIDE, SIDE), mode="bilinear", antialias=True)
    torch.testing.assert_close(res.images[3:4], ref, rtol=0, atol=1e-12)


def test_content_hash() -> None:
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    header = b"torch.float32|(2, 3)|"
    assert A.content_hash(x) == hashlib.sha256(header + x.numpy().tobytes()).hexdigest()
    assert A.content_hash(x.t().contiguous().t()) == A.content_hash(x)
    y = x.clone()
    y[1, 2] = torch.nextafter(y[1, 2], torch.tensor(100.0))
    assert A.content_hash(y) != A.content_hash(x)
    assert A.content_hash(x.double()) != A.content_hash(x)
    assert A.content_hash(x.reshape(3, 2)) != A.content_hash(x)


def test_input_errors(dataset: Dataset) -> None:
    images, labels, pool = dataset
    with pytest.raises(ConfigError, match="partner_pool"):
        A.apply_variant(A.make_variant("mixup", 32), images, labels, IDS)
    one_class = A.PartnerPool.from_tensor(images, [0] * N_IMAGES, IDS)
    with pytest.raises(DataError, match="no image of a class other than 0"):
        A.apply_variant(A.make_variant("cutmix", 32), images[:1], labels[:1], IDS[:1], one_class)
    with pytest.raises(DataError, match="has label 0"):
        A.apply_variant(A.make_variant("mixup", 32), images[:1], torch.tensor([2]), IDS[:1], pool)
    with pytest.raises(DataError, match="labels"):
        A.apply_variant(A.make_variant("rotation", 45), images, labels[:3], IDS)
    with pytest.raises(DataError, match="not unique"):
        A.PartnerPool(("a", "a"), (0, 1), lambda idx: images[idx])
