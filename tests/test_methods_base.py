"""The method protocol's single checkpoints: input/output validation and the one run-level preparer."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

from salbench.config import resolve_config
from salbench.errors import SalbenchError
from salbench.methods import METHODS, MethodContext, SaliencyMethod, build_params
from salbench.methods.base import Preparation
from salbench.models import EmbeddedResNet, resolve_target_layer
from salbench.stages.diagnostics import read_targets
from salbench.stages.kinds import method_from_store
from salbench.stages.workspace import open_workspace
from salbench.store.maps import MapStore
from tests.conftest import write_stage_config


class _Constant(SaliencyMethod):
    """Returns whatever map it was given (to test the output checks)."""

    name: ClassVar[str] = "constant"
    family: ClassVar[str] = "Control"

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__(torch.nn.Identity(), MethodContext(num_classes=10))
        self.value = value

    def explain(self, images, targets, generator=None):
        return self.value


def test_inputs_are_checked_before_the_method_runs():
    method = _Constant(torch.zeros(2, 8, 8))
    with pytest.raises(SalbenchError, match=r"constant: images must be a float tensor \(N,C,H,W\)"):
        method(torch.zeros(3, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(SalbenchError, match=r"constant: targets must be an integer tensor"):
        method(torch.zeros(2, 3, 8, 8), torch.tensor([1.0, 2.0]))
    with pytest.raises(SalbenchError, match="constant: 2 images but 3 targets"):
        method(torch.zeros(2, 3, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(SalbenchError, match=r"constant: target class 10 is out of range \[0, 10\)"):
        method(torch.zeros(2, 3, 8, 8), torch.tensor([1, 10]))
    with pytest.raises(SalbenchError, match=r"target class -1 is out of range"):
        method(torch.zeros(2, 3, 8, 8), torch.tensor([-1, 0]))


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (torch.zeros(2, 8, 7), r"maps must be float32 of shape \(2, 8, 8\)"),
        (torch.zeros(2, 8, 8, dtype=torch.float64), "maps must be float32"),
        (torch.full((2, 8, 8), float("nan")), "128 map values are NaN or inf"),
        (torch.full((2, 8, 8), 1.5), r"maps must lie in \[0, 1\], got values in \[1.5, 1.5\]"),
    ],
)
def test_maps_that_break_the_protocol_are_refused(maps, message):
    with pytest.raises(SalbenchError, match=message):
        _Constant(maps)(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))


def _rise(n_masks: int = 4) -> SaliencyMethod:
    model = EmbeddedResNet(num_classes=10).eval()
    cls = METHODS.get("rise")
    return cls(
        model, MethodContext(num_classes=10), build_params(cls.params_cls, {"n_masks": n_masks}, "rise")
    )


def test_rise_masks_are_drawn_once_per_run_saved_and_reloaded(tmp_path):
    prep = Preparation(lambda: [], (16, 16), seed=3, state_dir=tmp_path)
    first = _rise()
    first.prepare(prep)
    path = tmp_path / "rise_masks_n4_s4_p0.1_seed3.npy"
    assert path.is_file() and np.array_equal(np.load(path), first.masks.numpy())
    # another method of the same run (e.g. the sensitivity re-explanation) reloads them from the file
    second = _rise()
    second.prepare(Preparation(lambda: [], (16, 16), seed=3, state_dir=tmp_path))
    assert torch.equal(second.masks, first.masks)
    # without a state folder: drawn from the run seed, shared within one preparation
    unsaved = Preparation(lambda: [], (16, 16), seed=3)
    a, b = _rise(), _rise()
    a.prepare(unsaved)
    b.prepare(unsaved)
    assert torch.equal(a.masks, first.masks) and a.masks.data_ptr() == b.masks.data_ptr()
    other_seed = _rise()
    other_seed.prepare(Preparation(lambda: [], (16, 16), seed=4))
    assert not torch.equal(other_seed.masks, first.masks)


@pytest.mark.numeric
def test_iba_prepare_estimates_statistics_over_every_image():
    # float64 model and images: batches of 4 + 2 and 2 + 4 move the float64 means by ~1e-16 relative;
    # both are then rounded to float32 (IBA stores float32 statistics): at most 1 ulp apart, 2**-23
    model = EmbeddedResNet(num_classes=10).eval().double()
    _, layer = resolve_target_layer(model)
    cls = METHODS.get("iba")
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fitted, prepared = (cls(model, MethodContext(target_layer=layer, num_classes=10)) for _ in range(2))
    fitted.fit([images[:4], images[4:]])
    prepared.prepare(Preparation(lambda: iter([images[:2], images[2:]]), (32, 32)))
    assert prepared.n_fitted == 6
    torch.testing.assert_close(prepared.feature_mean, fitted.feature_mean, rtol=2**-23, atol=0)


def test_reexplaining_a_store_uses_the_run_preparation(tmp_path, imagenet_fixture):
    """The reference protocol's sensitivity re-runs the method under test: rebuilt from a store, RISE must
    use the run's masks and IBA the statistics of the run's images, or the unperturbed map differs."""
    from generation import iba, rise
    from main import diagnostics

    cfg = write_stage_config(
        tmp_path,
        imagenet_fixture,
        "groundtruth",
        "methods: {rise: {n_masks: 8}, iba: {steps: 2, n_noise: 2}}\n",
    )
    c = ["--config", str(cfg)]
    assert diagnostics.main(c) == 0 and rise.main(c) == 0 and iba.main(c) == 0
    ws = open_workspace(resolve_config(cfg))
    rows = np.arange(4)  # the first aligned batch (batch_size 4)
    images = ws.images.load(rows)
    targets = torch.as_tensor(read_targets(ws.layout.diagnostics_csv, "groundtruth", ws.images.ids)[0][rows])
    for store_id in ("rise", "iba"):
        path = ws.layout.maps("groundtruth", store_id)
        method = method_from_store(ws, path)
        gens = ws.row_generators(store_id, [ws.images.ids[i] for i in rows], targets)
        again = method(images, targets, gens).numpy()
        np.testing.assert_array_equal(again, MapStore.read_only(path).read(rows))
