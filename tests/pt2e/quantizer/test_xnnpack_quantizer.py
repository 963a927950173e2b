"""XNNPACKQuantizer: the symmetric config, annotations per pattern, scopes, prepare → convert."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_sqnr
from torch import nn

from fxquant.engine.fold_bn import fold_bn_into_conv_and_linear
from fxquant.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from fxquant.observers import (
    HistogramObserver,
    MinMaxObserver,
    PlaceholderObserver,
)
from fxquant.pt2e import move_exported_model_to_eval
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from fxquant.pt2e.quantizer.output_aware_observer import PerChannelOutputMSEObserver
from fxquant.pt2e.quantizer.quantizer import SharedQuantizationSpec
from fxquant.pt2e.quantizer.utils import ANNOTATION_KEY
from fxquant.pt2e.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed
X = torch.randn(2, 3, 8, 8)


def _export(model: nn.Module, *inputs: torch.Tensor) -> torch.fx.GraphModule:
    return torch.export.export(model.eval(), inputs).module()


def _annotated(model: nn.Module, *inputs: torch.Tensor, quantizer: XNNPACKQuantizer | None = None) -> torch.fx.GraphModule:
    gm = _export(model, *inputs)
    quantizer = quantizer or XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    gm = quantizer.transform_for_annotation(gm)
    fold_bn_into_conv_and_linear(gm)
    return quantizer.annotate(gm)


def _node(gm, target, index=0):
    return [n for n in gm.graph.nodes if n.target == target][index]


def _ann(node):
    return node.meta.get(ANNOTATION_KEY)


def _ctr_type(spec):
    """The type the engine builds from ``spec`` (it passes the spec's fields)."""
    kwargs = {"dtype": spec.dtype, "quant_min": spec.quant_min, "quant_max": spec.quant_max, "qscheme": spec.qscheme}
    if spec.ch_axis is not None and spec.qscheme == torch.per_channel_symmetric:
        kwargs["ch_axis"] = spec.ch_axis
    if spec.is_dynamic:
        kwargs["is_dynamic"] = True
    return type(spec.observer_or_fake_quant_ctr(**kwargs))


# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize(
    "per_channel, qat, dynamic, act_type, weight_type, weight_qscheme",
    [
        (False, False, False, HistogramObserver, MinMaxObserver, torch.per_tensor_symmetric),
        (True, False, False, HistogramObserver, PerChannelOutputMSEObserver, torch.per_channel_symmetric),
        (True, True, False, FusedMovingAvgObsFakeQuantize, FusedMovingAvgObsFakeQuantize, torch.per_channel_symmetric),
        (True, False, True, PlaceholderObserver, PerChannelOutputMSEObserver, torch.per_channel_symmetric),
        (False, True, True, FakeQuantize, FusedMovingAvgObsFakeQuantize, torch.per_tensor_symmetric),
    ],
    ids=["per_tensor", "per_channel", "qat", "dynamic", "qat_dynamic"],
)
def test_symmetric_config(per_channel, qat, dynamic, act_type, weight_type, weight_qscheme):
    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat, is_dynamic=dynamic)
    act, weight = config.input_activation, config.weight
    assert (act.dtype, act.quant_min, act.quant_max, act.qscheme, act.is_dynamic) == (
        torch.int8, -128, 127, torch.per_tensor_affine, dynamic)
    assert (weight.dtype, weight.quant_min, weight.quant_max, weight.qscheme) == (torch.int8, -127, 127, weight_qscheme)
    assert (config.output_activation is None) is dynamic and config.bias is None and config.is_qat is qat
    assert _ctr_type(act) is act_type
    assert _ctr_type(weight) is weight_type


def test_supported_operators_and_configs():
    configs = XNNPACKQuantizer.get_supported_quantization_configs()
    assert get_symmetric_quantization_config(is_per_channel=True) in configs and len(configs) == 4
    patterns = XNNPACKQuantizer.get_supported_operator_for_quantization_config(get_symmetric_quantization_config())
    assert [torch.nn.Conv2d, torch.nn.ReLU] in patterns
    assert [torch.nn.Linear] in XNNPACKQuantizer.get_supported_operator_for_quantization_config(None)


# ---------------------------------------------------------------------------------------------
# annotations


class ConvAct(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


@pytest.mark.parametrize("act, target", [(nn.ReLU(), aten.relu.default), (nn.ReLU6(), aten.hardtanh.default)], ids=["relu", "relu6"])
def test_conv_clamp_output_is_observed_after_the_clamp(act, target):
    gm = _annotated(ConvAct(act), X)
    conv, clamp = _node(gm, aten.conv2d.default), _node(gm, target)
    assert _ann(conv).output_qspec is None
    assert _ann(conv).input_qspec_map[conv.args[1]].qscheme == torch.per_channel_symmetric
    assert _ann(clamp).output_qspec.dtype == torch.int8
    assert _ann(conv)._annotated and _ann(clamp)._annotated


def test_conv_without_clamp_quantizes_its_output_and_guards_stay_unannotated():
    gm = _annotated(ConvAct(nn.Sigmoid()), X)
    conv = _node(gm, aten.conv2d.default)
    assert _ann(conv).output_qspec.dtype == torch.int8
    assert ANNOTATION_KEY not in _node(gm, aten.sigmoid.default).meta
    assert all(ANNOTATION_KEY not in n.meta for n in gm.graph.nodes if n.op == "call_module")


class Elementwise(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.fc, self.op = nn.Linear(4, 4), op

    def forward(self, x):
        y = self.fc(x)
        return {"add": lambda: y + x, "add_relu": lambda: F.relu(y + x), "mul": lambda: y * x,
                "mul_relu": lambda: F.relu(y * x), "scalar": lambda: y + 1.0}[self.op]()


@pytest.mark.parametrize("op", ["add", "add_relu", "mul", "mul_relu", "scalar"])
def test_binary_ops(op):
    x = torch.randn(2, 4)
    gm = _annotated(Elementwise(op), x)
    binary = _node(gm, aten.mul.Tensor if op.startswith("mul") else aten.add.Tensor)
    assert len(_ann(binary).input_qspec_map) == 2  # a scalar became a tensor constant
    if op.endswith("relu"):
        assert _ann(binary).output_qspec is None and _ann(_node(gm, aten.relu.default)).output_qspec is not None
    else:
        assert _ann(binary).output_qspec.dtype == torch.int8


class CatPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        return torch.flatten(F.adaptive_avg_pool2d(F.max_pool2d(y, 2), 1), 1)


def test_cat_pool_and_shape_ops_share_quantization():
    gm = _annotated(CatPool(), X)
    a, b, cat = _node(gm, aten.conv2d.default), _node(gm, aten.conv2d.default, 1), _node(gm, aten.cat.default)
    shared = SharedQuantizationSpec((a, cat))
    assert _ann(cat).input_qspec_map[a].dtype == torch.int8
    assert _ann(cat).input_qspec_map[b] == shared and _ann(cat).output_qspec == shared
    maxpool = _node(gm, aten.max_pool2d.default)
    assert _ann(maxpool).input_qspec_map == {cat: SharedQuantizationSpec(cat)}
    pool = _node(gm, aten.adaptive_avg_pool2d.default)
    # annotated before max_pool is propagated: its own spec, which the engine then shares
    # implicitly with max_pool's (equal) quantization
    assert _ann(pool).input_qspec_map[maxpool].dtype == torch.int8
    assert _ann(pool).output_qspec == SharedQuantizationSpec((maxpool, pool))
    flatten = _node(gm, aten.flatten.using_ints)
    assert _ann(flatten).output_qspec == SharedQuantizationSpec(pool)


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 4)
        self.conv = nn.Conv1d(4, 4, 1)

    def forward(self, x):
        return self.conv(self.second(self.first(x)).unsqueeze(-1))


def _linear_quantized(gm, index):
    return _ann(_node(gm, aten.linear.default, index)) is not None


def _conv_quantized(gm):
    return _ann(_node(gm, aten.conv1d.default)) is not None


@pytest.mark.parametrize(
    "configure, first, second, conv",
    [
        (lambda q, c: q.set_global(c), True, True, True),
        (lambda q, c: q.set_global(None), False, False, False),
        (lambda q, c: q.set_global(c).set_module_name("second", None), True, False, True),
        (lambda q, c: q.set_module_name("first", c), True, False, False),
        (lambda q, c: q.set_global(c).set_module_type(nn.Linear, None), False, False, True),
        (lambda q, c: q.set_module_type(nn.Conv1d, c), False, False, True),
        (lambda q, c: q.set_operator_type(torch.ops.aten.linear, c), True, True, False),
        (lambda q, c: q.set_global(c).set_operator_type(torch.ops.aten.linear, None), False, False, True),
    ],
    ids=["global", "global_none", "name_none", "name_only", "type_none", "type_only", "operator_only", "operator_none"],
)
def test_scopes(configure, first, second, conv):
    x = torch.randn(2, 4)
    quantizer = configure(XNNPACKQuantizer(), get_symmetric_quantization_config())
    gm = _annotated(Two(), x, quantizer=quantizer)
    assert (_linear_quantized(gm, 0), _linear_quantized(gm, 1), _conv_quantized(gm)) == (first, second, conv)


def test_module_name_config_wins_over_global():
    x = torch.randn(2, 4)
    per_tensor, per_channel = get_symmetric_quantization_config(), get_symmetric_quantization_config(is_per_channel=True)
    gm = _annotated(Two(), x, quantizer=XNNPACKQuantizer().set_global(per_tensor).set_module_name("second", per_channel))
    second = _node(gm, aten.linear.default, 1)
    first = _node(gm, aten.linear.default)
    assert _ann(second).input_qspec_map[second.args[1]].qscheme == torch.per_channel_symmetric
    assert _ann(first).input_qspec_map[first.args[1]].qscheme == torch.per_tensor_symmetric


def test_dynamic_config_quantizes_only_linear_inputs():
    x = torch.randn(2, 4)
    gm = _annotated(Two(), x, quantizer=XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_dynamic=True)))
    linear = _node(gm, aten.linear.default)
    assert _ann(linear).input_qspec_map[linear.args[0]].is_dynamic and _ann(linear).output_qspec is None
    assert not _conv_quantized(gm)


# ---------------------------------------------------------------------------------------------
# prepare → calibrate → convert


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        y = F.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.max_pool2d(y, 2), 1), 1))


@torch.no_grad()
def test_prepare_calibrate_convert_small_cnn():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    data = torch.randn(16, 3, 16, 16)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(_export(model, data[:8]), quantizer)
    prepared(data[:8])
    prepared(data[8:])
    converted = convert_pt2e(prepared)
    converted.graph.lint()
    counts = Counter(n.target for n in converted.graph.nodes if n.op == "call_function")
    # x, relu6, conv2, add-relu, max_pool, avg_pool, flatten, fc
    assert counts[qd.quantize_per_tensor.default] == 8
    assert counts[qd.dequantize_per_tensor.default] == 9  # relu6 is read by conv2 and the add
    assert counts[qd.dequantize_per_channel.default] == 3
    out = torch.cat([converted(data[:8]), converted(data[8:])])
    assert_sqnr(model(data), out, min_db=25)


def test_qat_conv_bn_relu_observes_after_the_relu():
    torch.manual_seed(0)
    model = ConvAct(nn.ReLU()).train()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
    prepared = prepare_qat_pt2e(torch.export.export(model, (X,)).module(), quantizer)
    observed = {n.args[0].name for n in prepared.graph.nodes if n.op == "call_module" and n.target.startswith("activation_post_process")}
    assert "relu" in observed and not observed & {"conv2d", "div", "add", "batch_norm"}
    assert _node(prepared, aten.conv2d.default).args[1].op == "call_module"  # scaled weight fake-quantized
    prepared(X)
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    assert aten.batch_norm.default not in {n.target for n in converted.graph.nodes}
    with torch.no_grad():
        assert_sqnr(model.eval()(X), converted(X), min_db=20)


def test_per_tensor_config_quantizes_end_to_end():
    """The per-tensor weight spec carries ch_axis=0 (as upstream's does); per-tensor observers
    must be built without it."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    gm = torch.export.export(model, (x,)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=False))
    prepared = prepare_pt2e(gm, quantizer)
    prepared(x)
    weight_observers = [m for m in prepared.modules() if isinstance(m, MinMaxObserver)]
    assert weight_observers and all(m.qscheme == torch.per_tensor_symmetric for m in weight_observers
                                    if m.dtype == torch.qint8)
    assert_sqnr(model(x), convert_pt2e(prepared)(x), min_db=20.0)
