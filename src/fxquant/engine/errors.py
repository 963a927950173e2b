"""Errors the engine raises for user mistakes; each names the node involved."""

from __future__ import annotations

__all__ = ["AnnotationError", "CaptureError", "NotCalibratedError"]


class AnnotationError(ValueError):
    """An annotation that cannot be honoured (a missing edge, a dangling shared spec...)."""


class NotCalibratedError(RuntimeError):
    """convert was asked for quantization parameters that no data has produced."""


class CaptureError(RuntimeError):
    """The model could not be captured as a graph."""
