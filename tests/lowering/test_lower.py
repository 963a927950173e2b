"""lower_to_int8: q/dq patterns of converted PT2E graphs become torch's quantized CPU kernels,
with the reference graph's numbers (bit-exact for the kernel rules, within one step else)."""

from __future__ import annotations

import copy

import pytest
import torch
from pt2e_helpers import ACT, WEIGHT, A, FnQuantizer, annotate_conv_linear, export
from torch import nn
from torch.fx import GraphModule

from fxquant import MinMaxObserver
from fxquant.lowering import LoweringReport, lower_to_int8, lowering_report
from fxquant.lowering.kernels import (
    conv2d_add,
    conv2d_add_relu,
    conv2d_relu,
    linear_dynamic,
    linear_relu,
    zero_pad,
)
from fxquant.lowering.rules.linear import HAS_ONEDNN_LINEAR, onednn_linear
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec, Quantizer
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

Q = torch.ops.quantized
# a static linear whose output is read in float: oneDNN's int8 GEMM where torch has it
FLOAT_OUT_LINEAR = (
    onednn_linear if HAS_ONEDNN_LINEAR else Q.linear_with_input_q_dq_qweight_dq_output_fp32.default
)
QD = torch.ops.quantized_decomposed


def x86(is_dynamic: bool = False) -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic)
    )


def converted(model: nn.Module, x: torch.Tensor, quantizer: Quantizer | None = None) -> GraphModule:
    """``model`` exported at ``x``'s shape, calibrated on 4 random batches, converted."""
    torch.manual_seed(0)
    gm = prepare_pt2e(export(model, x), quantizer or x86())
    with torch.no_grad():
        for _ in range(4):
            gm(torch.randn_like(x))
        gm(x)
    return convert_pt2e(gm)


def max_step(gm: GraphModule) -> float:
    """The largest activation step (scale) of the converted graph."""
    return max(float(n.args[1]) for n in gm.graph.nodes
               if n.target == QD.quantize_per_tensor.default and isinstance(n.args[1], float))


def call_targets(gm: GraphModule) -> list[object]:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


class ConvAct(nn.Module):
    """conv -> act -> conv (the second conv's output ends the int8 region)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv1, self.act, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), act, nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class Residual(nn.Module):
    """stem -> conv + skip (+ relu) -> head conv (so that the sum is quantized)."""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        z = self.conv(y) + y
        return self.head(torch.relu(z) if self.relu else z)


class TwoBranch(nn.Module):
    """Two conv branches joined by add, and by cat (int8 add and cat)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.relu(self.a(x)), torch.relu(self.b(x))
        return self.head(torch.cat([a + b, b], dim=1))


class TFPadNet(nn.Module):
    """EfficientNet-style: conv -> relu6 -> asymmetric zero pad -> depthwise strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 16, 1)
        self.depthwise = nn.Conv2d(16, 16, 3, stride=2, groups=16)
        self.project = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self.expand(x))
        y = nn.functional.relu6(self.depthwise(nn.functional.pad(y, [0, 1, 0, 1])))
        return self.project(y)


class Head(nn.Module):
    """conv -> max pool -> avg pool -> flatten -> linear (float output)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def assert_same_int8(ref: torch.Tensor, out: torch.Tensor) -> None:
    """Same int8 values up to the float head: float ops after the last int8 value may round
    differently in the last bit, one step of an int8 input would move them by >= 1e-3."""
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


FLOAT_COMPUTE = {A.conv2d.default, A.linear.default, A.add.Tensor, A.cat.default,
                 A.relu.default, A.relu6.default, A.hardtanh.default, A.pad.default,
                 A.max_pool2d.default, A.adaptive_avg_pool2d.default}


def lowered_and_outputs(model: nn.Module, x: torch.Tensor, quantizer=None):
    q = converted(model.eval(), x, quantizer)
    low = lower_to_int8(q)
    low.graph.lint()
    with torch.no_grad():
        return q, low, q(x), low(x)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(0.0, 6.0)], ids=["relu", "relu6", "hardtanh06"])
def test_conv_with_relu_or_relu6_becomes_one_relu_fused_kernel_bit_exact(act):
    x = torch.randn(2, 3, 12, 12)
    _q, low, ref, out = lowered_and_outputs(ConvAct(act), x)
    targets = call_targets(low)
    assert targets.count(conv2d_relu) == 1
    assert not {A.relu.default, A.relu6.default, A.hardtanh.default} & set(targets)
    # conv2 has a float output (model output): it stays float with its weight folded
    assert targets.count(A.conv2d.default) == 1 and QD.dequantize_per_channel.default not in targets
    assert_same_int8(ref, out)


def test_relu6_with_an_output_range_above_6_is_not_fused():
    # the output observer is given the range [0, 8]: q(6) < qmax, the clamp at 6 matters
    fixed = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
                             observer_or_fake_quant_ctr=MinMaxObserver)

    def annotate(gm):
        conv = next(n for n in gm.graph.nodes if n.target == A.conv2d.default)
        annotate_input_qspec_map(conv, conv.args[0], ACT)
        annotate_input_qspec_map(conv, conv.args[1], WEIGHT)
        annotate_output_qspec(next(n for n in gm.graph.nodes if n.target == A.hardtanh.default), fixed)

    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return nn.functional.hardtanh(self.conv(x), 0.0, 6.0) + 0.0 * x.sum()

    x = torch.randn(2, 3, 4, 4) * 20
    q = converted(Wide().eval(), x, FnQuantizer(annotate))
    # widen the observed range to [0, 8] by hand: the calibration saw <= 6
    for n in q.graph.nodes:
        if n.target == QD.quantize_per_tensor.default and n.args[2] == 0:
            n.args = (n.args[0], 8.0 / 255, *n.args[2:])
        if n.target == QD.dequantize_per_tensor.default and n.args[2] == 0:
            n.args = (n.args[0], 8.0 / 255, *n.args[2:])
    q.recompile()
    low = lower_to_int8(q)
    assert conv2d_relu not in call_targets(low) and A.hardtanh.default in call_targets(low)
    with torch.no_grad():
        assert_same_int8(q(x), low(x))


@pytest.mark.parametrize("relu", [False, True], ids=["add", "add_relu"])
def test_conv_plus_residual_becomes_the_fused_conv_add_kernel_bit_exact(relu):
    x = torch.randn(2, 3, 10, 10)
    _q, low, ref, out = lowered_and_outputs(Residual(relu), x)
    targets = call_targets(low)
    assert targets.count(conv2d_add_relu if relu else conv2d_add) == 1
    assert A.add.Tensor not in targets
    assert_same_int8(ref, out)


def test_tf_style_zero_pad_moves_into_the_int8_region():
    x = torch.randn(2, 3, 9, 9)
    _q, low, ref, out = lowered_and_outputs(TFPadNet(), x)
    targets = call_targets(low)
    # the pad is absorbed into the depthwise conv (its padding plus a zero row and column)
    assert targets.count(zero_pad) == 0 and targets.count(conv2d_relu) == 2
    assert A.pad.default not in targets
    assert_same_int8(ref, out)


def annotate_branches(gm: GraphModule) -> None:
    """convs as usual, plus the outputs of add and cat (their inputs are conv outputs)."""
    annotate_conv_linear(gm)
    for n in gm.graph.nodes:
        if n.target in (A.add.Tensor, A.cat.default):
            annotate_output_qspec(n, ACT)


def test_int8_add_and_cat_within_one_step():
    x = torch.randn(2, 3, 8, 8)
    model = TwoBranch().eval()
    q, low, ref, out = lowered_and_outputs(model, x, FnQuantizer(annotate_branches))
    targets = call_targets(low)
    assert Q.add.default in targets and Q.cat.default in targets
    assert A.add.Tensor not in targets and A.cat.default not in targets
    # one step of the cat output moves the float head conv by at most |W| summed over inputs
    (cat_q,) = [n for n in q.graph.nodes if n.target == QD.quantize_per_tensor.default
                and n.args[0].target == A.cat.default]
    bound = float(cat_q.args[1]) * float(model.head.weight.abs().sum((1, 2, 3)).max())
    assert 0 < (ref - out).abs().max() <= bound * 1.0001 or torch.equal(ref, out)


def test_pooling_flatten_and_float_output_linear():
    x = torch.randn(2, 3, 8, 8)
    q, low, ref, out = lowered_and_outputs(Head(), x)
    targets = call_targets(low)
    assert FLOAT_OUT_LINEAR in targets
    # conv, pools and flatten run on quint8 tensors; the linear reads them in int8 (oneDNN takes
    # the raw integers; torch's fallback kernel, one dequantize)
    assert targets.count(A.dequantize.self) == (0 if HAS_ONEDNN_LINEAR else 1)
    assert A.conv2d.default not in targets and A.relu.default not in targets
    torch.testing.assert_close(out, ref, rtol=0, atol=max_step(q))


def test_static_linears_chain_in_int8_with_fused_relu():
    x = torch.randn(8, 16)
    _q, low, ref, out = lowered_and_outputs(MLP(), x)
    targets = call_targets(low)
    assert targets.count(linear_relu) == 2
    assert targets.count(FLOAT_OUT_LINEAR) == 1
    assert not FLOAT_COMPUTE & set(targets)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_dynamic_linears_become_the_dynamic_kernel():
    x = torch.randn(8, 16)
    _q, low, ref, out = lowered_and_outputs(MLP(), x, x86(is_dynamic=True))
    targets = call_targets(low)
    assert targets.count(linear_dynamic) == 3
    assert QD.choose_qparams.tensor not in targets and A.linear.default not in targets
    # the kernel chooses its own (equivalent) per-batch parameters
    torch.testing.assert_close(out, ref, rtol=0.02, atol=0.02)


def test_hardswish_between_int8_convs_runs_the_int8_kernel():
    def annotate(gm):
        annotate_conv_linear(gm)
        annotate_output_qspec(next(n for n in gm.graph.nodes if n.target == A.hardswish.default), ACT)

    x = torch.randn(2, 3, 8, 8)
    model = ConvAct(nn.Hardswish()).eval()
    q, low, ref, out = lowered_and_outputs(model, x, FnQuantizer(annotate))
    targets = call_targets(low)
    assert Q.hardswish.default in targets and A.hardswish.default not in targets
    # one step of the hardswish output moves the float 1x1 conv2 by at most sum |W|
    bound = max_step(q) * float(model.conv2.weight.abs().sum((1, 2, 3)).max())
    assert (ref - out).abs().max() <= bound * 1.0001


def test_requantize_of_the_same_parameters_is_dropped():
    x = torch.randn(2, 3, 8, 8)
    _q, low, _ref, _out = lowered_and_outputs(Head(), x)
    report = lowering_report(low)
    assert dict(report.applied)["requantize"] >= 1
    assert call_targets(low).count(A.quantize_per_tensor.default) == 1  # the input only


def test_ops_left_in_float_keep_reference_numbers():
    # only the first conv is annotated: everything after it stays float
    def annotate(gm):
        conv = next(n for n in gm.graph.nodes if n.target == A.conv2d.default)
        annotate_conv_linear(gm) if False else None
        annotate_input_qspec_map(conv, conv.args[0], ACT)
        annotate_input_qspec_map(conv, conv.args[1], WEIGHT)
        annotate_output_qspec(next(iter(conv.users)), ACT)

    x = torch.randn(2, 3, 10, 10)
    _q, low, ref, out = lowered_and_outputs(Residual(True), x, FnQuantizer(annotate))
    targets = call_targets(low)
    assert targets.count(conv2d_relu) == 1 and targets.count(A.conv2d.default) == 2
    assert A.dequantize.self in targets
    report = lowering_report(low)
    assert dict(report.float_ops_after_int8) == {"aten.conv2d.default": 1, "aten.add.Tensor": 1}
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_int8_activations_stay_in_reference_form():
    # x86 kernels read uint8 activations: a qint8 activation conv is left as q/dq + float
    act_int8 = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                                qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=MinMaxObserver)
    x = torch.randn(2, 3, 8, 8)
    _q, low, ref, out = lowered_and_outputs(
        ConvAct(nn.ReLU()), x, FnQuantizer(lambda gm: annotate_conv_linear(gm, act=act_int8))
    )
    assert conv2d_relu not in call_targets(low) and A.conv2d.default in call_targets(low)
    assert_same_int8(ref, out)


def test_input_is_not_modified_unless_inplace():
    x = torch.randn(2, 3, 12, 12)
    q = converted(ConvAct(nn.ReLU()).eval(), x)
    code = q.code
    lower_to_int8(q)
    assert q.code == code
    same = lower_to_int8(q, inplace=True)
    assert same is q and q.code != code


def test_report_lists_rules_and_float_boundaries():
    x = torch.randn(2, 3, 12, 12)
    low = lower_to_int8(converted(ConvAct(nn.ReLU()).eval(), x))
    report = lowering_report(low)
    assert isinstance(report, LoweringReport) and report.int8_kernels == 1
    assert dict(report.applied)["conv2d"] == 1
    text = str(report)
    assert "conv2d" in text and "aten.conv2d.default" in text


def test_bad_inputs_are_refused_with_advice():
    with pytest.raises(TypeError, match="GraphModule returned by convert_pt2e"):
        lower_to_int8(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not produced by lower_to_int8"):
        lowering_report(copy.deepcopy(converted(MLP().eval(), torch.randn(4, 16))))


def test_save_the_converted_model_and_lower_after_load(tmp_path):
    # packed weights do not serialize through torch.export: the file holds the q/dq model
    import fxquant

    x = torch.randn(2, 3, 10, 10)
    q = converted(Residual(True).eval(), x)
    fxquant.save(q, tmp_path / "model.fxq", example_inputs=(x,))
    loaded = lower_to_int8(fxquant.load(tmp_path / "model.fxq"))
    assert dict(lowering_report(loaded).applied)["conv2d_add"] == 1
    with torch.no_grad():
        assert torch.equal(loaded(x), lower_to_int8(q)(x))


def test_saving_a_lowered_model_says_to_save_the_converted_one(tmp_path):
    import fxquant

    x = torch.randn(2, 3, 10, 10)
    lowered = lower_to_int8(converted(Residual(True).eval(), x))
    with pytest.raises(fxquant.FxquantFileError, match="save the converted model"):
        fxquant.save(lowered, tmp_path / "model.fxq", example_inputs=(x,))
    assert not (tmp_path / "model.fxq").exists()


class _Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(4, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)

    def forward(self, x):
        return self.dw(torch.relu(self.expand(x)))


def test_a_deep_copy_of_a_lowered_model_keeps_its_packed_weights():
    # torch's packed weights deep-copy by re-packing for the engine selected at copy time; a
    # copy made under x86 (fbgemm) must still run oneDNN's kernels and give the same integers
    torch.manual_seed(0)
    x = torch.randn(2, 4, 10, 10)
    _q, low, _ref, out = lowered_and_outputs(_Depthwise(), x)
    packed = {k: v for k, v in vars(low).items() if isinstance(v, torch.ScriptObject)}
    assert packed
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        twin = copy.deepcopy(low)
    finally:
        torch.backends.quantized.engine = previous
    assert all(getattr(twin, k) is v for k, v in packed.items())
    assert torch.equal(twin(x), out)
    assert torch.equal(copy.deepcopy(twin)(x), out)  # and a copy of the copy
