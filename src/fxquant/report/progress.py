"""Progress bars over batches: tqdm when it is installed, nothing otherwise."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

__all__ = ["progress_bar"]

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, desc: str, enabled: bool = True) -> Iterable[T]:
    """``items`` wrapped in a tqdm bar (on stderr) when ``enabled`` and tqdm is installed
    (the ``progress`` extra); ``items`` unchanged otherwise."""
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="batch", leave=False)
