"""fxquant.speed.cost_model: measured and analytic cost tables."""

from __future__ import annotations

import pytest
import torch
from speed.speed_helpers import ConvChain, annotated

from fxquant.speed.cost_model import UnitCost, describe_unit, estimate_costs
from fxquant.speed.timing import TimingCache
from fxquant.speed.units import find_units


@pytest.fixture
def chain():
    gm = annotated(ConvChain(), torch.randn(1, 3, 16, 16))
    return gm, find_units(gm)


def test_measured_table_covers_every_unit_and_boundary(chain):
    gm, ug = chain
    before = torch.get_num_threads()
    costs = estimate_costs(gm, ug, threads=1, cache=TimingCache())
    assert torch.get_num_threads() == before
    assert set(costs.units) == {u.name for u in ug.units}
    assert all(c.fp32_ms > 0 and c.int8_ms > 0 for c in costs.units.values())
    assert set(costs.quantize_ms) == set(costs.dequantize_ms) == {f.tensor for f in ug.flows}
    assert costs.measured and costs.threads == 1


def test_cache_makes_the_second_estimate_free_and_identical(chain):
    gm, ug = chain
    cache = TimingCache()
    first = estimate_costs(gm, ug, threads=1, cache=cache)
    size = len(cache)
    second = estimate_costs(gm, ug, threads=1, cache=cache)
    assert len(cache) == size and first == second
    # the same shapes at another thread count are measured again
    estimate_costs(gm, ug, threads=2, cache=cache)
    assert len(cache) > size


def test_analytic_table_scales_with_work():
    # an EfficientNet block's expand and depthwise convs (shapes of Lite0's block 2)
    model = torch.nn.Sequential(torch.nn.Conv2d(24, 144, 1), torch.nn.Conv2d(144, 144, 3, padding=1, groups=144))
    small = estimate_costs(*_annotated_units(model, 28), threads=1, measure=False)
    large = estimate_costs(*_annotated_units(model, 56), threads=1, measure=False)
    assert not large.measured
    dense, dw = large.units["conv2d"], large.units["conv2d_1"]
    assert dense.int8_ms < dense.fp32_ms / 2 and dw.int8_ms < dw.fp32_ms
    # 4x the pixels: about 4x the time (less the fixed per-call cost)
    assert 3.0 < large.units["conv2d"].fp32_ms / small.units["conv2d"].fp32_ms <= 4.0
    # two threads halve the analytic estimate
    two = estimate_costs(*_annotated_units(model, 56), threads=2, measure=False)
    assert two.units["conv2d"].fp32_ms == pytest.approx(dense.fp32_ms / 2)


def _annotated_units(model, size):
    gm = annotated(model, torch.randn(1, 24, size, size))
    return gm, find_units(gm)


def test_descriptions_say_what_the_op_is(chain):
    _, ug = chain
    assert [describe_unit(u) for u in ug.units] == [
        "conv 3x3 on 3x16x16", "depthwise conv 3x3 on 8x16x16", "conv 1x1 on 8x16x16",
    ]


def test_unit_cost_rejects_negative_times():
    with pytest.raises(ValueError, match="times must be >= 0"):
        UnitCost(fp32_ms=-1.0, int8_ms=0.0, kernel="k", description="d")
