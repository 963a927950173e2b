"""fxquant.speed.timing: thread count honoured and restored, cached measurements."""

from __future__ import annotations

import pytest
import torch

from fxquant.speed.timing import TimingCache, interleaved_median_ms, median_ms, num_threads


def test_num_threads_sets_and_restores():
    before = torch.get_num_threads()
    with num_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with num_threads(None) as count:
        assert count == before


def test_num_threads_rejects_zero():
    with pytest.raises(ValueError, match="threads must be >= 1"), num_threads(0):
        pass


def test_median_is_positive_and_cache_measures_once():
    calls = []
    cache = TimingCache()

    def build():
        calls.append(1)
        x = torch.randn(64, 64)
        return lambda: x @ x

    first = cache.get_or_measure(("mm", 64), build, threads=1)
    second = cache.get_or_measure(("mm", 64), build, threads=1)
    assert first > 0 and first == second and len(calls) == 1 and len(cache) == 1
    assert ("mm", 64) in cache
    cache.clear()
    assert len(cache) == 0
    assert median_ms(lambda: None, threads=2) >= 0


def test_get_or_measure_many_times_only_the_missing_keys():
    cache = TimingCache()
    built = []

    def build(tag):
        def make():
            built.append(tag)
            return lambda: None
        return make

    cache.get_or_measure("a", build("a"), threads=1)
    times = cache.get_or_measure_many([("a", build("a2")), ("b", build("b"))], threads=1)
    assert built == ["a", "b"] and len(times) == 2 and len(cache) == 2


def test_interleaved_median_orders_a_heavy_and_a_light_function():
    x = torch.randn(256, 256)
    light, heavy = interleaved_median_ms([lambda: None, lambda: x @ x @ x], threads=1)
    assert 0 <= light < heavy
