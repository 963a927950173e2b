"""Reference representation: every q/dq pattern becomes integer arithmetic whose result is
the q/dq model's (standalone quantize/dequantize bit for bit, composite ops within one
quantization step)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_sqnr
from pt2e_helpers import (
    ACT,
    QD,
    WEIGHT,
    A,
    ConvBnReLUNet,
    FnQuantizer,
    annotate_conv_linear,
    export,
    nodes,
    op_counts,
)
from torch import nn
from torch.fx import GraphModule
from torch.fx.passes.shape_prop import ShapeProp

from fxquant import MinMaxObserver, PerChannelMinMaxObserver, PlaceholderObserver
from fxquant.engine.reference_representation import (
    REFERENCE_RULES,
    ReferenceRule,
    rewrite_to_reference_representation,
)
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec, SharedQuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

ACT_INT8 = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                            qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=MinMaxObserver)
WEIGHT_PER_TENSOR = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127,
                                     qscheme=torch.per_tensor_symmetric, observer_or_fake_quant_ctr=MinMaxObserver)
WEIGHT_AXIS_1 = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127,
                                 qscheme=torch.per_channel_symmetric, ch_axis=1,
                                 observer_or_fake_quant_ctr=PerChannelMinMaxObserver)
DYNAMIC = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
                           is_dynamic=True, observer_or_fake_quant_ctr=PlaceholderObserver)

_MATMULS = (A.conv1d.default, A.conv2d.default, A.linear.default)
_SAME_RANGE = (A.add.Tensor, A.max_pool2d.default, A.adaptive_avg_pool2d.default, A.mean.dim)


def annotate_all(gm: GraphModule, act: QuantizationSpec = ACT, weight: QuantizationSpec = WEIGHT) -> None:
    """Inputs and outputs of conv/linear and add (output after a relu/hardtanh), pools
    (max-pool shares its input's qparams, as the real quantizers do)."""
    for n in gm.graph.nodes:
        if n.target not in (*_MATMULS, *_SAME_RANGE):
            continue
        users = list(n.users)
        clamped = len(users) == 1 and users[0].target in (A.relu.default, A.hardtanh.default)
        out = users[0] if clamped else n
        if n.target in _MATMULS:
            annotate_input_qspec_map(n, n.args[0], act)
            annotate_input_qspec_map(n, n.args[1], weight)
            annotate_output_qspec(out, act)
        elif n.target == A.add.Tensor:
            for arg in n.args[:2]:
                annotate_input_qspec_map(n, arg, act)
            annotate_output_qspec(out, act)
        else:
            annotate_input_qspec_map(n, n.args[0], act)
            shared = n.target == A.max_pool2d.default
            annotate_output_qspec(n, SharedQuantizationSpec((n.args[0], n)) if shared else act)


def calibrated(model: nn.Module, x: torch.Tensor, annotate=annotate_all) -> GraphModule:
    gm = prepare_pt2e(export(model, x), FnQuantizer(annotate))
    for _ in range(3):
        gm(torch.randn_like(x))
    gm(x)
    return gm


def converted(model: nn.Module, x: torch.Tensor, annotate=annotate_all, **convert_kwargs) -> GraphModule:
    return convert_pt2e(calibrated(model, x, annotate), **convert_kwargs)


def output_scale(gm: GraphModule) -> float:
    """Scale of the dequantize that produces the model output."""
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0][0]
    assert out.target == QD.dequantize_per_tensor.default
    return float(out.args[1])


def assert_within_one_step(ref: torch.Tensor, out: torch.Tensor, scale: float) -> None:
    steps = ((ref - out).abs() / scale).round()
    assert steps.max() <= 1, f"off by {steps.max():.0f} quantization steps"
    assert (steps > 0).float().mean() < 0.05, "more than 5% of the outputs differ"


def dtypes_of(gm: GraphModule, x: torch.Tensor, target) -> list[torch.dtype]:
    ShapeProp(gm).propagate(x)
    return [n.meta["tensor_meta"].dtype for n in nodes(gm, target)]


class Linear(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 8, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class ConvReLU(nn.Module):
    def __init__(self, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
        self.activation = activation or nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(x))


class Conv1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AddReLU(nn.Module):
    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.a, self.b, self.relu = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1), relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x) + self.b(x)
        return torch.relu(y) if self.relu else y


class Pools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(self.conv(x), 3, stride=2, padding=1)
        return nn.functional.adaptive_avg_pool2d(y, 2) + y.mean((2, 3), keepdim=True)


CASES = [
    pytest.param(lambda: Linear(), (32, 16), {}, (A.linear.default, torch.int32), id="linear-per-channel"),
    pytest.param(lambda: Linear(bias=False), (32, 16), {"weight": WEIGHT_PER_TENSOR}, (A.linear.default, torch.int32), id="linear-per-tensor-no-bias"),
    pytest.param(lambda: Linear(), (4, 8, 16), {"act": ACT_INT8}, (A.linear.default, torch.int32), id="linear-3d-int8-activations"),
    pytest.param(lambda: ConvReLU(), (2, 4, 9, 9), {}, (A.conv2d.default, torch.int32), id="conv2d-relu-strided-grouped"),
    pytest.param(lambda: ConvReLU(), (2, 4, 9, 9), {"act": ACT_INT8, "weight": WEIGHT_PER_TENSOR}, (A.conv2d.default, torch.int32),
                 id="conv2d-relu-int8-per-tensor"),
    # no int32 kernel for dilated convolutions on CPU: exact accumulation in float64
    pytest.param(lambda: ConvReLU(nn.ReLU6()), (2, 4, 9, 9), {}, (A.conv2d.default, torch.int32),
                 id="conv2d-relu6"),
    pytest.param(lambda: ConvReLU(nn.Hardtanh(-0.5, 0.25)), (2, 4, 9, 9), {"act": ACT_INT8},
                 (A.conv2d.default, torch.int32), id="conv2d-hardtanh-int8"),
    pytest.param(lambda: Conv1d(), (2, 4, 12), {}, (A.conv1d.default, torch.float64), id="conv1d-dilated"),
    pytest.param(lambda: AddReLU(relu=True), (2, 4, 6, 6), {}, (A.add.Tensor, torch.float32), id="add-relu"),
    pytest.param(lambda: AddReLU(relu=False), (2, 4, 6, 6), {"act": ACT_INT8}, (A.add.Tensor, torch.float32), id="add-int8"),
    pytest.param(lambda: Pools(), (2, 4, 11, 11), {}, (A.max_pool2d.default, torch.int32), id="max-pool-avg-pool-mean"),
]


@pytest.mark.parametrize(("make_model", "shape", "specs", "anchor_dtype"), CASES)
def test_patterns_become_integer_arithmetic_within_one_step(make_model, shape, specs, anchor_dtype):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    q = converted(make_model(), x, lambda gm: annotate_all(gm, **specs))
    ref = q(x)
    r = rewrite_to_reference_representation(copy.deepcopy(q))
    r.graph.lint()
    assert op_counts(r) == {}, "every quantize/dequantize was spelled out"
    assert not nodes(r, A.relu.default) and not nodes(r, A.hardtanh.default), "post-ops became clamps"
    out = r(x)
    # the anchor computes on centered integers (add: on the rescaled terms), not on dequantized floats
    anchor, dtype = anchor_dtype
    assert dtypes_of(r, x, anchor)[0] == dtype
    assert_within_one_step(ref, out, output_scale(q))
    assert_sqnr(ref, out, min_db=35)


def test_add_and_pools_emit_no_float_op_between_integers():
    x = torch.randn(2, 4, 11, 11)
    r = rewrite_to_reference_representation(converted(Pools(), x))
    dtypes = dtypes_of(r, x, A._to_copy.default)
    # every int8/uint8 value crossing an op boundary is an integer tensor
    assert torch.uint8 in dtypes and torch.int32 in dtypes
    assert dtypes_of(r, x, A.max_pool2d.default) == [torch.int32]
    # averages run on the centered integers (as floats) and are re-quantized
    assert dtypes_of(r, x, A.adaptive_avg_pool2d.default) == [torch.float32]


def test_dynamic_linear_accumulates_in_int32_with_runtime_qparams():
    torch.manual_seed(0)
    x = torch.randn(4, 16)

    def annotate(gm):
        lin = nodes(gm, A.linear.default)[0]
        annotate_input_qspec_map(lin, lin.args[0], DYNAMIC)
        annotate_input_qspec_map(lin, lin.args[1], WEIGHT)

    q = converted(Linear(), x, annotate)
    ref = q(x)
    r = rewrite_to_reference_representation(copy.deepcopy(q))
    # the runtime choice of qparams stays; quantize/dequantize are spelled out
    assert op_counts(r) == {"choose_qparams": 1}
    assert dtypes_of(r, x, A.linear.default) == [torch.int32]
    torch.testing.assert_close(r(x), ref, rtol=1e-5, atol=1e-5)


def test_convert_pt2e_flag_matches_the_qdq_model():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 10)
    gm = calibrated(ConvBnReLUNet().eval(), x, annotate_conv_linear)
    r = convert_pt2e(copy.deepcopy(gm), use_reference_representation=True)
    q = convert_pt2e(gm)
    assert op_counts(r) == {}
    assert_within_one_step(q(x), r(x), output_scale(q))
    # the integer nodes remember where they came from
    conv = nodes(r, A.conv2d.default)[0]
    assert "conv" in str(conv.meta["nn_module_stack"])


class InvertedResidual(nn.Module):
    """An EfficientNet-Lite block and head: expand, depthwise, project, skip, pool, classify."""

    def __init__(self) -> None:
        super().__init__()
        self.expand, self.depthwise = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.project, self.fc = nn.Conv2d(16, 8, 1), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self.depthwise(nn.functional.relu6(self.expand(x))))
        y = self.project(y) + x
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_xnnpack_quantized_block_becomes_integer_convolutions():
    from fxquant.pt2e.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    x = torch.randn(2, 8, 10, 10)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    gm = prepare_pt2e(export(InvertedResidual(), x), quantizer)
    for _ in range(3):
        gm(torch.randn_like(x))
    q = convert_pt2e(copy.deepcopy(gm))
    r = convert_pt2e(gm, use_reference_representation=True)
    assert op_counts(r) == {}
    # every convolution and the linear accumulate integers; relu6 became integer clamps
    assert dtypes_of(r, x, A.conv2d.default) == [torch.int32] * 3
    assert dtypes_of(r, x, A.linear.default) == [torch.int32]
    assert not nodes(r, A.hardtanh.default)
    assert_within_one_step(q(x), r(x), output_scale(q))


def test_unfolded_weights_are_quantized_in_the_graph_to_the_same_integers():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 9)
    gm = calibrated(ConvReLU(), x)
    folded = convert_pt2e(copy.deepcopy(gm), use_reference_representation=True)
    unfolded = convert_pt2e(gm, use_reference_representation=True, fold_quantize=False)
    assert op_counts(unfolded) == {}
    assert not [n for n, _ in unfolded.named_buffers() if n.startswith("_frozen_param")]
    assert torch.equal(folded(x), unfolded(x))


def test_uncovered_op_keeps_float_math_between_exact_quantize_dequantize():
    def annotate(gm):
        for n in nodes(gm, A.sigmoid.default):
            annotate_input_qspec_map(n, n.args[0], ACT)
            annotate_output_qspec(n, ACT)

    x = torch.randn(3, 7)
    q = converted(nn.Sigmoid(), x, annotate)
    r = rewrite_to_reference_representation(copy.deepcopy(q))
    assert op_counts(r) == {} and len(nodes(r, A.sigmoid.default)) == 1
    assert torch.equal(q(x), r(x))


def test_weight_quantized_along_input_axis_is_not_rewritten_as_per_output_channel():
    torch.manual_seed(0)
    x = torch.randn(5, 16)
    q = converted(Linear(), x, lambda gm: annotate_all(gm, weight=WEIGHT_AXIS_1))
    r = rewrite_to_reference_representation(copy.deepcopy(q))
    # the linear stays a float linear on spelled-out dequantized operands
    assert dtypes_of(r, x, A.linear.default) == [torch.float32]
    torch.testing.assert_close(r(x), q(x))


# ---- standalone quantize / dequantize: bit-exact with the quantized_decomposed kernels ----


class QDQ(nn.Module):
    """quantize then dequantize with static, per-channel or tensor (dynamic) qparams."""

    def __init__(self, kind: str, dtype: torch.dtype, axis: int = 0) -> None:
        super().__init__()
        self.kind, self.dtype, self.axis = kind, dtype, axis
        self.qmin, self.qmax = (0, 255) if dtype == torch.uint8 else (-128, 127)
        self.register_buffer("scales", torch.tensor([0.02, 0.1, 0.013, 0.3]))
        self.register_buffer("zero_points", torch.tensor([0, 3, -5, 2]) + (128 if dtype == torch.uint8 else 0))
        self.register_buffer("scale", torch.tensor([0.0173]))
        self.register_buffer("zero_point", torch.tensor([7]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = (self.qmin, self.qmax, self.dtype)
        if self.kind == "per_tensor":
            q = QD.quantize_per_tensor.default(x, 0.0173, 7 + self.qmin + 128, *r)
            return QD.dequantize_per_tensor.default(q, 0.0173, 7 + self.qmin + 128, *r)
        if self.kind == "tensor":
            q = QD.quantize_per_tensor.tensor(x, self.scale, self.zero_point, *r)
            return QD.dequantize_per_tensor.tensor(q, self.scale, self.zero_point, *r)
        q = QD.quantize_per_channel.default(x, self.scales, self.zero_points, self.axis, *r)
        return QD.dequantize_per_channel.default(q, self.scales, self.zero_points, self.axis, *r)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8], ids=["uint8", "int8"])
@pytest.mark.parametrize(("kind", "axis"), [("per_tensor", 0), ("tensor", 0), ("per_channel", 0), ("per_channel", 2)],
                         ids=["per-tensor", "tensor-qparams", "per-channel-axis0", "per-channel-axis2"])
def test_quantize_dequantize_are_bit_exact(kind, axis, dtype):
    torch.manual_seed(0)
    shape = [3, 5, 4] if axis == 2 else [4, 5, 3]
    # a wide range (saturates), and values near halfway points (round half to even)
    x = torch.randn(*shape) * 4
    x.view(-1)[:60] = (torch.arange(-30, 30) + 0.5) * 0.0173
    model = QDQ(kind, dtype, axis)
    gm = torch.fx.symbolic_trace(model)
    ref = gm(x)
    r = rewrite_to_reference_representation(gm)
    assert op_counts(r) == {}
    assert torch.equal(r(x), ref)


def test_rule_table_is_well_formed():
    names = [rule.name for rule in REFERENCE_RULES]
    assert len(names) == len(set(names)), "two rules with the same pattern"
    # requantized conv before its float-output sub-pattern
    conv = [r for r in REFERENCE_RULES if r.op == A.conv2d.default]
    assert conv[0].requantized and not conv[-1].requantized
    # leftover quantize/dequantize rules last
    assert {r.op for r in REFERENCE_RULES[-6:]} == {
        QD.quantize_per_tensor.default, QD.quantize_per_tensor.tensor, QD.quantize_per_channel.default,
        QD.dequantize_per_tensor.default, QD.dequantize_per_tensor.tensor, QD.dequantize_per_channel.default,
    }


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dequantized": {"x": QD.dequantize_per_tensor.default}}, "has no argument 'x'"),
    ({"dequantized": {"input": A.relu.default}}, "is not a dequantize op"),
    ({"post_op": A.sigmoid.default, "requantized": True}, "is not a clamping post-op"),
    ({"post_op": A.relu.default}, "only folded into a re-quantized output"),
], ids=["unknown-argument", "not-a-dequantize", "not-a-clamp", "post-op-without-requantize"])
def test_rule_validates_its_pattern(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReferenceRule(op=A.linear.default, emit=lambda b: b.call({}), **kwargs)
