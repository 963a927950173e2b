"""The convolution rules of the int8 lowering (``fxquant.lowering.rules.conv``): 1-d, 2-d and
3-d convolutions (with relu / relu6, with a fused residual add) lowered from converted PT2E
graphs, each checked against the q/dq reference graph it replaces."""

from __future__ import annotations

import pytest
import torch
from pt2e_helpers import ACT, WEIGHT, A, FnQuantizer, export
from torch import nn
from torch.fx import GraphModule

from fxquant.lowering import lower_to_int8, lowering_report
from fxquant.lowering.kernels import HAS_ONEDNN, conv2d, conv2d_relu, onednn_conv, onednn_conv_relu
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

pytestmark = pytest.mark.skipif(not HAS_ONEDNN, reason="torch built without oneDNN")
QD = torch.ops.quantized_decomposed
_CONVS = (A.conv1d.default, A.conv2d.default, A.conv3d.default)
_ACTIVATIONS = (A.relu.default, A.relu6.default, A.hardtanh.default)


def annotate_convs(gm: GraphModule) -> None:
    """Input, per-channel weight and output (after a relu/relu6) of every 1/2/3-d conv."""
    for n in gm.graph.nodes:
        if n.target not in _CONVS:
            continue
        annotate_input_qspec_map(n, n.args[0], ACT)
        annotate_input_qspec_map(n, n.args[1], WEIGHT)
        users = list(n.users)
        out = users[0] if len(users) == 1 and users[0].target in _ACTIVATIONS else n
        annotate_output_qspec(out, ACT)


def converted(model: nn.Module, x: torch.Tensor) -> GraphModule:
    torch.manual_seed(0)
    gm = prepare_pt2e(export(model.eval(), x), FnQuantizer(annotate_convs))
    with torch.no_grad():
        for _ in range(3):
            gm(torch.randn_like(x))
        gm(x)
    return convert_pt2e(gm)


def output_step(gm: GraphModule) -> float:
    """The scale of the last quantize (the step of the model's int8 output)."""
    last = [n for n in gm.graph.nodes if n.target == QD.quantize_per_tensor.default][-1]
    return float(last.args[1])


class TwoConvs(nn.Module):
    """conv -> act -> conv in ``dims`` spatial dims (strided, padded, grouped)."""

    def __init__(self, dims: int, act: nn.Module) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.conv1 = conv(4, 8, 3, stride=2, padding=1)
        self.act = act
        self.conv2 = conv(8, 8, 3, padding=1, groups=4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


SHAPES = {1: (2, 4, 17), 2: (2, 4, 9, 9), 3: (2, 4, 5, 6, 7)}


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(), nn.Identity()], ids=["relu", "relu6", "none"])
@pytest.mark.parametrize("dims", [1, 2, 3], ids=["conv1d", "conv2d", "conv3d"])
def test_convolutions_of_every_rank_lower_to_int8_kernels(dims, act):
    x = torch.randn(SHAPES[dims]) * 2
    q = converted(TwoConvs(dims, act), x)
    low = lower_to_int8(q)
    low.graph.lint()
    targets = [n.target for n in low.graph.nodes if n.op == "call_function"]
    assert not set(targets) & set(_CONVS), "every convolution runs as an int8 kernel"
    if dims == 2:
        assert targets.count(conv2d) + targets.count(conv2d_relu) == 2
        assert dict(lowering_report(low).applied)["conv2d"] == 2
    else:
        assert targets.count(onednn_conv) + targets.count(onednn_conv_relu) == 2
        assert dict(lowering_report(low).applied)["conv1d_3d"] == 2
    relu_fused = not isinstance(act, nn.Identity) and dims != 3  # 3-d: by saturation, no post-op
    assert (onednn_conv_relu in targets or conv2d_relu in targets) == relu_fused
    with torch.no_grad():
        ref, out = q(x), low(x)
    # bit-exact int8 values (the float output is the dequantized last int8 value)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_conv1d_lowered_output_is_channels_last_and_matches_the_quantized_reference():
    # the int8 output before its dequantize, compared integer by integer
    x = torch.randn(3, 4, 20)
    q = converted(TwoConvs(1, nn.ReLU()), x)
    low = lower_to_int8(q)
    kernel = next(n for n in low.graph.nodes if n.target in (onednn_conv, onednn_conv_relu))
    values = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            values[n] = super().run_node(n)
            return values[n]

    with torch.no_grad():
        Recorder(low).run(x)
    out = values[kernel]
    assert out.dtype == torch.quint8 and out.shape == (3, 8, 10)
    assert torch.equal(out.dequantize(), out.dequantize().relu())  # the relu was fused


class ConvAdd3d(nn.Module):
    """A residual add after a 3-d conv stays a float add of two int8 values (no fused kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv3d(3, 4, 1), nn.Conv3d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        return self.conv(y) + y


def test_conv3d_with_a_residual_is_lowered_and_close_to_the_reference():
    x = torch.randn(1, 3, 4, 5, 6)
    q = converted(ConvAdd3d(), x)
    low = lower_to_int8(q)
    assert A.conv3d.default not in [n.target for n in low.graph.nodes]
    with torch.no_grad():
        ref, out = q(x), low(x)
    # the add runs on the int8 values as the reference's dequantize -> add -> quantize
    torch.testing.assert_close(out, ref, rtol=0, atol=output_step(q) * 1.001)


def test_asymmetric_weights_stay_in_float_for_onednn():
    # oneDNN needs zero-point-0 weights: such a conv keeps its q/dq reference form
    asym = WEIGHT.__class__(dtype=torch.int8, quant_min=-128, quant_max=127,
                            qscheme=torch.per_channel_affine, ch_axis=0,
                            observer_or_fake_quant_ctr=WEIGHT.observer_or_fake_quant_ctr)

    def annotate(gm: GraphModule) -> None:
        for n in gm.graph.nodes:
            if n.target == A.conv1d.default:
                annotate_input_qspec_map(n, n.args[0], ACT)
                annotate_input_qspec_map(n, n.args[1], asym)
                annotate_output_qspec(n, ACT)

    x = torch.randn(2, 4, 11) + 1
    gm = prepare_pt2e(export(nn.Sequential(nn.Conv1d(4, 4, 3)).eval(), x), FnQuantizer(annotate))
    with torch.no_grad():
        gm(x)
    q = convert_pt2e(gm)
    low = lower_to_int8(q)
    assert A.conv1d.default in [n.target for n in low.graph.nodes]
    with torch.no_grad():
        torch.testing.assert_close(low(x), q(x), rtol=0, atol=1e-5)


class PadThenConv(nn.Module):
    """EfficientNet-Lite style: conv -> relu6 -> asymmetric zero pad -> strided conv -> relu6."""

    def __init__(self, pad: list[int], kernel: int, depthwise: bool) -> None:
        super().__init__()
        self.pad = pad
        self.expand = nn.Conv2d(3, 16, 1)
        self.conv = nn.Conv2d(16, 16, kernel, stride=2, groups=16 if depthwise else 1)
        self.project = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self.expand(x))
        return self.project(nn.functional.relu6(self.conv(nn.functional.pad(y, self.pad))))


class PaddedStem(nn.Module):
    """TF-style padded image stem: pad(image) -> strided conv -> relu6 -> 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.project = nn.Conv2d(3, 8, 3, stride=2), nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(nn.functional.relu6(self.stem(nn.functional.pad(x, [0, 1, 0, 1]))))


def _x86_converted(model: nn.Module, x: torch.Tensor) -> GraphModule:
    from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    torch.manual_seed(0)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    gm = prepare_pt2e(export(model.eval(), x), quantizer)
    with torch.no_grad():
        for _ in range(3):
            gm(torch.randn_like(x))
    return convert_pt2e(gm)


@pytest.mark.parametrize(
    ("pad", "kernel", "depthwise", "absorbed"),
    [([0, 1, 0, 1], 3, True, True), ([1, 2, 1, 2], 5, True, True), ([2, 1, 0, 1], 3, True, True),
     ([0, 1, 0, 1], 3, False, False)],
    ids=["tf_k3_depthwise", "tf_k5_depthwise", "wider_left_depthwise", "tf_k3_dense_keeps_pad"],
)
def test_zero_pad_before_a_depthwise_conv_becomes_its_padding_bit_exact(pad, kernel, depthwise, absorbed, monkeypatch):
    from fxquant.lowering.kernels import zero_pad
    from fxquant.lowering.rules import conv as conv_rules

    x = torch.randn(1, 3, 13, 13) * 2
    q = _x86_converted(PadThenConv(pad, kernel, depthwise), x)
    low = lower_to_int8(q)
    targets = [n.target for n in low.graph.nodes if n.op == "call_function"]
    assert targets.count(zero_pad) == (0 if absorbed else 1)
    assert targets.count(conv2d_relu) == 2 and A.pad.default not in targets
    monkeypatch.setattr(conv_rules, "_absorb_zero_pad", lambda m: None)
    padded = lower_to_int8(q)
    assert [n.target for n in padded.graph.nodes].count(zero_pad) == 1
    for scale in (1.0, 3.0):
        with torch.no_grad():
            assert torch.equal(low(x * scale), padded(x * scale))  # the same integers, bit for bit


def test_zero_pad_of_the_image_before_the_stem_conv_becomes_its_padding_bit_exact(monkeypatch):
    from fxquant.lowering.kernels import zero_pad
    from fxquant.lowering.rules import conv as conv_rules

    x = torch.randn(1, 3, 16, 16)
    q = _x86_converted(PaddedStem(), x)
    low = lower_to_int8(q)
    assert zero_pad not in [n.target for n in low.graph.nodes]
    monkeypatch.setattr(conv_rules, "_absorb_zero_pad", lambda m: None)
    padded = lower_to_int8(q)
    assert zero_pad in [n.target for n in padded.graph.nodes]
    with torch.no_grad():
        assert torch.equal(low(x), padded(x))
