"""fxquant.speed.plan: the plan built from a cost table on a real (small) annotated graph."""

from __future__ import annotations

import pytest
import torch
from speed.speed_helpers import ConvChain, PadConv, annotated, table, x86

from fxquant.pt2e.quantizer.float_fallback import FallbackReason, KeepFloatQuantizer
from fxquant.speed.plan import SpeedPlanRow
from fxquant.speed.plan_for_speed import plan_from_costs
from fxquant.speed.units import find_units


@pytest.fixture
def chain():
    return find_units(annotated(ConvChain(), torch.randn(1, 3, 8, 8)))


def _costs(dw_int8_ms):
    # units conv2d → conv2d_1 (depthwise) → conv2d_2; tensors x, relu, relu_1, relu_2
    return table({"conv2d": (1.0, 0.4), "conv2d_1": (0.5, dw_int8_ms), "conv2d_2": (1.0, 0.4)},
                 {"x": (0.1, 0.1), "relu": (0.2, 0.2), "relu_1": (0.2, 0.2), "relu_2": (0.1, 0.1)}, float_ms=0.25)


def test_slow_depthwise_stays_float_and_quantizes_the_first_convs_output(chain):
    plan = plan_from_costs(chain, _costs(dw_int8_ms=1.5))
    # conv2d_2 feeds the graph output: nothing quantizes its output, so it can never be int8.
    # conv2d int8, the rest float: 0.4 + 0.5 + 1.0 + q(x) .1 + dq(relu) .2 + .25 = 2.45
    # (conv2d + conv2d_1 int8: 0.4 + 1.5 + 1.0 + .1 + dq(relu_1) .2 + .25 = 3.45; fp32: 2.75)
    assert plan.keep_float.keys() == {"conv2d_2"}
    assert "nothing reads its output as int8" in plan.keep_float["conv2d_2"]
    assert [r.decision for r in plan.rows] == ["int8", "float", "float"]
    # the depthwise conv stays annotated (float compute) so that conv2d's output is quantized
    assert plan.rows[1].marker_for == "conv2d" and plan.rows[2].marker_for is None
    assert plan.expected_int8_ms == pytest.approx(2.45)
    assert plan.all_int8_ms == pytest.approx(3.45)
    assert plan.expected_fp32_ms == pytest.approx(2.75)
    assert plan.expected_speedup == pytest.approx(2.75 / 2.45)
    assert [r.module_path for r in plan.rows] == ["conv1", "dw", "conv2"]
    # switching the depthwise to int8 moves the dequantize from relu to relu_1 (same cost)
    assert plan.rows[1].boundary_ms == pytest.approx(0.0)


def test_fast_depthwise_goes_int8_and_the_last_conv_quantizes_its_output(chain):
    plan = plan_from_costs(chain, _costs(dw_int8_ms=0.2))  # 0.4 + 0.2 + 1.0 + .1 + .2 + .25 = 2.15
    assert plan.keep_float == {}
    assert [r.decision for r in plan.rows] == ["int8", "int8", "float"]
    assert plan.rows[2].marker_for == "conv2d_1"
    assert plan.expected_int8_ms == pytest.approx(2.15) == plan.all_int8_ms


def test_plan_prints_a_table_and_converts_to_fallbacks(chain):
    plan = plan_from_costs(chain, _costs(dw_int8_ms=1.5))
    text = str(plan)
    for name in ("conv2d", "conv2d_1", "conv2d_2", "keep float conv2d_2", "planned 2.45 ms",
                 "stays annotated: quantizes conv2d's output"):
        assert name in text
    assert plan.as_fallbacks() == {"conv2d_2": FallbackReason.SPEED_PLAN}
    inner = x86()
    wrapped = plan.keep_float_quantizer(inner)
    assert isinstance(wrapped, KeepFloatQuantizer) and wrapped.quantizer is inner
    assert wrapped.keep_float == {"conv2d_2": FallbackReason.SPEED_PLAN}


def test_row_rejects_unknown_decision():
    with pytest.raises(ValueError, match="decision must be"):
        SpeedPlanRow(name="n", module_path="", op="", kernel="", fp32_ms=1, int8_ms=1, boundary_ms=0, decision="fp16")


def test_passthrough_rows_are_costed_but_never_named_in_fallbacks():
    ug = find_units(annotated(PadConv(), torch.randn(1, 3, 8, 8)))
    costs = table({"pad": (0.1, 0.2), "conv2d": (1.0, 2.0), "flatten": (0.1, 0.0)},
                  {"x": (0.1, 0.1), "pad": (0.1, 0.1), "relu": (0.1, 0.1), "flatten": (0.1, 0.1)})
    plan = plan_from_costs(ug, costs)
    assert plan.keep_float.keys() == {"conv2d"}
    assert [(r.name, r.decision, r.passthrough) for r in plan.rows] == [
        ("pad", "float", True), ("conv2d", "float", False), ("flatten", "float", True)]
    assert "follows its reader" in str(plan) and "0 of 1 quantized ops in int8" in str(plan)
    # the flatten is read by a float op, so nothing can quantize the conv's output: even
    # "everything int8" runs this model in float
    assert plan.all_int8_ms == pytest.approx(plan.expected_fp32_ms) == pytest.approx(1.2)
