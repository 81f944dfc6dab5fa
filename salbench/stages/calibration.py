"""What the cost planner measures of a run: its images (counted), its model (built as the run builds it,
probed once) and the time of a pass on the run's device.

``salbench plan --costs`` trains and generates nothing: when the run's weights are not on disk (an
embedded model not trained yet, torchvision weights not in the hub cache) an untrained instance of the
same architecture stands in, which takes the same time per pass and has the same layers. One forward of
a zero image up to the target layer gives its channel count (Score-CAM and Ablation-CAM make one pass per
channel); a few calibration batches of the run's batch size give the seconds per image of a forward
(eval mode, no autograd) and of a forward + backward to the input (the gradient methods' pass).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from salbench.config import Config
from salbench.data.listing import scan_image_folder
from salbench.data.sources import embedded_root, open_data, preprocess_for
from salbench.errors import ConfigError, DataError
from salbench.methods.gradients import input_gradients
from salbench.methods.spatial import layer_output, to_grid
from salbench.models.inputs import model_input_spec
from salbench.models.layers import resolve_target_layer
from salbench.models.registry import build_architecture, build_model, with_memory_format
from salbench.scoped import frozen_parameters, model_mode
from salbench.stages.costs import Passes, Shape
from salbench.stages.workspace import with_default_checkpoint


@dataclasses.dataclass(frozen=True)
class PlannedModel:
    """The run's model as the planner sees it.

    Attributes:
        model: in eval mode on the run device.
        num_classes: its outputs.
        stand_in: why an untrained instance stands in for the run's weights ("" when they loaded).
        shape: its input and target layer.
        layer: the target layer's module path ("" when it has none).
    """

    model: nn.Module
    num_classes: int
    stand_in: str
    shape: Shape
    layer: str


def _data_classes(cfg: Config) -> int:
    """The class count the data would give the model when neither config nor weights say it."""
    if cfg.data.kind == "embedded":
        from salbench.data.shapes import CLASS_NAMES

        return len(CLASS_NAMES)
    if cfg.data.kind == "imagefolder" and cfg.data.root and Path(cfg.data.root).is_dir():
        try:
            return len(scan_image_folder(Path(cfg.data.root))[1]) or 1000
        except DataError:
            pass
    return 1000


def listed_images(cfg: Config) -> int:
    """Images the run explains: its list after ``run.limit``, read without generating or decoding any
    (an embedded benchmark not generated yet has the configured split size).

    Raises:
        DataError: the data cannot be listed (no root, no list file).
    """
    d = cfg.data
    if d.kind == "embedded" and not (embedded_root(cfg) / "classes.txt").is_file():
        e = d.embedded
        n = {"train": e.n_train, "val": e.n_val, "eval": e.n_eval}.get(d.split, e.n_eval)
    else:
        n = len(open_data(cfg, limit=0).records)
    return min(n, cfg.run.limit) if cfg.run.limit else n


def build_planned(cfg: Config) -> tuple[nn.Module, int, str]:
    """``(model, num_classes, stand_in)``: the run's model with its weights, or an untrained instance of
    its architecture when the weights are not on disk (``stand_in`` says why)."""
    n = cfg.model.num_classes or _data_classes(cfg)
    try:
        model, info = build_model(with_default_checkpoint(cfg).model, n)
        return model, int(info["num_classes"]), ""
    except DataError as exc:  # weights or checkpoint missing or unreadable: the architecture suffices
        model = with_memory_format(build_architecture(cfg.model, n), cfg.model.memory_format).eval()
        return model, n, f"untrained {cfg.model.name} (no weights: {exc})"


def plan_model(cfg: Config, device: str) -> PlannedModel:
    """Build the run's model on ``device``, resolve its input as the stages do and probe its target layer.

    Raises:
        ConfigError: a ``model.target_layer`` that does not exist, an unknown model, bad input values.
    """
    model, n, stand_in = build_planned(cfg)
    model = model.to(device)
    pre = preprocess_for(cfg, model_input_spec(cfg.model, model, n))
    size = (pre.crop, pre.crop)
    try:
        spec, layer = resolve_target_layer(model, cfg.model.target_layer)
    except ConfigError as exc:
        if cfg.model.target_layer:
            raise
        return PlannedModel(model, n, stand_in, Shape(size, pre.channels, None, str(exc)), "")
    try:
        example = torch.zeros(1, pre.channels, *size, device=device)
        grid = to_grid("the CAM methods", model, layer, layer_output(model, layer, example), size)
    except ConfigError as exc:  # NotApplicableError: the layer has no spatial grid
        return PlannedModel(model, n, stand_in, Shape(size, pre.channels, None, str(exc)), spec)
    return PlannedModel(model, n, stand_in, Shape(size, pre.channels, int(grid.shape[1])), spec)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per image of the run's model on one device, measured by :func:`calibrate`.

    Attributes:
        device: ``cpu`` or ``cuda``, with the CPU threads or the GPU's name.
        batch_size: images per calibration batch (the run's ``batch_size``).
        batches: timed batches (after one warm-up batch); the fastest is kept.
        forward_s: seconds per image of a forward in eval mode without autograd.
        forward_backward_s: seconds per image of a forward with autograd and a backward to the input.
    """

    device: str
    batch_size: int
    batches: int
    forward_s: float
    forward_backward_s: float

    def seconds(self, passes: Passes, scale: float = 1.0) -> float:
        """Estimated seconds of ``passes``: a forward paired with a backward costs ``forward_backward_s``,
        a forward alone ``forward_s`` (every pass ``scale`` times as long: a resized input)."""
        both = min(passes.forward, passes.backward)
        backward_only = max(self.forward_backward_s - self.forward_s, 0.0)
        return scale * (
            both * self.forward_backward_s
            + (passes.forward - both) * self.forward_s
            + (passes.backward - both) * backward_only
        )


def _per_image(run: Callable[[], object], rows: int, batches: int, device: str) -> float:
    """Best seconds per row of ``run`` over ``batches`` timed calls after one warm-up call (the best:
    other processes on the machine only ever slow a call down)."""

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    run()
    times = []
    for _ in range(batches):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return min(times) / rows


def calibrate(model: nn.Module, shape: Shape, device: str, batch_size: int, batches: int = 2) -> Timing:
    """Time a forward and a forward + backward of ``model`` on batches of ``batch_size`` random images.

    Args:
        model: the run's model (or its untrained stand-in), on ``device``.
        shape: its input (``size``, ``channels``).
        device: ``cpu`` or ``cuda``.
        batch_size: images per batch (the run's ``batch_size``).
        batches: timed batches per measurement (after one warm-up).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, shape.channels, *shape.size, generator=g).to(device)
    targets = torch.zeros(batch_size, dtype=torch.long, device=device)

    def forward() -> object:
        with torch.no_grad(), model_mode(model, False):
            return model(x)

    def forward_backward() -> object:
        with model_mode(model, False), frozen_parameters(model), torch.enable_grad():
            return input_gradients(model, x, targets)

    where = torch.cuda.get_device_name(0) if device == "cuda" else f"{torch.get_num_threads()} threads"
    return Timing(
        f"{device} ({where})",
        batch_size,
        batches,
        _per_image(forward, batch_size, batches, device),
        _per_image(forward_backward, batch_size, batches, device),
    )
