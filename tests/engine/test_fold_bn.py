"""fold_bn (PTQ): batch norm folded into conv / conv_transpose / linear weights.

The fold computes torch.nn.utils.fusion.fuse_conv_bn_weights bit for bit where that function
is right, and lays the scale out correctly for grouped transposed convs (where torch's
fails or broadcasts to a wrong shape); checked against a hand-written element loop and the
float model.
"""

from __future__ import annotations

import pytest
import torch
from pt2e_helpers import A, FnQuantizer, nodes
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights as torch_fuse_conv_bn_weights

from fxquant.engine.fold_bn import (
    conv_weight_scale,
    fold_bn_into_conv_and_linear,
    fuse_conv_bn_weights,
)
from fxquant.observers import MinMaxObserver, PerChannelMinMaxObserver
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

TRANSPOSED = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _bn(dims: int, channels: int, eps: float = 1e-5) -> nn.Module:
    bn = BN[dims](channels, eps=eps)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return bn.eval()


def _bn_args(bn: nn.Module) -> tuple:
    return bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias


@pytest.mark.parametrize(
    ("transposed", "groups"), [(False, 1), (False, 2), (True, 1)], ids=["conv", "conv-g2", "convT"]
)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_fuse_is_bit_equal_to_torch_where_torch_is_right(transposed, groups, bias):
    conv = (TRANSPOSED if transposed else CONV)[2](4, 6, 3, groups=groups, bias=bias)
    bn = _bn(2, 6, eps=1e-3)
    b = conv.bias.detach() if bias else None
    ours = fuse_conv_bn_weights(conv.weight.detach(), b, *_bn_args(bn), transposed=transposed, groups=groups)
    theirs = torch_fuse_conv_bn_weights(conv.weight.detach(), b, *_bn_args(bn), transpose=transposed)
    assert torch.equal(ours[0], theirs[0].detach()) and torch.equal(ours[1], theirs[1].detach())


def test_grouped_transposed_scale_layout_matches_an_element_loop():
    c_in, c_out, groups = 6, 4, 2
    weight = torch.randn(c_in, c_out // groups, 3, 3)
    s = torch.arange(1.0, c_out + 1)
    got = weight * conv_weight_scale(s, weight.shape, transposed=True, groups=groups)
    expected = torch.empty_like(weight)
    for i in range(c_in):  # input channel i belongs to group i // (c_in / groups)
        for j in range(c_out // groups):
            expected[i, j] = weight[i, j] * s[(i // (c_in // groups)) * (c_out // groups) + j]
    assert torch.equal(got, expected)


def test_scale_layout_rejects_a_mismatched_weight():
    with pytest.raises(ValueError, match="does not match 5 output-channel scales"):
        conv_weight_scale(torch.ones(5), (6, 2, 3, 3), transposed=True, groups=2)


@pytest.mark.parametrize(
    ("dims", "groups", "c_out"),
    [(1, 1, 6), (2, 1, 6), (2, 2, 6), (2, 3, 3), (2, 2, 4), (3, 2, 6)],
    ids=["convT1d", "convT2d", "convT2d-g2", "convT2d-g3-one-per-group", "convT2d-g2-c4", "convT3d-g2"],
)
def test_fold_into_conv_transpose_matches_the_float_model(dims, groups, c_out):
    model = nn.Sequential(
        TRANSPOSED[dims](6, c_out, 3, stride=2, padding=1, output_padding=1, groups=groups),
        _bn(dims, c_out),
    ).eval()
    x = torch.randn(2, 6, *([4] * dims))
    gm = torch.export.export(model, (x,)).module()
    fold_bn_into_conv_and_linear(gm)
    gm.graph.lint()
    assert not nodes(gm, A.batch_norm.default)
    torch.testing.assert_close(gm(x), model(x), atol=2e-5, rtol=1e-5)


def test_ptq_flow_quantizes_a_grouped_conv_transpose_with_batch_norm():
    act = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255,
                           qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=MinMaxObserver)
    weight = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127, ch_axis=1,
                              qscheme=torch.per_channel_symmetric,
                              observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(ch_axis=1))

    def annotate(gm):
        for n in nodes(gm, A.conv_transpose2d.input):
            annotate_input_qspec_map(n, n.args[0], act)
            annotate_input_qspec_map(n, n.args[1], weight)
            annotate_output_qspec(n, act)

    model = nn.Sequential(nn.ConvTranspose2d(6, 4, 3, stride=2, groups=2), _bn(2, 4)).eval()
    x = torch.randn(4, 6, 5, 5)
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), FnQuantizer(annotate))
    prepared(x)
    q = convert_pt2e(prepared)
    assert not nodes(q, A.batch_norm.default)
    with torch.no_grad():
        ref = model(x)
    step = float((ref.max() - ref.min()) / 255)
    assert (q(x) - ref).abs().max() <= 3 * step  # input, weight and output rounding
