"""fxquant.speed.kernels: the int8 kernel each unit lowers to, at the unit's recorded shapes."""

from __future__ import annotations

import pytest
import torch
from speed.speed_helpers import ConvChain, PadConv, Residual, annotated

from fxquant.lowering.kernels import HAS_ONEDNN
from fxquant.speed.kernels import (
    dequantize_closure,
    fp32_closure,
    int8_kernel,
    materialize,
    quantize_closure,
)
from fxquant.speed.units import find_units


def test_conv_unit_args_take_the_recorded_shapes():
    gm = annotated(ConvChain(), torch.randn(1, 3, 10, 12))
    for unit in find_units(gm).units:
        args, _ = materialize(unit.anchor, gm)
        assert args[0].shape == unit.anchor.args[0].meta["val"].shape
        # the weight is the real (BN-folded) constant of the graph
        weight = gm.get_parameter(unit.anchor.args[1].target) if unit.anchor.args[1].op == "get_attr" else None
        assert weight is not None and torch.equal(args[1], weight)


@pytest.mark.parametrize("index, groups", [(0, 1), (1, 8), (2, 1)], ids=["conv", "depthwise", "pointwise"])
def test_conv_int8_kernel_is_quantized_conv_relu_at_the_graph_shape(index, groups):
    gm = annotated(ConvChain(), torch.randn(1, 3, 10, 12))
    unit = find_units(gm).units[index]
    kernel = int8_kernel(unit, gm)
    assert kernel.description == "quantized.conv2d_relu" and not kernel.emulated
    out = kernel.closure()
    assert out.dtype == torch.quint8
    assert out.shape == unit.output.meta["val"].shape
    assert unit.anchor.args[6] == groups if len(unit.anchor.args) > 6 else groups == 1


def test_fp32_closure_runs_the_graph_ops():
    gm = annotated(ConvChain(), torch.randn(1, 3, 10, 12))
    unit = find_units(gm).units[1]
    fp32_closure(unit.nodes, gm)()  # conv2d + relu on the recorded shapes; raises if they mismatch
    assert [n.target for n in unit.nodes] == [torch.ops.aten.conv2d.default, torch.ops.aten.relu.default]


def test_conv_add_unit_times_the_fused_onednn_kernel_as_the_lowering_runs_it():
    gm = annotated(Residual(), torch.randn(1, 3, 4, 4))
    kernel = int8_kernel(find_units(gm).unit("conv2d_2"), gm)
    assert kernel.description == ("quantized.conv2d_add" if HAS_ONEDNN else "quantized.conv2d + quantized.add")
    out = kernel.closure()
    assert out.dtype == torch.quint8 and out.shape == (1, 8, 4, 4)


def test_passthrough_pad_runs_on_int8_values():
    gm = annotated(PadConv(), torch.randn(1, 3, 8, 8))
    unit = find_units(gm).unit("pad")
    kernel = int8_kernel(unit, gm)
    out = kernel.closure()
    assert kernel.description == "zero_pad(int8)" and out.dtype == torch.quint8
    assert out.shape == unit.anchor.meta["val"].shape


@pytest.mark.parametrize("is_dynamic, expected", [(False, "quantized.linear"), (True, "quantized.linear_dynamic")],
                         ids=["static", "dynamic"])
def test_linear_kernels(is_dynamic, expected):
    gm = annotated(torch.nn.Sequential(torch.nn.Linear(16, 8)), torch.randn(3, 16), is_dynamic=is_dynamic)
    (unit,) = find_units(gm).units
    kernel = int8_kernel(unit, gm)
    assert kernel.description == expected
    out = kernel.closure()
    assert out.shape == (3, 8)
    assert out.dtype == (torch.float32 if is_dynamic else torch.quint8)


def test_boundary_closures_quantize_and_dequantize_that_shape():
    q = quantize_closure(torch.Size([1, 4, 5, 5]))()
    assert q.dtype == torch.quint8 and q.shape == (1, 4, 5, 5)
    d = dequantize_closure(torch.Size([2, 3]))()
    assert d.dtype == torch.float32 and d.shape == (2, 3)


def test_missing_shape_metadata_is_a_clear_error():
    gm = annotated(ConvChain(), torch.randn(1, 3, 8, 8))
    unit = find_units(gm).units[1]
    del unit.anchor.args[0].meta["val"]
    with pytest.raises(ValueError, match="capture the model with torch.export"):
        materialize(unit.anchor, gm)


class _Conv1dRelu(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


@pytest.mark.skipif(not HAS_ONEDNN, reason="torch built without oneDNN")
def test_conv1d_unit_times_the_onednn_kernel_the_lowering_calls():
    gm = annotated(_Conv1dRelu(), torch.randn(1, 4, 16))
    (unit,) = find_units(gm).units
    kernel = int8_kernel(unit, gm)
    assert kernel.description == "onednn.qconv_pointwise_relu" and not kernel.emulated
    out = kernel.closure()
    assert out.dtype == torch.quint8 and out.shape == (1, 8, 8)
