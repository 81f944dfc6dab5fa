"""Everything a stage needs, resolved once from the config: runtime, layout, data, model, method context."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from salbench.config import Config
from salbench.data.images import FileImages, ImageSource, loader_workers, stream
from salbench.data.sources import DataSource, fit_to_model, open_data
from salbench.data.transforms import InputSpec, key_name
from salbench.errors import ConfigError, DataError
from salbench.methods.base import METHODS, MethodContext, Preparation, SaliencyMethod, build_params
from salbench.methods.deprocess import get_deprocessor
from salbench.methods.gradients import GradientFamilyMethod
from salbench.metrics import GROUPS
from salbench.models.factory import first_line
from salbench.models.inputs import model_input_spec
from salbench.models.layers import get_submodule, resolve_target_layer
from salbench.models.registry import EMBEDDED_MODELS, build_architecture, build_model
from salbench.progress import progress as progress_bar
from salbench.rng import row_generators
from salbench.runtime import Runtime, keyed_generator, setup_runtime
from salbench.scoped import model_mode
from salbench.store.layout import RunLayout, embedded_checkpoint
from salbench.store.outputs import digest

log = logging.getLogger(__name__)


def with_default_checkpoint(cfg: Config) -> Config:
    """For embedded models without ``model.checkpoint``: a new config pointing at the cached checkpoint."""
    if cfg.model.name in EMBEDDED_MODELS and not cfg.model.checkpoint:
        model = dataclasses.replace(cfg.model, checkpoint=str(embedded_checkpoint(cfg)))
        return dataclasses.replace(cfg, model=model)
    return cfg


@dataclasses.dataclass(frozen=True)
class Workspace:
    """Resolved inputs of a stage (built by :func:`open_workspace`)."""

    cfg: Config
    runtime: Runtime
    layout: RunLayout
    data: DataSource
    model: nn.Module
    model_info: dict[str, Any]
    target_layer: str
    context: MethodContext
    images: ImageSource
    augmentation: str = "none"
    variant: str = "none"

    def describe(self) -> dict[str, Any]:
        """Provenance recorded in manifests."""
        return {"data": self.data.describe(), "model": self.model_info, "target_layer": self.target_layer}

    @property
    def model_identity(self) -> dict[str, Any]:
        """What decides the model's outputs: architecture, class count, weights digest, input spec."""
        return {
            "name": self.cfg.model.name,
            "num_classes": self.model_info["num_classes"],
            "state_sha256": self.model_info["state_sha256"],
            "input": dataclasses.asdict(self.data.preprocess),
        }

    @property
    def model_id(self) -> str:
        """Short digest of :attr:`model_identity`; skip-if-done checks compare it."""
        return digest(self.model_identity)

    @property
    def checkpoint_id(self) -> str:
        """The first 12 hex digits of the weights' SHA-256 (``results.csv``'s ``checkpoint``)."""
        return str(self.model_info["state_sha256"])[:12]

    @property
    def images_id(self) -> str:
        """Short digest of the image ids and labels in order (a class index or wnid mapping changes the
        labels, not the ids) and of materialised images' content, when known."""
        return digest(
            {
                "ids": self.images.ids,
                "labels": [int(v) for v in self.images.labels],
                "content": getattr(self.images, "meta", {}).get("content_hash"),
            }
        )

    def generator(self, key: str, index: int = 0) -> torch.Generator:
        """Generator of one keyed draw of the run (e.g. a map store id and an aligned batch index):
        a stable function of (run seed, ``key``, ``index``), see :func:`salbench.runtime.keyed_generator`."""
        return keyed_generator(self.cfg.run.seed, key, index, self.runtime.device)

    def row_generators(self, key: str, image_ids: list[str], targets: Any) -> list[torch.Generator]:
        """One generator per image for the draws ``key`` (:func:`salbench.rng.row_generators`): an image's
        draws depend on the run seed, ``key``, its id and its target, not on the batch it is in."""
        values = targets.tolist() if hasattr(targets, "tolist") else list(targets)
        return row_generators(self.cfg.run.seed, key, image_ids, values, self.runtime.device)

    @property
    def state_dir(self):
        """Where run-level method state (RISE masks) is saved: beside the map stores."""
        return self.layout.model_dir / "maps"

    def method(
        self, method_id: str, overrides: Mapping[str, Any] | None = None, model: nn.Module | None = None
    ) -> SaliencyMethod:
        """``method_id`` with the run's parameters (protocol preset < config < ``overrides``), not prepared.

        Args:
            method_id: registry id.
            overrides: parameter values replacing the configured ones (e.g. ``deprocess``).
            model: explain this model instead of the run's (a randomised copy); its target layer is
                found at the run's target-layer path.
        """
        cls = METHODS.get(method_id)
        values = {**self.cfg.method_params(method_id), **(overrides or {})}
        context = self.context
        if model is not None:
            layer = get_submodule(model, self.target_layer) if self.target_layer else None
            context = dataclasses.replace(context, target_layer=layer)
        return cls(
            self.model if model is None else model, context, build_params(cls.params_cls, values, method_id)
        )

    def precision_of(self, method: SaliencyMethod) -> str:
        """The precision of ``method``'s passes: the run's for sampling methods, else ``fp32``."""
        return self.cfg.run.precision if method.sampling else "fp32"

    def stream(self, batches: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        """The images of each row array of ``batches`` on the run device, decoded ahead by
        ``run.workers`` processes (:func:`salbench.data.images.stream`)."""
        workers = loader_workers(self.cfg.run.workers, self.runtime.device)
        return stream(self.images, batches, self.runtime.torch_device, workers)

    def preparation(
        self,
        images: Callable[[], Iterable[torch.Tensor]] | None = None,
        desc: str | None = None,
        progress: bool = True,
    ) -> Preparation:
        """The :class:`Preparation` of this run: its evaluated images (or ``images``), seed, device and
        state folder. ``desc`` labels a progress bar over the images when a method reads them."""
        dev, bs = self.runtime.torch_device, self.cfg.run.batch_size

        def run_images() -> Iterable[torch.Tensor]:
            batches = self.images.batches(bs)
            if desc:
                batches = progress_bar(batches, desc, enabled=progress)
            return (x.to(dev) for _, x, _ in batches)

        return Preparation(
            images or run_images, self.images.size, self.cfg.run.seed, self.runtime.device, self.state_dir
        )


def check_sections(cfg: Config) -> None:
    """Reject, before any work, a ``methods.<id>`` or ``metrics.<section>`` the package does not know,
    and any unknown key or bad choice inside one (each named with its allowed values)."""
    for method_id, values in cfg.methods.items():
        if method_id not in METHODS:
            raise ConfigError(
                f"unknown config section 'methods.{method_id}'; methods: {', '.join(METHODS.names())}"
            )
        build_params(METHODS.get(method_id).params_cls, values, method_id)
    fields: dict[str, set[str]] = {}
    for name in GROUPS.names():
        group = GROUPS.get(name)
        fields.setdefault(group.section, set()).update(f.name for f in dataclasses.fields(group.params_cls))
    for section, values in cfg.metrics.items():
        if section not in fields:
            raise ConfigError(
                f"unknown config section 'metrics.{section}'; sections: {', '.join(sorted(fields))}"
            )
        unknown = sorted(set(values) - fields[section] - {"max_batch"})
        if unknown:
            allowed = ", ".join(sorted(fields[section] - {"max_batch"}))
            raise ConfigError(f"unknown config key 'metrics.{section}.{unknown[0]}'; allowed: {allowed}")


def open_workspace(cfg: Config, split: str | None = None) -> Workspace:
    """Set up the runtime, open the data and build the model (eval mode, on the run device).

    Before any work the data is fitted to the model and checked against it (:func:`fit_inputs`): the
    workspace's config holds the resolved input (``data.resize``, ``crop``, ``mean``, ``std``), so every
    split opened from it later is preprocessed the same way.
    """
    check_sections(cfg)
    root = Path(cfg.run.output_root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--output-root {str(root)!r} exists and is not a folder")
    cfg = with_default_checkpoint(cfg)
    runtime = setup_runtime(cfg.run)
    if cfg.run.precision == "fp16" and runtime.device == "cpu":
        log.warning("--precision fp16 on the CPU is emulated (tens of times slower): bf16 is native there")
    data = open_data(cfg, split=split)
    model, info = build_model(cfg.model, num_classes=data.num_classes)
    inputs = model_input_spec(cfg.model, model, int(info["num_classes"]))
    cfg, data = fit_inputs(cfg, data, inputs, info)
    model = model.to(runtime.torch_device)
    check_forward(model, data, info, cfg.model.name, inputs)
    try:
        spec, layer = resolve_target_layer(model, cfg.model.target_layer)
    except ConfigError:
        if cfg.model.target_layer:
            raise
        spec, layer = "", None  # only layer-based methods need it; they fail with a clear message
    context = MethodContext(
        target_layer=layer,
        mean=data.preprocess.mean,
        std=data.preprocess.std,
        num_classes=info["num_classes"],
    )
    return Workspace(
        cfg, runtime, RunLayout.from_config(cfg), data, model, info, spec, context, FileImages(data)
    )


def fit_inputs(
    cfg: Config, data: DataSource, spec: InputSpec, info: dict[str, Any]
) -> tuple[Config, DataSource]:
    """The data fitted to the model (:func:`~salbench.data.sources.fit_to_model`: labels mapped to its
    outputs, input resolved as config > the model's ``spec`` > data kind), its labels checked against the
    model's outputs, and the config with the resolved input written into ``data`` (so it is recorded in
    manifests and every split opened from it is preprocessed alike).

    Raises:
        DataError: class folders or labels that are not outputs of the model.
        ConfigError: input values that do not fit together.
    """
    data = fit_to_model(data, cfg, spec, cfg.model.name)
    _check_labels(data, info["num_classes"], cfg.model.name)
    p = data.preprocess
    resolved = dataclasses.replace(cfg.data, resize=p.resize, crop=p.crop, mean=p.mean, std=p.std)
    log.debug(
        "input of %s: %d channel(s), resize %d, crop %d, mean %s, std %s (%s); classes: %s",
        cfg.model.name,
        p.channels,
        p.resize,
        p.crop,
        list(p.mean),
        list(p.std),
        ", ".join(f"{k} from {v}" for k, v in data.input_from.items()),
        data.class_names_source,
    )
    return dataclasses.replace(cfg, data=resolved), data


def _check_labels(data: DataSource, num_classes: int, model: str) -> None:
    """Every listed label must be an output of the model (a 10-class model cannot score label 999)."""
    bad = next((r for r in data.records if not 0 <= r.label < num_classes), None)
    if bad is not None:
        raise DataError(
            f"{bad.source}: label {bad.label} of image {bad.image_id!r} is not a class of model {model!r} "
            f"({num_classes} outputs)"
        )


@torch.no_grad()
def check_forward(
    model: nn.Module, data: DataSource, info: dict[str, Any], name: str, spec: InputSpec
) -> None:
    """One forward pass of a zero image of the resolved input shape ``(1, C, crop, crop)``: the model
    must accept it and return ``(1, num_classes)`` logits. A failure is one line naming the flag to
    change: a ViT built for another side, a first convolution for other channels, another class count.

    Raises:
        ConfigError: naming the model, the input and the config key/flag.
    """
    pre = data.preprocess
    shape = (1, pre.channels, pre.crop, pre.crop)
    device = next(iter(model.parameters()), torch.zeros(0)).device
    try:
        with model_mode(model, False), torch.random.fork_rng(devices=[]):
            out = model(torch.zeros(shape, device=device))
    except Exception as exc:  # a user's model may raise anything
        raise ConfigError(_input_mismatch(name, spec, data) or _failed(name, shape, exc)) from None
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            f"model {name!r} returns a {type(out).__name__} for a {shape} input, not a logits tensor"
        )
    n = int(info["num_classes"])
    if tuple(out.shape) != (1, n):
        raise ConfigError(
            f"model {name!r} returns logits of shape {tuple(out.shape)} for a {shape} input, expected "
            f"(1, {n}): set {key_name('model.num_classes')} to its number of outputs"
        )


def _input_mismatch(name: str, spec: InputSpec, data: DataSource) -> str:
    """Why the model refused the input, when its specification says so ('' when it does not)."""
    pre = data.preprocess
    if spec.fixed_size and spec.fixed_size != pre.crop:
        return (
            f"model {name!r} takes {spec.fixed_size}x{spec.fixed_size} inputs only ({spec.fixed_size_from}) "
            f"but the crop is {pre.crop} ({key_name('data.crop')}, from {data.input_from.get('crop')}): "
            f"give --input-size {spec.fixed_size}, or build the model for {pre.crop} (e.g. --model-kwargs "
            f"img_size={pre.crop})"
        )
    if spec.channels and spec.channels != pre.channels:
        hint = f"give --channels {spec.channels}" if spec.channels in (1, 3) else "salbench reads 1 or 3"
        grey = " with one-value --mean and --std" if spec.channels == 1 else ""
        return (
            f"model {name!r} takes {spec.channels}-channel input (its first convolution "
            f"{spec.first_conv!r} has in_channels {spec.channels}) but {key_name('data.channels')} is "
            f"{pre.channels}: {hint}{grey}"
        )
    return ""


def _failed(name: str, shape: tuple[int, ...], exc: BaseException) -> str:
    return (
        f"model {name!r} fails on a {shape} input ({first_line(exc)}); check {key_name('data.channels')}, "
        f"{key_name('data.crop')} and {key_name('data.resize')}"
    )


class MethodExplainer:
    """Builds ``method_id`` on any model with the run's parameters, prepared once per model, per-batch seeds.

    Args:
        ws: the run (parameters, seed, device).
        method_id: registry id.
        batches: ``(images, targets)`` batches on the run device, explained in this order.
        state_dir: where RISE masks are saved/reloaded (None: drawn once and shared between models).
    """

    def __init__(
        self,
        ws: Workspace,
        method_id: str,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        state_dir: Path | None = None,
    ):
        self.ws, self.batches, self.method_id = ws, batches, method_id
        self.cls = METHODS.get(method_id)
        first = ws.method(method_id)
        self.params, self.store_id = first.params, first.store_id
        self.preparation = Preparation(
            lambda: (images for images, _ in batches),
            tuple(batches[0][0].shape[-2:]),
            ws.cfg.run.seed,
            ws.runtime.device,
            state_dir,
        )

    def _build(self, model: nn.Module) -> SaliencyMethod:
        method = self.ws.method(self.method_id, model=model)
        method.prepare(self.preparation)  # IBA: statistics of this model; RISE: the run's masks
        return method

    def __call__(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """(maps (N,H,W), signed maps (N,H,W)) of every image on ``model``."""
        method, maps, signed = self._build(model), [], []
        for b, (images, targets) in enumerate(self.batches):
            gen = self.ws.generator(self.store_id, b)
            if isinstance(method, GradientFamilyMethod):
                raw = method.raw_attributions(images, targets, gen)
                m, s = get_deprocessor(method.params.deprocess)(raw), raw.sum(1)
            else:
                m = s = method(images, targets, gen)
            maps.append(m.detach().float().cpu().numpy())
            signed.append(s.detach().float().cpu().numpy())
        return np.concatenate(maps), np.concatenate(signed)


def fresh_model(ws: Workspace) -> nn.Module:
    """A randomly initialised model of the run's architecture and class count (draws from the global RNG),
    built as the run's model is (:func:`~salbench.models.registry.build_architecture`: embedded,
    torchvision, timm or a user's factory, with ``model.kwargs``)."""
    return build_architecture(ws.cfg.model, int(ws.model_info["num_classes"]))
