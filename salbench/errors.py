"""User-facing errors: one line, naming the file/line/argument at fault, exit code 2."""

from __future__ import annotations

EXIT_USAGE = 2


class SalbenchError(Exception):
    """An error caused by user input (a file, a line, an argument, a config key).

    Stage scripts catch it at the boundary, print ``error: <message>`` on one line to stderr and
    exit with :data:`EXIT_USAGE`; nothing computed before it is lost.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataError(SalbenchError):
    """A data file is missing, unreadable or malformed."""


class ConfigError(SalbenchError):
    """A configuration value or key is invalid."""


class NotApplicableError(ConfigError):
    """A saliency method cannot apply to the model as configured (a CAM or IBA without a spatial target
    layer, CASME without a masker for the architecture): stages skip the method and record one line for
    it instead of failing (:mod:`salbench.stages.generate`)."""
