"""Batches of model inputs: a tensor is one positional input, a tuple/list several."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["as_args", "materialize"]


def as_args(batch: object) -> tuple[Any, ...]:
    """A batch as the model's positional arguments."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)):
        return tuple(batch)
    raise TypeError(
        "a batch must be a Tensor or a tuple of the model's positional inputs, got "
        f"{type(batch).__name__}"
    )


def materialize(data: Iterable[Any], what: str) -> list[tuple[Any, ...]]:
    """All batches of ``data`` as argument tuples (a ValueError if there are none)."""
    if isinstance(data, torch.Tensor):
        raise TypeError(f"{what} must be an iterable of batches, not one tensor; pass [tensor] "
                        "or tensor.split(batch_size)")
    batches = [as_args(b) for b in data]
    if not batches:
        raise ValueError(f"{what} is empty; pass at least one batch")
    return batches
