"""lower_pt2e_quantized_to_x86: q/dq patterns become oneDNN int8 kernels with the q/dq
model's results."""

from __future__ import annotations

import copy

import pytest
import torch
from pt2e_helpers import ACT, QD, WEIGHT, A, FnQuantizer, annotate_conv_linear, export, nodes
from torch import nn
from torch.fx import GraphModule

from fxquant import MinMaxObserver, PlaceholderObserver
from fxquant.pt2e.lowering import UnsupportedX86LoweringError, lower_pt2e_quantized_to_x86
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

ONEDNN = torch.ops.onednn


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(nn.functional.max_pool2d(y, 2).mean((2, 3)))


def converted(model: nn.Module, x: torch.Tensor, annotate=annotate_conv_linear) -> GraphModule:
    gm = prepare_pt2e(export(model, x), FnQuantizer(annotate))
    for _ in range(3):
        gm(torch.randn_like(x))
    return convert_pt2e(gm)


def output_scale(gm: GraphModule) -> float:
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0][0]
    return float(out.args[1])


def test_conv_and_linear_become_onednn_int8_kernels():
    x = torch.randn(2, 3, 16, 16)
    q = converted(ConvNet(), x)
    lowered = lower_pt2e_quantized_to_x86(q, (x,))
    lowered.graph.lint()
    convs = nodes(lowered, ONEDNN.qconv_pointwise.default)
    assert len(convs) == 2 and len(nodes(lowered, ONEDNN.qlinear_pointwise.default)) == 1
    # the relu is fused into the first convolution, the weights are pre-packed
    assert [c.args[-3] for c in convs].count("relu") == 1
    assert not nodes(lowered, A.convolution.default) and not nodes(lowered, A.addmm.default)
    assert not nodes(lowered, QD.dequantize_per_channel.default)
    with torch.no_grad():
        ref, out = q(x), lowered(x)
    # same integer kernels semantics: at most one output step apart (here: identical)
    assert (ref - out).abs().max() <= output_scale(q) * 1.0001


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        return torch.relu(self.conv(y) + y)


def test_x86_quantizer_residual_becomes_a_fused_conv_add_relu_kernel():
    from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    x = torch.randn(2, 3, 10, 10)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    gm = prepare_pt2e(export(Residual(), x), quantizer)
    gm(x)
    q = convert_pt2e(gm)
    lowered = lower_pt2e_quantized_to_x86(q, (x,))
    (binary,) = nodes(lowered, ONEDNN.qconv2d_pointwise.binary)
    assert "sum" in binary.args and "relu" in binary.args  # conv + add + relu in one kernel
    assert len(nodes(lowered, ONEDNN.qconv_pointwise.default)) == 1
    assert not nodes(lowered, A.add.Tensor) and not nodes(lowered, A.relu.default)
    with torch.no_grad():
        # the fused kernel's output stays float (the quantizer leaves the model output so)
        torch.testing.assert_close(lowered(x), q(x), rtol=1e-5, atol=1e-5)


def test_relu6_is_fused_into_the_int8_convolution():
    def annotate(gm):
        conv = nodes(gm, A.conv2d.default)[0]
        annotate_input_qspec_map(conv, conv.args[0], ACT)
        annotate_input_qspec_map(conv, conv.args[1], WEIGHT)
        annotate_output_qspec(nodes(gm, A.hardtanh.default)[0], ACT)

    x = torch.randn(2, 3, 12, 12)
    q = converted(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6()), x, annotate)
    lowered = lower_pt2e_quantized_to_x86(q, (x,))
    (conv,) = nodes(lowered, ONEDNN.qconv_pointwise.default)
    assert conv.args[-3] == "hardtanh" and conv.args[-2] == [0.0, 6.0]
    assert not nodes(lowered, A.hardtanh.default) and not nodes(lowered, A.clamp_min.default)
    with torch.no_grad():
        assert (lowered(x) - q(x)).abs().max() <= output_scale(q) * 1.0001


def test_the_converted_model_is_left_untouched():
    x = torch.randn(2, 3, 16, 16)
    q = converted(ConvNet(), x)
    code, before = q.code, q(x)
    lower_pt2e_quantized_to_x86(q, (x,))
    assert q.code == code
    assert torch.equal(q(x), before)


def test_dynamic_linear_lowers_to_the_tensor_qparams_kernel():
    dynamic = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
                               is_dynamic=True, observer_or_fake_quant_ctr=PlaceholderObserver)

    def annotate(gm):
        for lin in nodes(gm, A.linear.default):
            annotate_input_qspec_map(lin, lin.args[0], dynamic)
            annotate_input_qspec_map(lin, lin.args[1], WEIGHT)

    x = torch.randn(4, 16)
    q = converted(nn.Linear(16, 8), x, annotate)
    lowered = lower_pt2e_quantized_to_x86(q, (x,))
    assert len(nodes(lowered, ONEDNN.qlinear_pointwise.tensor)) == 1
    assert len(nodes(lowered, QD.choose_qparams.tensor)) == 1  # qparams still chosen per batch
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), q(x), rtol=1e-5, atol=1e-5)


def test_int8_activations_into_a_convolution_are_refused_with_advice():
    act_int8 = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                                qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=MinMaxObserver)
    x = torch.randn(2, 3, 8, 8)
    q = converted(nn.Conv2d(3, 4, 3), x, lambda gm: annotate_conv_linear(gm, act=act_int8))
    with pytest.raises(UnsupportedX86LoweringError, match=r"conv2d.*torch.int8 activations.*X86InductorQuantizer"):
        lower_pt2e_quantized_to_x86(q, (x,))


def test_int8_activations_into_a_linear_are_fine():
    act_int8 = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                                qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=MinMaxObserver)
    x = torch.randn(4, 16)
    q = converted(nn.Linear(16, 8), x, lambda gm: annotate_conv_linear(gm, act=act_int8))
    lowered = lower_pt2e_quantized_to_x86(q, (x,))
    assert len(nodes(lowered, ONEDNN.qlinear_pointwise.default)) == 1
    with torch.no_grad():
        assert (lowered(x) - q(x)).abs().max() <= output_scale(q) * 1.0001


def test_eager_module_is_refused():
    with pytest.raises(TypeError, match="GraphModule returned by convert_pt2e"):
        lower_pt2e_quantized_to_x86(nn.Linear(2, 2), (torch.randn(1, 2),))


def test_unquantized_model_lowers_to_float_ops():
    # nothing to lower is not an error: the result computes the same as the input
    x = torch.randn(2, 3, 8, 8)
    q = converted(ConvNet(), x, lambda gm: None)
    lowered = lower_pt2e_quantized_to_x86(copy.deepcopy(q), (x,))
    assert not nodes(lowered, ONEDNN.qconv_pointwise.default)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), q(x))
