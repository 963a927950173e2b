"""The kernels lowered graphs call: oneDNN packing, fused conv+add, oneDNN convolutions of
every rank on the integers, zero-copy int views, integer zero padding."""

from __future__ import annotations

import pytest
import torch

from fxquant.lowering.kernels import (
    HAS_ONEDNN,
    conv2d,
    conv2d_add,
    conv2d_add_relu,
    conv2d_relu,
    int_view,
    linear,
    linear_dynamic,
    linear_relu,
    onednn_conv,
    onednn_conv_relu,
    onednn_engine,
    pack_conv2d,
    pack_onednn_conv,
    quantized_view,
    zero_pad,
)

pytestmark = pytest.mark.skipif(not HAS_ONEDNN, reason="torch built without the oneDNN quantized engine")


def qtensor(shape, scale, zero_point, channels_last=False):
    q = torch.quantize_per_tensor(torch.randn(shape) * 2, scale, zero_point, torch.quint8)
    return q.contiguous(memory_format=torch.channels_last) if channels_last else q


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("pad", [[0, 1, 0, 1], [1, 2, 1, 2], [2, 0, 0, 3]], ids=["tf_s2", "tf_k5", "odd"])
def test_zero_pad_equals_padding_the_real_values(pad, channels_last):
    x = qtensor((2, 4, 5, 6), 0.1, 37, channels_last)
    out = zero_pad(x, pad)
    expected = torch.quantize_per_tensor(
        torch.nn.functional.pad(x.dequantize(), pad), 0.1, 37, torch.quint8
    )
    assert torch.equal(out.int_repr(), expected.int_repr())
    assert (out.q_scale(), out.q_zero_point()) == (0.1, 37)
    assert out.is_contiguous(memory_format=torch.channels_last)  # what int8 convs read


@pytest.mark.parametrize("relu", [False, True], ids=["add", "add_relu"])
def test_fused_conv_add_is_exact_and_restores_the_engine(relu):
    x, y = qtensor((1, 8, 6, 6), 0.05, 128), qtensor((1, 8, 6, 6), 0.1, 120)
    weight = torch.quantize_per_channel(torch.randn(8, 8, 3, 3), torch.rand(8).double() * 0.01 + 0.005,
                                        torch.zeros(8, dtype=torch.long), 0, torch.qint8)
    bias = torch.randn(8)
    engine = torch.backends.quantized.engine
    packed = pack_conv2d(weight, bias, [1, 1], [1, 1], [1, 1], 1)
    out = (conv2d_add_relu if relu else conv2d_add)(x, y, packed, 0.3, 100)
    assert torch.backends.quantized.engine == engine
    total = torch.nn.functional.conv2d(x.dequantize(), weight.dequantize(), bias, 1, 1) + y.dequantize()
    expected = torch.quantize_per_tensor(total.relu() if relu else total, 0.3, 100, torch.quint8)
    assert torch.equal(out.int_repr(), expected.int_repr())


def _conv_case(groups: int = 1):
    x = qtensor((1, 8, 7, 7), 0.05, 128, channels_last=True)
    weight = torch.quantize_per_channel(torch.randn(8, 8 // groups, 3, 3), torch.rand(8).double() * 0.01 + 0.005,
                                        torch.zeros(8, dtype=torch.long), 0, torch.qint8)
    return x, pack_conv2d(weight, torch.randn(8), [1, 1], [1, 1], [1, 1], groups)


@pytest.mark.parametrize("groups", [1, 8], ids=["dense", "depthwise"])
@pytest.mark.parametrize("relu", [False, True], ids=["conv", "conv_relu"])
def test_conv_wrappers_equal_the_bare_ops(relu, groups):
    x, packed = _conv_case(groups)
    op = torch.ops.quantized.conv2d_relu.new if relu else torch.ops.quantized.conv2d.new
    out = (conv2d_relu if relu else conv2d)(x, packed, 0.07, 3)
    expected = op(x, packed, 0.07, 3)
    assert torch.equal(out.int_repr(), expected.int_repr())
    assert (out.q_scale(), out.q_zero_point()) == (0.07, 3)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_conv_wrappers_leave_torch_function_enabled():
    # the packed weight's __torch_function__ probe is skipped for the call only
    x, packed = _conv_case()
    for wrapper in (conv2d, conv2d_relu):
        wrapper(x, packed, 0.07, 3)
        assert torch._C._is_torch_function_enabled()
    for wrapper in (conv2d_add, conv2d_add_relu):
        wrapper(x, x.clone(), packed, 0.07, 3)
        assert torch._C._is_torch_function_enabled()


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "linear_relu"])
def test_linear_wrappers_equal_the_bare_ops_and_leave_torch_function_enabled(relu):
    x = qtensor((5, 16), 0.05, 128)
    weight = torch.quantize_per_channel(torch.randn(8, 16), torch.rand(8).double() * 0.01 + 0.005,
                                        torch.zeros(8, dtype=torch.long), 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(weight, torch.randn(8))
    op = torch.ops.quantized.linear_relu.default if relu else torch.ops.quantized.linear.default
    out = (linear_relu if relu else linear)(x, packed, 0.07, 3)
    assert torch.equal(out.int_repr(), op(x, packed, 0.07, 3).int_repr())
    assert (out.q_scale(), out.q_zero_point()) == (0.07, 3)
    assert torch._C._is_torch_function_enabled()


@pytest.mark.parametrize("reduce_range", [False, True], ids=["full_range", "reduce_range"])
def test_dynamic_linear_wrapper_equals_the_bare_op(reduce_range):
    x = torch.randn(6, 16)
    weight = torch.quantize_per_tensor(torch.randn(8, 16) * 0.1, 0.004, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(weight, None)
    expected = torch.ops.quantized.linear_dynamic.default(x, packed, reduce_range)
    assert torch.equal(linear_dynamic(x, packed, reduce_range), expected)
    assert torch._C._is_torch_function_enabled()


def test_conv2d_add_restores_the_engine_after_an_error():
    x, packed = _conv_case()
    engine = torch.backends.quantized.engine
    with pytest.raises(RuntimeError):
        conv2d_add(x, None, packed, 0.3, 100)  # type: ignore[arg-type]  # no residual: refused
    assert torch.backends.quantized.engine == engine


def test_engine_is_restored_after_an_error():
    engine = torch.backends.quantized.engine
    with pytest.raises(RuntimeError), onednn_engine():
        raise RuntimeError("boom")
    assert torch.backends.quantized.engine == engine


def test_asymmetric_depthwise_packing_runs_fast_path_shapes():
    # the TF-padded strided depthwise shape fbgemm runs slowly: packed for oneDNN, same result
    x = qtensor((1, 16, 9, 9), 0.05, 3)
    weight = torch.quantize_per_channel(torch.randn(16, 1, 3, 3), torch.rand(16).double() * 0.01 + 0.005,
                                        torch.zeros(16, dtype=torch.long), 0, torch.qint8)
    packed = pack_conv2d(weight, None, [2, 2], [0, 0], [1, 1], 16)
    out = torch.ops.quantized.conv2d.new(x, packed, 0.02, 10)
    expected = torch.quantize_per_tensor(
        torch.nn.functional.conv2d(x.dequantize(), weight.dequantize(), None, 2, 0, 1, 16), 0.02, 10, torch.quint8
    )
    assert (out.int_repr().int() - expected.int_repr().int()).abs().max() <= 1


def test_zero_pad_of_other_ranks_and_qint8():
    x = torch.quantize_per_tensor(torch.randn(2, 3, 7), 0.05, -3, torch.qint8)
    out = zero_pad(x, [2, 1])
    expected = torch.quantize_per_tensor(torch.nn.functional.pad(x.dequantize(), [2, 1]), 0.05, -3, torch.qint8)
    assert torch.equal(out.int_repr(), expected.int_repr()) and out.dtype == torch.qint8


def test_int_and_quantized_views_share_memory_both_ways():
    x = qtensor((1, 4, 3, 3), 0.1, 7, channels_last=True)
    ints = int_view(x)
    assert ints.dtype == torch.uint8 and torch.equal(ints, x.int_repr())
    assert ints.stride() == x.stride()
    ints[0, 0, 0, 0] = 200
    assert x.int_repr()[0, 0, 0, 0] == 200  # no copy
    back = quantized_view(ints, 0.5, 3)
    assert (back.dtype, back.q_scale(), back.q_zero_point()) == (torch.quint8, 0.5, 3)
    ints[0, 1, 0, 0] = 9
    assert back.int_repr()[0, 1, 0, 0] == 9
    signed = quantized_view(torch.tensor([-3, 4], dtype=torch.int8), 0.25, 0)
    assert signed.dtype == torch.qint8 and signed.dequantize().tolist() == [-0.75, 1.0]


def _weight(shape, per_channel=True):
    w = torch.randn(shape)
    if per_channel:
        scales = w.flatten(1).abs().amax(1).double() / 127
        return torch.quantize_per_channel(w, scales, torch.zeros(shape[0], dtype=torch.long), 0, torch.qint8)
    return torch.quantize_per_tensor(w, float(w.abs().max()) / 127, 0, torch.qint8)


CONV_CASES = {
    "conv1d": ((2, 6, 15), (4, 6, 3), ([2], [1], [1], 1)),
    "conv2d_dw": ((1, 6, 9, 9), (6, 1, 3, 3), ([1, 1], [1, 1], [1, 1], 6)),
    "conv3d": ((1, 6, 4, 5, 6), (4, 3, 3, 1, 3), ([1, 1, 1], [1, 0, 1], [1, 1, 1], 2)),
}


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_onednn_conv_is_exact_to_the_dequantize_conv_quantize_reference(case, per_channel):
    x_shape, w_shape, geometry = CONV_CASES[case]
    x = qtensor(x_shape, 0.05, 120)
    weight, bias = _weight(w_shape, per_channel), torch.randn(w_shape[0])
    conv = pack_onednn_conv(weight, bias, geometry, 0.05, 120)
    stride, padding, dilation, groups = geometry
    fn = {3: torch.nn.functional.conv1d, 4: torch.nn.functional.conv2d, 5: torch.nn.functional.conv3d}[len(x_shape)]
    y = fn(x.dequantize(), weight.dequantize(), bias, stride, padding, dilation, groups)
    out = onednn_conv(x, conv, 0.2, 110)
    assert out.dtype == torch.quint8 and (out.q_scale(), out.q_zero_point()) == (0.2, 110)
    assert torch.equal(out.int_repr(), torch.quantize_per_tensor(y, 0.2, 110, torch.quint8).int_repr())
    if len(x_shape) < 5:  # oneDNN's 3-d conv takes no relu post-op
        relu = onednn_conv_relu(x, conv, 0.2, 110)
        assert torch.equal(relu.int_repr(), torch.quantize_per_tensor(y.relu(), 0.2, 110, torch.quint8).int_repr())


def test_onednn_packing_refuses_asymmetric_weights_with_advice():
    w = torch.quantize_per_channel(torch.randn(4, 2, 3), torch.ones(4).double() * 0.01,
                                   torch.tensor([0, 1, 0, 0]), 0, torch.qint8)
    with pytest.raises(ValueError, match="symmetric weights"):
        pack_onednn_conv(w, None, ([1], [0], [1], 1), 0.1, 0)
