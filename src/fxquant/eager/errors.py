"""Errors for misuse of the eager-mode API."""

from __future__ import annotations

__all__ = ["EagerModeError"]


class EagerModeError(ValueError, AssertionError):
    """The model is not in a state the eager API can work with (wrong training mode,
    parameters on several devices, ...).

    Also an ``AssertionError``, which is what upstream raises, so existing ``except`` clauses
    keep working after migrating.
    """
