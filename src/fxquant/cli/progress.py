"""Progress bars on stderr (tqdm when installed, otherwise none), so stdout keeps only results."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    items: Iterable[T], *, enabled: bool, desc: str, total: int | None = None, unit: str = "item"
) -> Iterator[T]:
    """Iterate over ``items`` with a tqdm bar on stderr when ``enabled`` and tqdm is installed."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:  # the progress extra is optional: no bar then
            pass
        else:
            yield from tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False, unit=unit)
            return
    yield from items
