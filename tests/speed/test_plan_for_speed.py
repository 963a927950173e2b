"""plan_for_speed end to end: a small model (fast) and EfficientNet-Lite0 with the X86
quantizer (real weights, real photos). Which ops are kept in float depends on this machine's
kernels, so these tests assert structure and accuracy, never timings."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from speed.speed_helpers import ConvChain, x86

from fxquant.lowering import kernels as lowering_kernels
from fxquant.lowering import lower_to_int8
from fxquant.metrics import top1_agreement
from fxquant.pt2e.capture import capture
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.float_fallback import FallbackReason
from fxquant.pt2e.quantizer.utils import get_annotation
from fxquant.speed import estimate_costs, find_units, plan_for_speed, plan_from_costs
from fxquant.speed.plan_for_speed import annotate_copy
from fxquant.zoo import efficientnet_lite0, imagenet_photos


@pytest.mark.parametrize("measure", [True, False], ids=["measured", "analytic"])
def test_small_model_plan_leaves_the_model_untouched(measure):
    x = torch.randn(1, 3, 16, 16)
    gm = capture(ConvChain().eval(), (x,))
    before = [n.name for n in gm.graph.nodes]
    threads = torch.get_num_threads()
    plan = plan_for_speed(gm, (x,), x86(), threads=1, measure=measure)
    assert [n.name for n in gm.graph.nodes] == before
    assert all(get_annotation(n) is None for n in gm.graph.nodes)
    assert torch.get_num_threads() == threads
    assert [r.name for r in plan.rows] == ["conv2d", "conv2d_1", "conv2d_2"]
    assert plan.measured is measure and plan.threads == 1
    assert plan.expected_int8_ms <= plan.all_int8_ms + 1e-9
    assert plan.expected_int8_ms <= plan.expected_fp32_ms + 1e-9


def test_eager_model_is_captured_first():
    plan = plan_for_speed(ConvChain().eval(), (torch.randn(1, 3, 16, 16),), x86(), measure=False)
    assert len(plan.rows) == 3


def test_a_non_quantizer_is_a_clear_error():
    with pytest.raises(TypeError, match="needs a pt2e Quantizer"):
        plan_for_speed(ConvChain().eval(), (torch.randn(1, 3, 8, 8),), object())  # type: ignore[arg-type]


def _int8_conv_kernels(gm) -> int:
    targets = {lowering_kernels.conv2d, lowering_kernels.conv2d_relu,
               lowering_kernels.conv2d_add, lowering_kernels.conv2d_add_relu}
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in targets)


@pytest.mark.slow
def test_efficientnet_lite0_plan_is_what_the_lowering_runs():
    model = efficientnet_lite0().eval()
    calibration = imagenet_photos(8, split="calibration")
    holdout = imagenet_photos(32, split="holdout")
    x = calibration[:1]
    gm = capture(model, (x,))

    # the measured plan: which ops stay float depends on this machine's kernels
    plan = plan_for_speed(gm, (x,), x86(), threads=1)
    print(plan)
    annotated = annotate_copy(gm, (x,), x86())
    quantized = {n.name for n in annotated.graph.nodes if get_annotation(n) is not None and get_annotation(n).input_qspec_map}
    anchors = {r.name for r in plan.rows if not r.passthrough}
    # 49 convs (9 with their residual add fused), the pool and the classifier
    assert len(anchors) == 51 and anchors <= quantized
    assert set(plan.keep_float) <= anchors
    assert sorted(r.name for r in plan.rows if r.passthrough) == ["dropout", "flatten", "pad", "pad_1", "pad_2", "pad_3", "pad_4"]
    assert plan.expected_int8_ms <= plan.all_int8_ms + 1e-9
    assert plan.expected_int8_ms <= plan.expected_fp32_ms + 1e-9
    assert all(r.name in str(plan) for r in plan.rows)

    # a plan from a fixed cost table where int8 depthwise convs are 3x slower than fp32:
    # machine-independent, and it exercises float islands, markers and pass-through pads
    graph = find_units(annotated)
    costs = estimate_costs(annotated, graph, threads=1, measure=False)
    slow_dw = {name: dataclasses.replace(c, int8_ms=3 * c.fp32_ms) if "depthwise" in c.description else c
               for name, c in costs.units.items()}
    forced = plan_from_costs(graph, dataclasses.replace(costs, units=slow_dw))
    float_convs = [r for r in forced.rows if r.decision == "float" and "conv" in r.op]
    assert any("depthwise" in r.op for r in float_convs) and any(r.marker_for for r in forced.rows)

    # applied with KeepFloatQuantizer, the lowering runs exactly the planned int8 convs
    quantizer = forced.keep_float_quantizer(x86())
    prepared = prepare_pt2e(capture(model, (x,)), quantizer)
    assert quantizer.kept_float == forced.as_fallbacks()
    assert set(quantizer.kept_float.values()) <= {FallbackReason.SPEED_PLAN}
    with torch.no_grad():
        for image in calibration:
            prepared(image[None])
        lowered = lower_to_int8(convert_pt2e(prepared))
        int8_convs = sum(1 for r in forced.rows if r.decision == "int8" and "conv" in r.op)
        assert _int8_conv_kernels(lowered) == int8_convs
        reference = torch.cat([model(b) for b in holdout.split(16)])
        out = torch.cat([lowered(image[None]) for image in holdout])
    agreement = top1_agreement(reference, out)
    print(f"{len(forced.keep_float)} ops kept float, {int8_convs} int8 convs: top-1 agreement {agreement:.1%}")
    # the all-int8 X86 model holds 90% on real crops (tests/pt2e/test_real_models.py); float
    # islands only remove quantization error, a plan applied to the wrong nodes falls far below
    assert agreement >= 0.875
