"""CASME (Zolna, Geras and Cho, CVIU 2020): masker architecture, classifier-agnostic training, checkpoints.

* :mod:`casme_utils.architecture`: :class:`Masker` = encoder (a classifier read at several scales) +
  :class:`Decoder` (one-channel mask at stride 4).
* :mod:`casme_utils.training`: :func:`train_masker` (the paper's objective), :func:`evaluate_masker`
  (masked-in / masked-out accuracy).
* :mod:`casme_utils.embedded`: :func:`train_casme` (embedded benchmark, cached checkpoint); a stage-level
  module (it opens a run's workspace), so it is imported on its own, not from this package.
* :mod:`casme_utils.checkpoint`: :func:`save_masker` / :func:`load_masker` (``weights_only=True``; our
  layout and the authors' kondiz/casme layout), :func:`default_checkpoint`, :func:`resolve_checkpoint`.

The saliency method wrapping a masker is :mod:`salbench.methods.casme` (id ``casme``).
"""

from casme_utils.architecture import Decoder, Masker, build_masker, feature_points, upsample_mask
from casme_utils.checkpoint import default_checkpoint, load_masker, resolve_checkpoint, save_masker
from casme_utils.training import CasmeTrainConfig, evaluate_masker, masker_loss, train_masker

__all__ = [
    "CasmeTrainConfig",
    "Decoder",
    "Masker",
    "build_masker",
    "default_checkpoint",
    "evaluate_masker",
    "feature_points",
    "load_masker",
    "masker_loss",
    "resolve_checkpoint",
    "save_masker",
    "train_masker",
    "upsample_mask",
]
