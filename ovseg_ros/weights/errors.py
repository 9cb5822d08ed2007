"""The two errors of the weights package."""
from __future__ import annotations


class WeightsError(RuntimeError):
    """Weights cannot be loaded; the message says which model, which file/tag, which setting."""


class WeightsToolError(RuntimeError):
    """A weights command cannot do what was asked; the message says what and how to fix it."""


__all__ = ["WeightsError", "WeightsToolError"]
