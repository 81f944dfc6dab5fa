"""``salbench explain``: one or a few images, one or several methods, a figure in one command line.

The images are preprocessed as the run's data kind would be (resize, centre crop, normalisation), the
model of the config (or ``--model``/``--checkpoint``/``--weights``) explains them for ``--target`` (a
class index or name; default: its top-1 prediction) with every ``--method`` under the protocol's
parameters (:func:`salbench.methods.create_method`, as generation builds them), and one row per image
is drawn: the image, then each map as an overlay with a colorbar (clipped at the ``--clip``
percentile), titled with the target class and its probability. With ``--metrics`` the metric values of
each map are printed and written under its panel. A method that does not apply to the model (e.g. a CAM
without a spatial target layer) is skipped with one printed line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from salbench.data.sources import class_names_for, preprocess_for
from salbench.errors import ConfigError, DataError, NotApplicableError
from salbench.methods import METHODS, MethodContext, create_method
from salbench.methods.base import Preparation
from salbench.metrics import METRICS, Metric, MetricInputs, compute
from salbench.metrics.base import GROUPS
from salbench.models.inputs import model_input_spec
from salbench.models.layers import resolve_target_layer
from salbench.models.registry import build_model
from salbench.report.figures import figure_explain
from salbench.runtime import setup_runtime
from salbench.stages.cli import Command, Options, config_from_args, configure_logging, register
from salbench.stages.workspace import with_default_checkpoint

MAP_ONLY_METRICS = ("sparseness", "complexity", "effective_complexity")


def _arguments(p: argparse.ArgumentParser, options: Options) -> None:
    p.add_argument("--image", nargs="+", required=True, help="image files to explain")
    p.add_argument("--method", nargs="+", required=True, choices=METHODS.names(), help="saliency methods")
    p.add_argument("--target", help="class index or name (default: the model's top-1 prediction)")
    p.add_argument("--metrics", nargs="*", choices=METRICS.names(), help="metric values under each map")
    p.add_argument("--clip", type=float, default=99.0, help="display maps clipped at this percentile")
    p.add_argument("--out", default="explain.png", help="figure file (PNG)")


def _target(text: str | None, logits: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    if text is None:
        return logits.argmax(1)
    if text.isdigit() and int(text) < logits.shape[1]:
        return torch.full((logits.shape[0],), int(text), dtype=torch.long)
    if text in names:
        return torch.full((logits.shape[0],), names.index(text), dtype=torch.long)
    raise ConfigError(f"--target {text!r} is neither a class index below {logits.shape[1]} nor a class name")


def _load(paths: list[str], preprocess) -> tuple[torch.Tensor, np.ndarray]:
    """Normalised images (N,C,H,W) and their pixels (N,H,W,3) after resize and crop (a 1-channel
    image is shown in grey)."""
    pixels = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
                pixels.append(preprocess.pixels(img))
        except (OSError, ValueError) as exc:
            raise DataError(f"image {path!r} cannot be read ({exc})") from None
    px = torch.stack(pixels)
    shown = px.expand(-1, 3, -1, -1) if px.shape[1] == 1 else px
    return preprocess.normalize(px), shown.permute(0, 2, 3, 1).numpy()


def _metric_notes(
    names: list[str], model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, t: torch.Tensor, pre
) -> list[str]:
    """Per image, ``metric value`` lines of one method's maps (default group parameters)."""
    values: dict[str, np.ndarray] = {}
    inputs = MetricInputs(maps=maps, images=x, targets=t, model=model, mean=pre.mean, std=pre.std)
    for name in names:
        definition = METRICS.get(name)
        group = GROUPS.get(definition.group)
        if definition.requires:
            raise ConfigError(
                f"--metrics {name}: needs {', '.join(definition.requires)}, which explain lacks"
            )
        scores = compute(group, inputs, Metric(definition).params, wanted=[definition.name])
        values[name] = np.asarray(scores[definition.name], dtype=float)
    return [
        ", ".join(f"{METRICS.get(k).display} {v[i]:.3f}" for k, v in values.items()) for i in range(len(t))
    ]


def _run(args: argparse.Namespace, options: Options) -> int:
    configure_logging(args.verbose)
    cfg = with_default_checkpoint(config_from_args(args))
    runtime = setup_runtime(cfg.run)
    model, info = build_model(cfg.model)
    model = model.to(runtime.torch_device).eval()
    pre = preprocess_for(cfg, model_input_spec(cfg.model, model, int(info["num_classes"])))
    names = class_names_for(cfg, int(info["num_classes"]))
    x, pixels = _load(args.image, pre)
    x = x.to(runtime.torch_device)
    with torch.no_grad():
        probs = torch.softmax(model(x).float(), dim=1)
    targets = _target(args.target, probs, names).to(x.device)
    try:
        _, layer = resolve_target_layer(model, cfg.model.target_layer)
    except ConfigError:
        layer = None
    context = MethodContext(
        target_layer=layer, mean=pre.mean, std=pre.std, num_classes=int(info["num_classes"])
    )
    preparation = Preparation(lambda: [x], tuple(x.shape[-2:]), cfg.run.seed, runtime.device)
    maps: dict[str, torch.Tensor] = {}
    notes: dict[str, list[str]] = {}
    for method_id in args.method:
        try:
            method = create_method(method_id, model, context, cfg.method_params(method_id))
            method.check_applies(x[:1])
        except NotApplicableError as exc:
            print(f"{method_id}: not applicable, skipped: {exc}")
            continue
        if method_id == "iba" and len(x) < 2:
            raise ConfigError("--method iba estimates feature statistics over the images: give two or more")
        method.prepare(preparation)
        label = method.store_id
        maps[label] = method(x, targets, torch.Generator(device=runtime.device).manual_seed(cfg.run.seed))
        if args.metrics:
            notes[label] = _metric_notes(args.metrics, model, x, maps[label], targets, pre)
    out = Path(args.out)
    for i, path in enumerate(args.image):
        c, p = int(targets[i]), float(probs[i, int(targets[i])])
        title = f"{Path(path).name}: {cfg.model.name}, target {names[c]} (class {c}, p = {p:.3f})"
        panel_notes = {k: v[i] for k, v in notes.items()} if notes else None
        target = out if len(args.image) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix or '.png'}")
        figure_explain(
            pixels[i], {k: v[i].cpu().numpy() for k, v in maps.items()}, title, target, panel_notes, args.clip
        )
        print(f"{path}: target {names[c]} (p = {p:.3f}) -> {target}")
        for label, lines in notes.items():
            print(f"  {label}: {lines[i]}")
    return 0


HELP = "explain a few image files with one or several methods: a figure (and metric values)"
COMMAND = register(Command("explain", HELP, _arguments, _run, label_sets=False))
