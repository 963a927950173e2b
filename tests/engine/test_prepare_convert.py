"""prepare_pt2e / convert_pt2e on small models: exact observer and q/dq counts, numerics."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_sqnr
from pt2e_helpers import (
    ACT,
    QD,
    A,
    ConvBnReLUNet,
    FnQuantizer,
    annotate_conv_linear,
    export,
    nodes,
    op_counts,
)
from torch import nn

from fxquant.engine.errors import NotCalibratedError
from fxquant.numerics import fake_quantize_per_channel, fake_quantize_per_tensor
from fxquant.pt2e.quantize_pt2e import NotAGraphModuleError, convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer import FixedQParamsQuantizationSpec, SharedQuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec


def _calibrated(model, quantizer, *inputs, batches=4):
    gm = prepare_pt2e(export(model, *inputs), quantizer)
    for _ in range(batches):
        gm(*(torch.randn_like(t) for t in inputs))
    gm(*inputs)
    return gm


def test_conv_bn_relu_linear_counts_and_accuracy():
    torch.manual_seed(0)
    model = ConvBnReLUNet().eval()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 10, 10)
    ref = model(x)
    gm = _calibrated(model, FnQuantizer(annotate_conv_linear), x)
    # batch norm was folded before annotation
    assert not nodes(gm, A.batch_norm.default)
    # x->conv, conv weight, relu out, mean->fc input, fc weight, fc out
    assert op_counts(gm) == {"observer": 6}
    gm.graph.lint()
    out_prepared = gm(x)
    assert torch.allclose(out_prepared, ref, atol=1e-5)  # observers do not change numerics
    q = convert_pt2e(gm)
    q.graph.lint()
    assert op_counts(q) == {
        "quantize_per_tensor": 4, "dequantize_per_tensor": 4, "dequantize_per_channel": 2,
    }
    # weights were quantized ahead of time: no float weights, int8 buffers
    frozen = [b for n, b in q.named_buffers() if n.startswith("_frozen_param")]
    assert len(frozen) == 2 and all(b.dtype == torch.int8 for b in frozen)
    assert not any(n.endswith("weight") for n, _ in q.named_parameters())
    assert_sqnr(ref, q(x), min_db=25)


def test_convert_without_fold_quantize_keeps_weight_quantize_ops():
    x = torch.randn(2, 3, 8, 8)
    gm = _calibrated(ConvBnReLUNet(), FnQuantizer(annotate_conv_linear), x)
    q = convert_pt2e(gm, fold_quantize=False)
    assert op_counts(q)["quantize_per_channel"] == 2
    assert not [n for n, _ in q.named_buffers() if n.startswith("_frozen_param")]


def test_reference_model_equals_hand_fake_quantized_computation():
    torch.manual_seed(1)
    lin = nn.Linear(6, 5)
    x = torch.randn(8, 6)
    gm = _calibrated(lin, FnQuantizer(annotate_conv_linear), x)
    # identify each observer by the node it observes
    by_input_op = {n.args[0].op if n.args[0].op != "call_function" else "output":
                   gm.get_submodule(n.target) for n in gm.graph.nodes
                   if n.op == "call_module" and n.target.startswith("activation_post_process_")}
    in_obs, w_obs, out_obs = by_input_op["placeholder"], by_input_op["get_attr"], by_input_op["output"]
    q = convert_pt2e(copy.deepcopy(gm))
    s, z = in_obs.calculate_qparams()
    xq = fake_quantize_per_tensor(x, s, z, 0, 255)
    ws, wz = w_obs.calculate_qparams()
    wq = fake_quantize_per_channel(lin.weight.detach(), ws, wz.int(), 0, -127, 127)
    y = torch.nn.functional.linear(xq, wq, lin.bias.detach())
    s, z = out_obs.calculate_qparams()
    expected = fake_quantize_per_tensor(y, s, z, 0, 255)
    assert torch.equal(q(x), expected)


def test_each_annotated_reader_gets_its_own_dequantize():
    class FourUsers(nn.Module):
        def forward(self, x):
            y = torch.relu(x)
            return y + 1, y * 2, y - 3, y / 4

    def annotate(gm):
        relu = nodes(gm, A.relu.default)[0]
        annotate_output_qspec(relu, ACT)
        for op in (A.add.Tensor, A.mul.Tensor):  # sub and div stay float readers
            n = nodes(gm, op)[0]
            annotate_input_qspec_map(n, n.args[0], SharedQuantizationSpec(relu))

    gm = _calibrated(FourUsers(), FnQuantizer(annotate), torch.randn(3, 4))
    q = convert_pt2e(gm)
    readers = sorted(sorted(str(u.target) for u in d.users) for d in nodes(q, QD.dequantize_per_tensor.default))
    # add and mul read private copies; the float readers share the original (as torchao)
    assert readers == [["aten.add.Tensor"], ["aten.div.Tensor", "aten.sub.Tensor"], ["aten.mul.Tensor"]]
    assert len(nodes(q, QD.quantize_per_tensor.default)) == 1


def test_shared_and_fixed_qparams_specs():
    class SigCat(nn.Module):
        def forward(self, x, y):
            return torch.cat([torch.sigmoid(x), y], dim=1)

    def annotate(gm):
        sig = nodes(gm, A.sigmoid.default)[0]
        cat = nodes(gm, A.cat.default)[0]
        fixed = FixedQParamsQuantizationSpec(dtype=torch.uint8, scale=1 / 256, zero_point=0, quant_min=0, quant_max=255)
        annotate_output_qspec(sig, fixed)
        inputs = cat.args[0]
        annotate_input_qspec_map(cat, inputs[0], SharedQuantizationSpec(sig))
        annotate_input_qspec_map(cat, inputs[1], SharedQuantizationSpec(sig))
        annotate_output_qspec(cat, SharedQuantizationSpec(sig))

    x, y = torch.randn(2, 3), torch.rand(2, 3)
    gm = _calibrated(SigCat(), FnQuantizer(annotate), x, y)
    # one observer instance for the whole sharing group, called at sigmoid, y and cat
    targets = {n.target for n in gm.graph.nodes if n.op == "call_module" and "activation_post" in n.target}
    assert len(targets) == 1
    q = convert_pt2e(gm)
    for n in nodes(q, QD.quantize_per_tensor.default):
        assert n.args[1:3] == (1 / 256, 0)
    assert_sqnr(SigCat()(x, y), q(x, y), min_db=30)


def test_dynamic_spec_becomes_choose_qparams_pattern():
    from fxquant import PlaceholderObserver
    from fxquant.pt2e.quantizer import QuantizationSpec

    dyn = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
                           is_dynamic=True, observer_or_fake_quant_ctr=PlaceholderObserver)

    def annotate(gm):
        lin = nodes(gm, A.linear.default)[0]
        annotate_input_qspec_map(lin, lin.args[0], dyn)

    x = torch.randn(4, 6)
    lin = nn.Linear(6, 3)
    ref = lin(x).detach()
    q = convert_pt2e(_calibrated(lin, FnQuantizer(annotate), x))
    assert op_counts(q) == {"choose_qparams": 1, "quantize_per_tensor": 1, "dequantize_per_tensor": 1}
    # dynamic: parameters come from each batch, so the error is one step of that batch's range
    assert_sqnr(ref, q(x), min_db=30)


def test_convert_before_calibration_names_the_node():
    gm = prepare_pt2e(export(nn.Linear(3, 2), torch.randn(2, 3)), FnQuantizer(annotate_conv_linear))
    with pytest.raises(NotCalibratedError, match=r"activation_post_process_\d+ \(observing (x|weight), read by linear\) has seen no data"):
        convert_pt2e(gm)


def test_eager_module_is_rejected_with_the_capture_recipe():
    with pytest.raises(NotAGraphModuleError, match="torch.export.export"):
        prepare_pt2e(nn.Linear(2, 2), FnQuantizer(annotate_conv_linear))


def test_metadata_is_carried_to_qdq_nodes():
    x = torch.randn(2, 3, 8, 8)
    gm = _calibrated(ConvBnReLUNet(), FnQuantizer(annotate_conv_linear), x)
    q = convert_pt2e(gm)
    relu_q = next(n for n in nodes(q, QD.quantize_per_tensor.default) if n.args[0].target == A.relu.default)
    assert "stack_trace" in relu_q.meta and "nn_module_stack" in relu_q.meta
