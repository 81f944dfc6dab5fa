"""Gradient-family saliency methods: plain gradient, guided backprop, integrated gradients, SmoothGrad,
input x gradient.

All of them differentiate the target class **logit** (pre-softmax score) ``f_c(x)`` with respect to the
normalised input ``x`` only (parameters are frozen for the call), giving raw attributions (N,C,H,W) that
:mod:`salbench.methods.deprocess` turns into maps (N,H,W); the deprocessing id is part of the stored
method id (``gradient_smoothgrad``, ``integrated_gradients_jacobgil``, ...).

``train_mode`` reproduces the ``acml2024`` protocol: the network is put in training mode (batch norm uses
batch statistics, dropout is active) and every forward pass sees a batch of one input. A batch-norm layer
in training mode on a batch of one normalises each channel by the mean and biased variance of that one
sample over its spatial positions, which is instance normalisation with the layer's affine parameters;
the batch-norm layers are swapped for that per-sample computation for the call
(:func:`~salbench.methods.batchnorm.per_sample_batchnorm`), so many inputs go through one pass and
each still sees only its own statistics, as with batch size 1 (values and gradients equal up to float
rounding). The model's buffers (batch-norm running statistics) are restored afterwards and dropout
draws come from a global RNG seeded from the call's generator (0 without one) and restored afterwards,
so the call leaves no trace.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import ClassVar, Literal

import torch
from torch import nn

from salbench import rng
from salbench.errors import ConfigError, DataError
from salbench.methods.base import METHODS, MethodContext, MethodParams, SaliencyMethod
from salbench.methods.batchnorm import per_sample_batchnorm, restored_buffers
from salbench.methods.deprocess import get_deprocessor
from salbench.scoped import frozen_parameters, model_mode, removable_hooks, seeded_global_rng

RIEMANN_RULES: tuple[str, ...] = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")

_DEPROCESS_NOTE = (
    "raw input attributions (N,C,H,W) deprocessed per params.deprocess: smoothgrad = max over channels "
    "of |a| then per-image min-max; jacobgil = per image and channel standardise, x0.1, +0.5, clip [0,1], "
    "channel mean"
)


def check_batch(images: torch.Tensor, targets: torch.Tensor) -> None:
    """Validate a method call's inputs: ``images`` (N,C,H,W) floating, ``targets`` (N,) integer >= 0.

    Raises:
        DataError: naming the argument at fault.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"images must be a floating (N,C,H,W) tensor, got {shape}")
    if not isinstance(targets, torch.Tensor) or targets.ndim != 1 or targets.is_floating_point():
        raise DataError("targets must be an integer (N,) tensor of class indices")
    if targets.shape[0] != images.shape[0]:
        raise DataError(f"targets has {targets.shape[0]} entries for {images.shape[0]} images")
    if targets.numel() and int(targets.min()) < 0:
        raise DataError(f"targets: negative class index {int(targets.min())}")


def input_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d logit_{targets[i]} / d inputs[i] for every row, in one forward/backward pass.

    Rows are independent as long as the model does not mix the batch (eval-mode batch norm); the sum
    of the selected logits is differentiated, so row i receives exactly its own gradient.

    Args:
        model: classifier returning logits (M,K).
        inputs: (M,C,H,W); not modified (a copy is differentiated).
        targets: (M,) class indices.

    Returns:
        (M,C,H,W) gradients, same dtype/device as ``inputs``.

    Raises:
        DataError: when a target index is not below the number of logits K.
    """
    x = inputs.detach().clone().requires_grad_(True)
    logits = model(x)
    if logits.ndim != 2:
        raise DataError(f"model output must be logits (N,K), got shape {tuple(logits.shape)}")
    if targets.numel() and int(targets.max()) >= logits.shape[1]:
        raise DataError(
            f"targets: class index {int(targets.max())} out of range for {logits.shape[1]} logits"
        )
    selected = logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()
    (grad,) = torch.autograd.grad(selected, x)
    return grad


def riemann_rule(rule: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``alphas`` in [0, 1] and weights (summing to 1) of a Riemann rule on [0, 1], float64.

    ``left``/``right``/``middle`` use ``n_steps`` equal weights ``1/n`` at ``k/n`` (k = 0..n-1), ``k/n``
    (k = 1..n) and ``(k + 1/2)/n``; these equal captum's rules of the same names. ``trapezoid`` uses
    ``n_steps`` nodes ``linspace(0, 1, n)`` with weights ``1/(n-1)`` halved at both ends. Deviation from
    captum: its trapezoid weights are ``1/n`` halved at the ends (summing to ``(n-1)/n``), so captum's
    trapezoid IG is ours times ``(n-1)/n``; ours integrates a constant exactly.
    """
    n = n_steps
    k = torch.arange(n, dtype=torch.float64)
    if rule == "riemann_trapezoid":
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return torch.linspace(0.0, 1.0, n, dtype=torch.float64), weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if rule not in offsets:
        raise ConfigError(
            f"unknown rule {rule!r} for integrated_gradients; choose from: {', '.join(RIEMANN_RULES)}"
        )
    return (k + offsets[rule]) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)


def _dropout_rng(device: torch.device, generator: rng.Generators):
    """The global RNGs that dropout draws from (CPU and ``device``), seeded from one draw of ``generator``
    (the first image's with per-image generators: dropout masks are drawn for the whole batch) and
    restored on exit: active dropout in training mode is reproducible under the call's generator."""
    generator = rng.first(generator)
    if generator is None:
        return seeded_global_rng(device, 0)
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return seeded_global_rng(device, seed)


@dataclasses.dataclass(frozen=True)
class GradientParams(MethodParams):
    """Parameters shared by the gradient family.

    Attributes:
        deprocess: ``smoothgrad`` or ``jacobgil`` (:mod:`salbench.methods.deprocess`).
        train_mode: ``acml2024`` quirk: network in training mode, batch-norm statistics of one input
            at a time (computed per sample in batched passes, see the module docstring).
    """

    deprocess: Literal["smoothgrad", "jacobgil"] = "smoothgrad"
    train_mode: bool = False


@dataclasses.dataclass(frozen=True)
class IntegratedGradientsParams(GradientParams):
    """Integrated gradients: ``n_steps`` path points, Riemann ``rule``, ``internal_batch_size`` rows."""

    n_steps: int = 100
    rule: str = "riemann_right"
    internal_batch_size: int = 32


@dataclasses.dataclass(frozen=True)
class SmoothGradParams(GradientParams):
    """SmoothGrad: ``n_samples`` noisy copies, noise std = ``noise_level`` x (max - min) of each image."""

    n_samples: int = 50
    noise_level: float = 0.15
    internal_batch_size: int = 50


class GradientFamilyMethod(SaliencyMethod):
    """Shared machinery: scoping (mode, frozen parameters, buffers), per-image loop, deprocessing.

    Subclasses implement :meth:`_attribute` on a batch, already inside every scope.
    """

    family: ClassVar[str] = "Gradient"
    deterministic: ClassVar[bool] = True
    normalisation: ClassVar[str] = _DEPROCESS_NOTE
    params_cls: ClassVar[type[MethodParams]] = GradientParams

    def __init__(self, model: nn.Module, context: MethodContext, params: MethodParams | None = None):
        super().__init__(model, context, params)
        self._deprocess = get_deprocessor(self.params.deprocess)
        self._validate()

    def _validate(self) -> None:
        """Check method-specific parameters (raise :class:`ConfigError` naming the parameter)."""

    @property
    def store_id(self) -> str:
        return f"{self.name}_{self.params.deprocess}"

    @property
    def _rows_per_pass(self) -> int:
        """Rows per forward pass for methods that expand each image."""
        return int(getattr(self.params, "internal_batch_size", 1))

    @property
    def row_separable(self) -> bool:
        """False in training mode on a model with dropout (one dropout draw for the whole batch);
        batch norm in training mode uses each image's own statistics, which keeps images apart."""
        if not self.params.train_mode:
            return True
        return not any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in self.model.modules())

    def explain(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """Maps (N,H,W) float32 in [0, 1]: :meth:`raw_attributions` deprocessed."""
        return self._deprocess(self.raw_attributions(images, targets, generator)).float()

    def raw_attributions(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators = None
    ) -> torch.Tensor:
        """Attributions (N,C,H,W) before deprocessing, w.r.t. the normalised input.

        Model mode, parameter ``requires_grad`` flags and buffers are restored on exit, even on error.
        """
        check_batch(images, targets)
        if len(images) == 0:
            return torch.zeros_like(images)
        x = images.detach()
        t = targets.to(device=images.device, dtype=torch.long)
        train = bool(self.params.train_mode)
        dropout = _dropout_rng(x.device, generator) if train else contextlib.nullcontext()
        with (
            model_mode(self.model, train),
            frozen_parameters(self.model),
            restored_buffers(self.model),
            dropout,
            torch.enable_grad(),
        ):
            if not train:
                return self._attribute(x, t, generator)
            # Batch size 1 as in the study: batch-norm statistics of one input at a time.
            with per_sample_batchnorm(self.model):
                return self._attribute(x, t, generator)

    def _chunked_gradients(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """:func:`input_gradients` over (M,C,H,W) in passes of :attr:`_rows_per_pass` rows."""
        step = self._rows_per_pass
        parts = [
            input_gradients(self.model, inputs[s : s + step], targets[s : s + step])
            for s in range(0, len(inputs), step)
        ]
        return torch.cat(parts)

    @abc.abstractmethod
    def _attribute(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators
    ) -> torch.Tensor:
        """(N,C,H,W) raw attributions for a batch, called inside all scopes."""


@METHODS.register("gradient")
class Gradient(GradientFamilyMethod):
    """Vanilla gradient (Simonyan et al., 2014, "Deep Inside Convolutional Networks", eq. 2-3).

    ``a = d f_c(x) / d x`` with ``f_c`` the target logit (not the softmax probability, as in the paper's
    class score ``S_c``). Deviation: the paper reduces channels with ``max_c |a|`` only; the reduction here
    is the chosen deprocessing.
    """

    name: ClassVar[str] = "gradient"

    def _attribute(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators
    ) -> torch.Tensor:
        return input_gradients(self.model, images, targets)


@METHODS.register("input_x_gradient")
class InputXGradient(GradientFamilyMethod):
    """Input x gradient (Shrikumar et al., 2016/2017): ``a = x * d f_c(x) / d x`` on the normalised input.

    Equals one-step integrated gradients from the zero baseline at the input; ``f_c`` is the logit.
    """

    name: ClassVar[str] = "input_x_gradient"

    def _attribute(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators
    ) -> torch.Tensor:
        return images * input_gradients(self.model, images, targets)


@METHODS.register("guided_backprop")
class GuidedBackprop(GradientFamilyMethod):
    """Guided backpropagation (Springenberg et al., 2015, "Striving for Simplicity", Fig. 1, eq. for
    ``R^l``): through every ReLU only positive gradients at positive inputs are passed back,
    ``R_in = 1[x > 0] * max(R_out, 0)``.

    Implemented with scoped forward hooks on ``nn.ReLU`` modules that register a gradient hook on each
    ReLU output clamping the incoming gradient at 0 (the ReLU's own backward then applies ``1[x > 0]``);
    works with ``inplace=True`` ReLUs and modules reused several times (torchvision ResNet blocks).
    Limitation: ReLUs applied functionally (``F.relu``/``torch.relu`` inside ``forward``) are not
    modules and keep their plain gradient; the result is then a partly guided gradient. ``f_c`` is the
    logit.
    """

    name: ClassVar[str] = "guided_backprop"

    def _attribute(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators
    ) -> torch.Tensor:
        with removable_hooks() as handles:
            for module in self.model.modules():
                if isinstance(module, nn.ReLU):
                    handles.append(module.register_forward_hook(_guide_relu_output))
            return input_gradients(self.model, images, targets)


def _guide_relu_output(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    if isinstance(output, torch.Tensor) and output.requires_grad:
        output.register_hook(_positive_part)


def _positive_part(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp_min(0)


@METHODS.register("integrated_gradients")
class IntegratedGradients(GradientFamilyMethod):
    """Integrated gradients (Sundararajan et al., 2017, "Axiomatic Attribution for Deep Networks",
    eq. 1 and its Riemann approximation in Section 5).

    ``a = (x - x') * sum_k w_k * d f_c(x' + alpha_k (x - x')) / d x`` with baseline ``x' = 0`` in the
    normalised input space (the dataset mean image), ``f_c`` the logit, nodes/weights from
    :func:`riemann_rule` (default ``riemann_right``, the paper's sum ``1/m sum_{k=1..m}``; 100 steps in
    ``acml2024``). The N x n_steps path points are evaluated in passes of ``internal_batch_size`` rows
    (each row with its own batch-norm statistics in training mode).
    """

    name: ClassVar[str] = "integrated_gradients"
    params_cls: ClassVar[type[MethodParams]] = IntegratedGradientsParams

    def _validate(self) -> None:
        p = self.params
        if p.rule not in RIEMANN_RULES:
            raise ConfigError(
                f"unknown rule {p.rule!r} for integrated_gradients; choose from: {', '.join(RIEMANN_RULES)}"
            )
        if p.n_steps < (2 if p.rule == "riemann_trapezoid" else 1):
            raise ConfigError(f"n_steps must be >= 1 (>= 2 for riemann_trapezoid), got {p.n_steps}")
        if p.internal_batch_size < 1:
            raise ConfigError(f"internal_batch_size must be >= 1, got {p.internal_batch_size}")

    def _attribute(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators
    ) -> torch.Tensor:
        alphas, weights = riemann_rule(self.params.rule, self.params.n_steps)
        alphas = alphas.to(device=images.device, dtype=images.dtype)
        weights = weights.to(device=images.device, dtype=images.dtype)
        baseline = torch.zeros_like(images)
        delta = images - baseline
        n_steps, total = len(alphas), torch.zeros_like(images)
        chunk = self._rows_per_pass
        # Rows (image i, step k) flattened as i * n_steps + k, so a pass may span images.
        for start in range(0, len(images) * n_steps, chunk):
            rows = torch.arange(start, min(start + chunk, len(images) * n_steps), device=images.device)
            img, step = rows // n_steps, rows % n_steps
            path = baseline[img] + alphas[step].view(-1, 1, 1, 1) * delta[img]
            grads = input_gradients(self.model, path, targets[img])
            total.index_add_(0, img, grads * weights[step].view(-1, 1, 1, 1))
        return delta * total


@METHODS.register("smoothgrad")
class SmoothGrad(GradientFamilyMethod):
    """SmoothGrad (Smilkov et al., 2017, eq. 2): mean gradient over ``n_samples`` noisy copies
    ``x + N(0, sigma^2)``, ``sigma = noise_level * (max(x) - min(x))`` per image (the paper's noise
    level as a fraction of the input range; 10-20% recommended), in normalised input space.

    The noise comes from the call's ``generator`` (required), drawn image by image (from each image's
    own generator when given one per image, so an image's map does not depend on the batch it is in).
    ``f_c`` is the logit.
    """

    name: ClassVar[str] = "smoothgrad"
    deterministic: ClassVar[bool] = False
    params_cls: ClassVar[type[MethodParams]] = SmoothGradParams

    def _validate(self) -> None:
        p = self.params
        if p.n_samples < 1:
            raise ConfigError(f"n_samples must be >= 1, got {p.n_samples}")
        if p.noise_level < 0:
            raise ConfigError(f"noise_level must be >= 0, got {p.noise_level}")
        if p.internal_batch_size < 1:
            raise ConfigError(f"internal_batch_size must be >= 1, got {p.internal_batch_size}")

    def _attribute(
        self, images: torch.Tensor, targets: torch.Tensor, generator: rng.Generators
    ) -> torch.Tensor:
        if generator is None:
            raise ConfigError("smoothgrad is stochastic: pass a torch.Generator")
        out = []
        gens = rng.per_image(generator, len(images)) or [generator] * len(images)
        for image, target, g in zip(images, targets, gens):
            sigma = self.params.noise_level * (image.max() - image.min())
            noise = torch.randn(
                (self.params.n_samples, *image.shape), generator=g, device=g.device, dtype=image.dtype
            ).to(image.device)
            noisy = image.unsqueeze(0) + sigma * noise
            out.append(self._chunked_gradients(noisy, target.expand(self.params.n_samples)).mean(dim=0))
        return torch.stack(out)
