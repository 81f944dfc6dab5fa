"""Classifier-agnostic training of a CASME masker (Zolna, Geras and Cho, CVIU 2020, Sec. 3, Alg. 1).

Every step, as the authors' ``train.py`` (kondiz/casme) does it:

1. the classifier ``f`` (the masker's encoder, initialised from OUR trained classifier) classifies the
   clean batch ``x`` and, unless ``fixed_classifier``, takes an SGD step on its cross-entropy; every
   ``save_every`` steps its state joins the pool F (at most ``history_size`` states, a random one is
   replaced when full);
2. the decoder maps the encoder's detached features to a mask ``m`` (upsampled to the input); the
   masked-out image is ``x * (1 - m)`` in normalised space (removed pixels take the data mean);
3. with probability ``history_prob`` a classifier drawn uniformly from F (eval mode) scores the
   masked-out image, else the current ``f`` does and also takes an SGD step on that cross-entropy
   (the classifier learns to see through the masks: the map must remove evidence that any classifier
   could use, not only what one fixed classifier uses);
4. the decoder minimises (Adam, gradient norm clipped)::

       L_m = mean_i 1[f(x_i) = y_i] * (-H(f'(x_i * (1 - m_i))))              (entropy variant)
             or  -CE(f'(x_i * (1 - m_i)), y_i)                                  (``adversarial``)
             - lambda_r * mean_i relu(c_i - mean(m_i))

   with ``c_i = 1`` when ``x_i`` is classified correctly and its masked-out image is not (the
   regulariser only shrinks masks that already fool the classifier), ``f'`` the classifier of step 3.

Simplifications (stated): gradients of step 3 (classifier) and step 4 (decoder) are both taken at the
classifier's pre-step weights (the authors' PyTorch 0.4 code stepped the classifier between the two
backward passes of one graph, which current PyTorch rejects); the pool is filled every ``save_every``
global steps (the authors count batches within an epoch); no learning-rate decay (the authors divide by
10 every 20 epochs; the embedded default trains a few epochs); augmentation is the embedded classifier's
(flips, translations) instead of random resized crops; masks are upsampled bilinearly (the authors:
nearest) unless ``upsample="nearest"``. The paper's objective is masked-out only; masked-in accuracy is
reported by :func:`evaluate_masker` as a diagnostic, not optimised.

Determinism: shuffling, augmentation and pool draws use one ``torch.Generator`` seeded from
``seed``; the decoder is initialised from a second one; dropout (VGG encoders) draws from the global
generator, seeded inside :func:`torch.random.fork_rng` so the caller's global state is untouched.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections import defaultdict

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from casme_utils.architecture import Masker, upsample_mask
from salbench.errors import ConfigError
from salbench.models.training import augment
from salbench.runtime import one_thread
from salbench.scoped import frozen_parameters, model_mode

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CasmeTrainConfig:
    """Hyper-parameters of :func:`train_masker` (authors' defaults in brackets where they differ).

    Attributes:
        seed: seed of every draw (shuffling, augmentation, pool, decoder initialisation, dropout).
        epochs: passes over ``images_per_epoch`` training images [60 on ImageNet].
        batch_size: images per step [128].
        images_per_epoch: images drawn per epoch, 0 = the whole split [20 % of ImageNet].
        decoder_width: channels of the decoder's 1x1 projections [64].
        lr_decoder: Adam learning rate of the decoder [1e-3; higher for the ~50 steps of the embedded
            default: with 1e-2 and ``lambda_r=5`` the embedded ResNet's masked-out accuracy fell from 0.79
            to 0.26 at a mean mask of 0.12, vs 0.48 at 0.11 with the authors' 1e-3 and 10].
        lr_classifier: SGD learning rate of the concurrently trained classifier.
        momentum: SGD momentum.
        weight_decay: weight decay of both optimisers.
        lambda_r: weight of the area regulariser [10; the paper's settings range over 2.5 .. 18].
        history_prob: probability of scoring the masked-out image with a past classifier from F.
        save_every: steps between additions to F [100 or 1000 batches].
        history_size: most classifier states kept in F.
        adversarial: cross-entropy instead of entropy as the masker's main loss.
        fixed_classifier: never train the classifier (the paper's classifier-dependent baseline).
        upsample: ``bilinear`` or ``nearest`` upsampling of the mask to the input [nearest].
        clip_norm: gradient-norm clipping of the decoder.
        max_shift_fraction: random translation of the training images, as a fraction of their side.
    """

    seed: int = 0
    epochs: int = 3
    batch_size: int = 64
    images_per_epoch: int = 1000
    decoder_width: int = 16
    lr_decoder: float = 1e-2
    lr_classifier: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lambda_r: float = 5.0
    history_prob: float = 0.5
    save_every: int = 5
    history_size: int = 30
    adversarial: bool = False
    fixed_classifier: bool = False
    upsample: str = "bilinear"
    clip_norm: float = 10.0
    max_shift_fraction: float = 1 / 16

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.decoder_width, self.save_every, self.history_size) < 1:
            raise ConfigError(
                "casme training: epochs, batch_size, decoder_width, save_every, history_size >= 1"
            )
        if not 0.0 <= self.history_prob <= 1.0 or self.images_per_epoch < 0 or self.lambda_r < 0:
            raise ConfigError("casme training: history_prob in [0, 1]; images_per_epoch, lambda_r >= 0")
        if self.upsample not in ("bilinear", "nearest"):
            raise ConfigError(f"casme training: upsample must be bilinear or nearest, got {self.upsample!r}")


class ClassifierPool:
    """The set F of past classifier states and one frozen eval-mode copy that plays them back."""

    def __init__(self, classifier: nn.Module, size: int, every: int) -> None:
        self.size, self.every = size, every
        self.states: list[dict[str, torch.Tensor]] = []
        self.player = copy.deepcopy(classifier).eval().requires_grad_(False)

    def __len__(self) -> int:
        return len(self.states)

    def maybe_add(self, classifier: nn.Module, step: int, generator: torch.Generator) -> None:
        """Store the classifier's state every ``every`` steps (and at the first step)."""
        if self.states and step % self.every != self.every - 1:
            return
        state = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
        if len(self.states) < self.size:
            self.states.append(state)
        else:
            self.states[int(torch.randint(len(self.states), (), generator=generator))] = state

    def draw(self, generator: torch.Generator) -> nn.Module:
        """A uniformly drawn past classifier (eval mode, frozen)."""
        self.player.load_state_dict(
            self.states[int(torch.randint(len(self.states), (), generator=generator))]
        )
        return self.player


def masker_loss(
    logits_clean: torch.Tensor,
    logits_out: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    lambda_r: float,
    adversarial: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The decoder's loss ``L_m`` of the module docstring.

    Args:
        logits_clean: (N,K) classifier logits on the clean images (no gradient needed).
        logits_out: (N,K) logits on the masked-out images (gradient flows to the mask).
        mask: (N,1,H,W) mask in [0, 1].
        targets: (N,) labels.
        lambda_r: weight of the area regulariser [10; the paper's settings range over 2.5 .. 18].
        adversarial: use ``-CE`` instead of the negative entropy.

    Returns:
        ``(loss, stats)`` with stats ``main``, ``area_term``, ``nontrivially_confused`` (batch means).
    """
    correct = logits_clean.detach().argmax(1).eq(targets)
    mistaken = logits_out.detach().argmax(1).ne(targets)
    confused = (correct & mistaken).float()
    area = mask.mean(dim=(1, 2, 3))
    area_term = -lambda_r * F.relu(confused - area).mean()
    if adversarial:
        main = -F.cross_entropy(logits_out, targets)
    else:
        logp = F.log_softmax(logits_out, 1)
        main = ((logp.exp() * logp).sum(1) * correct.float()).mean()
    stats = {
        "main": float(main.detach()),
        "area_term": float(area_term.detach()),
        "nontrivially_confused": float(confused.mean()),
    }
    return main + area_term, stats


def _set_grads(params: list[nn.Parameter], grads: tuple[torch.Tensor | None, ...]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g


def train_step(
    masker: Masker,
    pool: ClassifierPool,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batch: tuple[torch.Tensor, torch.Tensor],
    cfg: CasmeTrainConfig,
    step: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """One step of the module docstring on ``batch`` = (images (N,3,H,W), labels (N,)); returns stats."""
    (x, y), (opt_c, opt_d) = batch, optimizers
    enc, dec = masker.encoder, masker.decoder
    train_clf = not cfg.fixed_classifier
    with torch.set_grad_enabled(train_clf):
        logits, features = masker.encode(x)
        loss_clean = F.cross_entropy(logits, y)
    if train_clf:
        opt_c.zero_grad(set_to_none=True)
        loss_clean.backward()
        opt_c.step()
        pool.maybe_add(enc, step, generator)
    mask = upsample_mask(dec([f.detach() for f in features]), x.shape[-2:], cfg.upsample)
    use_pool = bool(torch.rand((), generator=generator) < cfg.history_prob) and train_clf and len(pool) > 0
    logits_out = (pool.draw(generator) if use_pool else enc)(x * (1 - mask))
    loss, stats = masker_loss(logits, logits_out, mask, y, cfg.lambda_r, cfg.adversarial)
    update_clf = train_clf and not use_pool
    dec_params = list(dec.parameters())
    _set_grads(dec_params, torch.autograd.grad(loss, dec_params, retain_graph=update_clf))
    loss_out = F.cross_entropy(logits_out.detach() if not update_clf else logits_out, y)
    if update_clf:
        enc_params = list(enc.parameters())
        _set_grads(enc_params, torch.autograd.grad(loss_out, enc_params, allow_unused=True))
        opt_c.step()
    nn.utils.clip_grad_norm_(dec_params, cfg.clip_norm)
    opt_d.step()
    return {
        "loss": float(loss.detach()),
        **stats,
        "loss_clean": float(loss_clean.detach()),
        "loss_masked_out": float(loss_out.detach()),
        "accuracy_clean": float(logits.argmax(1).eq(y).float().mean()),
        "accuracy_masked_out": float(logits_out.argmax(1).eq(y).float().mean()),
        "mask_mean": float(mask.detach().mean()),
        "pool_used": float(use_pool),
    }


def train_masker(
    masker: Masker,
    train: tuple[torch.Tensor, torch.Tensor],
    cfg: CasmeTrainConfig,
    device: torch.device,
    progress: bool = False,
) -> pd.DataFrame:
    """Train ``masker`` (decoder and, unless fixed, its encoder) in place; one history row per epoch.

    Args:
        masker: encoder initialised from the classifier to explain + fresh decoder.
        train: normalised images (N,3,H,W) and labels (N,) on CPU.
        cfg: hyper-parameters (``cfg.seed`` drives every draw).
        device: where to train.
        progress: show a progress bar.

    Returns:
        Per epoch: means over the epoch's images of the :func:`train_step` statistics and seconds.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    masker.to(device)
    enc, dec = masker.encoder, masker.decoder
    optimizers = (
        torch.optim.SGD(
            enc.parameters(), lr=cfg.lr_classifier, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        ),
        torch.optim.Adam(dec.parameters(), lr=cfg.lr_decoder, weight_decay=cfg.weight_decay),
    )
    pool = ClassifierPool(enc, cfg.history_size, cfg.save_every)
    devices = [device.index or 0] if device.type == "cuda" else []
    history = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=devices))
        stack.enter_context(one_thread())  # the masker does not depend on the core count
        stack.enter_context(model_mode(masker, True))
        stack.enter_context(model_mode(enc, not cfg.fixed_classifier))
        if cfg.fixed_classifier:
            stack.enter_context(frozen_parameters(enc))
        torch.manual_seed(cfg.seed)
        for epoch in range(cfg.epochs):
            row = _epoch(masker, pool, optimizers, train, cfg, epoch, gen, device, progress)
            log.info(
                "casme epoch %(epoch)d loss %(loss).3f mask %(mask_mean).3f "
                "masked-out accuracy %(accuracy_masked_out).3f",
                row,
            )
            history.append(row)
    return pd.DataFrame(history)


def _epoch(
    masker: Masker,
    pool: ClassifierPool,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    train: tuple[torch.Tensor, torch.Tensor],
    cfg: CasmeTrainConfig,
    epoch: int,
    gen: torch.Generator,
    device: torch.device,
    progress: bool,
) -> dict[str, float]:
    """One epoch over ``images_per_epoch`` images drawn without replacement; image-weighted mean stats."""
    images, labels = train
    per_epoch = min(cfg.images_per_epoch or len(images), len(images))
    steps = math.ceil(per_epoch / cfg.batch_size)
    shift = int(images.shape[-1] * cfg.max_shift_fraction)
    t0, sums = time.perf_counter(), defaultdict(float)
    perm = torch.randperm(len(images), generator=gen)[:per_epoch]
    bar = tqdm(range(steps), desc=f"casme {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    for step in bar:
        idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x = augment(images[idx], gen, shift).to(device)
        batch = (x, labels[idx].to(device))
        stats = train_step(masker, pool, optimizers, batch, cfg, epoch * steps + step, gen)
        for k, v in stats.items():
            sums[k] += v * len(idx)
    row = {"epoch": epoch + 1, **{k: v / per_epoch for k, v in sums.items()}}
    row["seconds"] = time.perf_counter() - t0
    return row


@torch.no_grad()
def evaluate_masker(
    masker: Masker,
    classifier: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    batch_size: int = 128,
    upsample: str = "bilinear",
) -> dict[str, float]:
    """Accuracy of a frozen ``classifier`` on clean, masked-in ``x * m`` and masked-out ``x * (1 - m)``.

    Both modules run in eval mode (restored afterwards) on the masker's device; a good masker keeps
    masked-in accuracy high and drives masked-out accuracy down with a small ``mask_mean``.

    Returns:
        ``n_images``, ``accuracy_clean``, ``accuracy_masked_in``, ``accuracy_masked_out``, ``mask_mean``.
    """
    device = next(masker.parameters()).device
    images, labels = data
    totals = defaultdict(float)
    with model_mode(masker, False), model_mode(classifier, False):
        for i in range(0, len(images), batch_size):
            x, y = images[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)
            m = masker.upsampled(x, upsample)
            for key, inputs in (("clean", x), ("masked_in", x * m), ("masked_out", x * (1 - m))):
                totals[f"accuracy_{key}"] += float(classifier(inputs).argmax(1).eq(y).sum())
            totals["mask_mean"] += float(m.mean(dim=(1, 2, 3)).sum())
    n = max(len(images), 1)
    return {"n_images": len(images), **{k: v / n for k, v in totals.items()}}
