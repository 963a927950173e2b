"""Timing short CPU kernels: medians of repeated runs at a fixed thread count, and the
in-process cache that makes repeated plans cheap."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Hashable, Iterator, Sequence

import torch

__all__ = ["TimingCache", "default_cache", "interleaved_median_ms", "median_ms", "num_threads"]

# A sample is at least this long (the op runs several times per sample when it is shorter),
# so clock resolution and call overhead do not dominate microsecond-scale ops.
_MIN_SAMPLE_S = 2e-4
_SAMPLES = 9
_WARMUP = 2


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: leave it), restoring the
    previous count afterwards; yields the count in effect."""
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for torch's current setting), got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _repeats(fn: Callable[[], object]) -> int:
    """Warm ``fn`` up and return how many calls make one sample of at least _MIN_SAMPLE_S."""
    start = time.perf_counter()
    for _ in range(_WARMUP):
        fn()
    once = max((time.perf_counter() - start) / _WARMUP, 1e-7)
    return int(_MIN_SAMPLE_S / once) + 1 if once < _MIN_SAMPLE_S else 1


def interleaved_median_ms(fns: Sequence[Callable[[], object]], *, threads: int) -> list[float]:
    """Median time of each ``fn()`` in milliseconds, the functions sampled round-robin so
    that load from other processes hits them alike (an fp32 op and its int8 kernel are
    compared under the same conditions).

    Single-threaded runs use thread CPU time (``time.thread_time``), which other processes on
    a loaded machine do not inflate; multi-threaded runs use wall time (``perf_counter``),
    since the work happens on torch's worker threads."""
    clock = time.thread_time if threads == 1 else time.perf_counter
    repeats = [_repeats(fn) for fn in fns]
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(_SAMPLES):
        for fn, n, out in zip(fns, repeats, samples, strict=True):
            t0 = clock()
            for _ in range(n):
                fn()
            out.append((clock() - t0) / n)
    return [statistics.median(out) * 1e3 for out in samples]


def median_ms(fn: Callable[[], object], *, threads: int) -> float:
    """Median time of ``fn()`` in milliseconds (see :func:`interleaved_median_ms`)."""
    return interleaved_median_ms([fn], threads=threads)[0]


class TimingCache:
    """Measured times keyed by (what ran, at which shapes, dtypes and thread count)."""

    def __init__(self) -> None:
        self._ms: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._ms)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._ms

    def get_or_measure(self, key: Hashable, build: Callable[[], Callable[[], object]], *, threads: int) -> float:
        """The cached time for ``key``, else build the closure, time it and cache the result."""
        return self.get_or_measure_many([(key, build)], threads=threads)[0]

    def get_or_measure_many(
        self, items: Sequence[tuple[Hashable, Callable[[], Callable[[], object]]]], *, threads: int
    ) -> list[float]:
        """Like :meth:`get_or_measure` for several keys; the missing ones are timed interleaved."""
        missing = [(key, build) for key, build in items if key not in self._ms]
        if missing:
            times = interleaved_median_ms([build() for _, build in missing], threads=threads)
            for (key, _), ms in zip(missing, times, strict=True):
                self._ms[key] = ms
        return [self._ms[key] for key, _ in items]

    def clear(self) -> None:
        self._ms.clear()


_DEFAULT_CACHE = TimingCache()


def default_cache() -> TimingCache:
    """The process-wide cache used when no cache is passed."""
    return _DEFAULT_CACHE
