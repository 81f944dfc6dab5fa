"""Typed, frozen run configuration.

Precedence (lowest first): dataclass defaults < protocol preset (``configs/protocols/<protocol>.yaml``)
< the user's ``--config`` YAML < command-line flags. Unknown keys are rejected with the dotted key and
the file they came from. The resolved configuration is written beside every output
(:func:`config_to_dict`), and is never mutated after construction.

Longer than ~400 lines: every section's dataclass, the loader and the checks of its values belong
together, so a reader finds each key's type, default and check in one file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from salbench.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The YAML presets and the published tables, shipped inside the package (``configs/`` links here)."""
PROTOCOLS = ("acml2024", "reference")
LABEL_SETS = ("groundtruth", "predicted", "least")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where outputs go and how the run executes.

    ``ci_*``: the percentile bootstrap over images of every mean in ``results.csv`` (resamples, level,
    seed; :class:`salbench.stats.Bootstrap`). ``reuse``: :mod:`salbench.stages.reuse`. ``precision``:
    autocast dtype of the forward-only passes of re-inference metrics and sampling methods
    (:func:`salbench.scoped.autocast_passes`); gradients stay float32. ``workers``: image-decoding
    processes of the data loader (-1: none on CPU, up to 8 per process on CUDA; pinned memory on CUDA).
    """

    output_root: str = "runs/embedded"
    protocol: Literal["acml2024", "reference"] = "acml2024"
    label_sets: tuple[Literal["groundtruth", "predicted", "least"], ...] = ("groundtruth",)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    batch_size: int = 64
    max_batch: int = 1024
    limit: int = 0
    seed: int = 0
    threads: int = 0
    overwrite: bool = False
    reuse: bool = True
    ci_resamples: int = 1000
    ci_level: float = 0.95
    ci_seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    workers: int = -1


@dataclasses.dataclass(frozen=True)
class EmbeddedDataConfig:
    """Parameters of the generated benchmark (SPEC section 2)."""

    seed: int = 0
    image_size: int = 112
    n_train: int = 3000
    n_val: int = 300
    n_eval: int = 300


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images to explain and how to preprocess them.

    ``kind``: ``embedded`` (generated under ``root``), ``imagenet`` (``root`` + ``list_csv`` of
    ``relative/path,label`` lines, an optional ``path,label`` header line, boxes from ILSVRC XML files
    under ``annotations``) or ``imagefolder`` (a class-per-folder tree under ``root``).

    The model input: ``channels`` (3: 8-bit RGB, 1: 8-bit grey), then a square ``resize``, a centre
    ``crop`` (the side the model sees) and normalisation by ``mean``/``std`` (exactly ``channels``
    values each; a one-value mean is never broadcast). What is not given (``0``, ``[]``) is taken,
    value by value, from:

    1. the model: timm's ``pretrained_cfg`` for ``timm:<name>`` (crop = its input size or the side a
       ViT was built for, resize = crop / ``crop_pct``, mean/std), the weights' ``transforms()`` of a
       torchvision model with ``model.weights``; a crop a ViT only accepts (timm's strict patch
       embedding, torchvision's ``image_size``) for any model;
    2. the data kind: ``embedded`` its ``image_size`` for both sides; ``imagefolder`` and ``imagenet``
       the images' own side when they all share one square size (32x32 images stay 32x32, as a model
       trained on them saw them), otherwise ImageNet's 256 / 224; ImageNet's mean/std for 3 channels.
       A 1-channel input has no conventional mean/std: give them (0 and 1 keep pixels in [0, 1]).

    A side given alone gets the other by the model's (else the kind's) ratio. The resolved values and
    where each came from are in every manifest (``data.input``).

    ``class_index`` (imagefolder only) maps class folders to model outputs: a CSV of ``folder,index``
    lines (optional ``,name``; a header line is skipped) or a JSON object (also Keras'
    ``imagenet_class_index.json``). Without it, folders named by ImageNet-1k wnids (``n01440764``)
    map to torchvision's index order when the model has 1000 outputs; otherwise folders are classes
    ``0..K-1`` in sorted order (torchvision's ``ImageFolder``) and must be exactly as many as the
    model's outputs.
    """

    kind: Literal["embedded", "imagenet", "imagefolder"] = "embedded"
    root: str = ""
    list_csv: str = ""
    annotations: str = ""
    masks: str = ""
    split: str = "eval"
    class_index: str = ""
    channels: int = 3
    resize: int = 0
    crop: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    embedded: EmbeddedDataConfig = dataclasses.field(default_factory=EmbeddedDataConfig)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which classifier to explain.

    ``name`` is one of four entry points: an embedded model (``embedded_resnet``, ``embedded_vgg``),
    any torchvision classifier name, ``timm:<name>`` (a timm architecture, built without downloading)
    or ``package.module:factory`` / ``path/to/file.py:factory`` (a callable returning an
    ``nn.Module``). ``kwargs`` are the keyword arguments of the factory, ``timm.create_model`` or
    ``torchvision.models.get_model`` (e.g. ``{img_size: 32}``, ``{image_size: 32}``). ``weights`` is a
    torchvision weights enum member (read from the torch hub cache, never downloaded by tests) and
    ``checkpoint`` a local state-dict file (``weights_only=True``; bare, ``state_dict`` or ``model``
    layouts, ``module.`` prefix stripped). ``memory_format``: ``channels_last`` (NHWC convolutions,
    about twice as fast on CPU for these models; outputs equal to ``contiguous`` up to float rounding)
    or ``contiguous``.
    """

    name: str = "embedded_resnet"
    weights: str = ""
    checkpoint: str = ""
    num_classes: int = 0
    target_layer: str = ""
    memory_format: str = "channels_last"
    # hash=False keeps the frozen config hashable; equality still compares the arguments
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training of the embedded classifiers (deterministic for ``seed``)."""

    seed: int = 0
    epochs: int = 16
    batch_size: int = 64
    lr: float = 0.002
    weight_decay: float = 0.05
    label_smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole resolved configuration of one run."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    methods: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    augmentations: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def method_params(self, method: str) -> dict[str, Any]:
        """The resolved parameters of ``method`` (protocol preset < config file < flags)."""
        return dict(self.methods.get(method, {}))

    def metric_params(self, metric: str) -> dict[str, Any]:
        """The resolved parameters of ``metric``."""
        return dict(self.metrics.get(metric, {}))


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """Check/convert one YAML value against a type annotation, naming ``key`` on failure."""
    origin = typing.get_origin(tp)
    where = f"config key {key!r}" + (f" in {source}" if source else "")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, key, source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(str, typing.get_args(tp)))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_convert(item_tp, v, key, source) for v in items)
    if origin in (Mapping, dict) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): (dict(v) if isinstance(v, Mapping) else v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        where = f" in {source}" if source else ""
        raise ConfigError(f"unknown config key {key!r}{where}; allowed: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(hints[name], value, key, source)
    return cls(**kwargs)


def build_dataclass(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """Build the frozen parameter dataclass ``cls`` from ``values``, rejecting unknown keys and bad choices.

    Lists become tuples; a :data:`typing.Literal` field must hold one of its choices. Used for the
    parameters of every method and metric group, from config sections and library calls alike.

    Args:
        cls: a frozen parameter dataclass.
        values: field name -> value.
        what: how errors name the owner, e.g. ``"metric 'insertion'"``.

    Raises:
        ConfigError: naming the key, the owner and what is allowed.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"parameters of {what}: expected a mapping, got {type(values).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise ConfigError(f"unknown parameter {unknown[0]!r} for {what}; allowed: {allowed}")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        value = tuple(value) if isinstance(value, list) else value
        if typing.get_origin(hints[name]) is Literal and value not in typing.get_args(hints[name]):
            choices = ", ".join(map(str, typing.get_args(hints[name])))
            raise ConfigError(f"parameter {name!r} of {what}: {value!r} is not one of {choices}")
        if not _matches(hints[name], value):
            raise ConfigError(
                f"parameter {name!r} of {what}: expected {_describe(hints[name])}, got {value!r}"
            )
        out[name] = value
    return cls(**out)


def _matches(tp: Any, value: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp`` (ints count as floats; unknown annotations pass)."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(args[0], v) for v in value)
        return len(args) == len(value) and all(_matches(a, v) for a, v in zip(args, value))
    return True


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, other values replace)."""
    out: dict[str, Any] = {k: (deep_merge(v, {}) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = deep_merge(value, {}) if isinstance(value, Mapping) else value
    return out


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loader) or raise a one-line :class:`ConfigError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {str(p)!r} cannot be read as UTF-8 text ({type(exc).__name__})"
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.constructor.ConstructorError as exc:
        line = f" line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise ConfigError(f"config file {str(p)!r}{line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(p)!r}{line} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of sections, not {type(data).__name__}"
        )
    return dict(data)


def protocol_preset(protocol: str) -> dict[str, Any]:
    """The parameter preset of a protocol (``configs/protocols/<protocol>.yaml``)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose from: {', '.join(PROTOCOLS)}")
    return load_yaml(CONFIG_DIR / "protocols" / f"{protocol}.yaml")


def resolve_config(
    config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Build the frozen :class:`Config`: defaults < protocol preset < ``config_file`` < ``overrides``.

    Args:
        config_file: optional YAML file with sections ``run``, ``data``, ``model``, ``train``,
            ``methods``, ``metrics``, ``augmentations``.
        overrides: nested mapping from command-line flags (same shape as the YAML).
    """
    user = load_yaml(config_file) if config_file else {}
    overrides = dict(overrides or {})
    source = str(config_file) if config_file else ""
    _build(Config, user, "", source)  # reject unknown keys and bad types before anything else
    _build(Config, overrides, "", "command-line flags")
    merged = deep_merge(user, overrides)
    protocol = merged.get("run", {}).get("protocol", RunConfig.protocol)
    preset = protocol_preset(protocol)
    _build(Config, preset, "", f"protocol preset {protocol!r}")
    cfg = _build(Config, deep_merge(preset, merged), "", source)
    check_run(cfg.run)
    return cfg


_LOWER_BOUNDS = {"batch_size": 1, "max_batch": 1, "limit": 0, "threads": 0, "seed": 0, "workers": -1}
"""Smallest allowed value of the ``run`` section's integers (``limit``/``threads`` 0 = all/default,
``workers`` -1 = automatic)."""


def check_run(run: RunConfig) -> None:
    """Raise a one-line :class:`ConfigError` for a ``run`` value out of range, naming its key."""
    for key, low in _LOWER_BOUNDS.items():
        value = getattr(run, key)
        if value < low:
            raise ConfigError(f"config key 'run.{key}' must be >= {low}, got {value}")


def config_to_dict(cfg: Any) -> Any:
    """Plain-Python (YAML/JSON-serialisable) view of a config dataclass."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple | list):
        return [config_to_dict(v) for v in cfg]
    return cfg


def dump_config(cfg: Config) -> str:
    """YAML text of the resolved configuration."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
