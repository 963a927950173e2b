"""X86InductorQuantizer: configs, annotations per pattern, scopes, and prepare → convert."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_sqnr
from torch import nn

from fxquant.engine.fold_bn import fold_bn_into_conv_and_linear
from fxquant.fake_quantize import FusedMovingAvgObsFakeQuantize
from fxquant.observers import HistogramObserver, PlaceholderObserver
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from fxquant.pt2e.quantizer.output_aware_observer import PerChannelOutputMSEObserver
from fxquant.pt2e.quantizer.quantizer import QuantizationSpec, SharedQuantizationSpec
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    QUANT_ANNOTATION_KEY,
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
    get_x86_inductor_linear_dynamic_fp16_config,
)

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed


def _export(model: nn.Module, *inputs: torch.Tensor) -> torch.fx.GraphModule:
    return torch.export.export(model.eval(), inputs).module()


def _annotated(model: nn.Module, *inputs: torch.Tensor, quantizer: X86InductorQuantizer | None = None) -> torch.fx.GraphModule:
    gm = _export(model, *inputs)
    fold_bn_into_conv_and_linear(gm)  # as prepare_pt2e does before annotating
    quantizer = quantizer or X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    return quantizer.annotate(gm)


def _node(gm: torch.fx.GraphModule, target: object, index: int = 0) -> torch.fx.Node:
    return [n for n in gm.graph.nodes if n.target == target][index]


def _ann(node: torch.fx.Node):
    return node.meta.get(QUANT_ANNOTATION_KEY)


def _counts(gm: torch.fx.GraphModule) -> Counter:
    return Counter(n.target for n in gm.graph.nodes if n.op == "call_function")


def _observed(gm: torch.fx.GraphModule) -> set[str]:
    """Names of the nodes whose output some observer reads."""
    return {n.args[0].name for n in gm.graph.nodes if n.op == "call_module" and n.target.startswith("activation_post_process")}


class ConvAct(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = act
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(self.act(self.bn(self.conv(x))))


X = torch.randn(2, 3, 8, 8)


# ---------------------------------------------------------------------------------------------
# configs


@pytest.mark.parametrize("reduce_range, qmax", [(False, 255), (True, 127)], ids=["full", "reduce_range"])
def test_default_config_uint8_activations_int8_per_channel_weights(reduce_range, qmax):
    config = get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    act, weight = config.input_activation, config.weight
    assert (act.dtype, act.quant_min, act.quant_max, act.qscheme) == (torch.uint8, 0, qmax, torch.per_tensor_affine)
    assert config.output_activation is act and config.bias is None and not config.is_qat
    assert (weight.dtype, weight.quant_min, weight.quant_max) == (torch.int8, -128, 127)
    assert (weight.qscheme, weight.ch_axis) == (torch.per_channel_symmetric, 0)
    assert isinstance(act.observer_or_fake_quant_ctr(), HistogramObserver)
    assert isinstance(weight.observer_or_fake_quant_ctr(dtype=torch.int8, qscheme=torch.per_channel_symmetric), PerChannelOutputMSEObserver)


@pytest.mark.parametrize(
    "is_qat, is_dynamic, act_type",
    [(True, False, FusedMovingAvgObsFakeQuantize), (False, True, PlaceholderObserver)],
    ids=["qat", "dynamic"],
)
def test_qat_and_dynamic_configs(is_qat, is_dynamic, act_type):
    config = get_default_x86_inductor_quantization_config(is_qat=is_qat, is_dynamic=is_dynamic)
    assert config.is_qat is is_qat and config.input_activation.is_dynamic is is_dynamic
    assert isinstance(config.input_activation.observer_or_fake_quant_ctr(dtype=torch.uint8), act_type)
    assert get_default_x86_inductor_quantization_config(is_qat=is_qat, is_dynamic=is_dynamic) is config  # cached


def test_linear_dynamic_fp16_config_only_quantizes_weights():
    config = get_x86_inductor_linear_dynamic_fp16_config()
    assert config.input_activation is None and config.output_activation is None
    assert config.weight.dtype == torch.float16 and config.weight.observer_or_fake_quant_ctr is PlaceholderObserver


# ---------------------------------------------------------------------------------------------
# conv / linear patterns


@pytest.mark.parametrize(
    "act, post_op",
    [(nn.ReLU(), aten.relu.default), (nn.ReLU6(), aten.hardtanh.default), (nn.Hardswish(), aten.hardswish.default),
     (nn.SiLU(), aten.silu.default)],
    ids=["relu", "relu6", "hardswish", "silu"],
)
def test_conv_unary_is_observed_after_the_post_op(act, post_op):
    gm = _annotated(ConvAct(act), X)
    conv, post, conv2 = _node(gm, aten.conv2d.default), _node(gm, post_op), _node(gm, aten.conv2d.default, 1)
    conv_ann = _ann(conv)
    assert set(conv_ann.input_qspec_map) == {conv.args[0], conv.args[1], conv.args[2]}
    assert conv_ann.input_qspec_map[conv.args[1]].qscheme == torch.per_channel_symmetric
    assert conv_ann.input_qspec_map[conv.args[2]] is None  # bias stays float
    assert conv_ann.output_qspec is None and not conv_ann._is_output_of_quantized_pattern
    assert _ann(post).output_qspec is None and _ann(post)._is_output_of_quantized_pattern
    # the next conv reads the post-op's output in uint8: observed after the clamp
    assert _ann(conv2).input_qspec_map[post].dtype == torch.uint8
    prepared = prepare_pt2e(_export(ConvAct(act), X), X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()))
    assert post.name in _observed(prepared) and "conv2d" not in _observed(prepared)


class ConvAdd(nn.Module):
    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = relu

    def forward(self, x):
        skip = F.relu(self.conv0(x))
        y = self.conv(skip) + skip
        return F.relu(y) if self.relu else y


@pytest.mark.parametrize("relu", [False, True], ids=["add", "add_relu"])
def test_conv_binary_quantizes_the_skip_operand(relu):
    gm = _annotated(ConvAdd(relu), X)
    conv, add = _node(gm, aten.conv2d.default, 1), _node(gm, aten.add.Tensor)
    skip = _node(gm, aten.relu.default)
    assert _ann(conv).input_qspec_map[skip].dtype == torch.uint8
    assert _ann(add).input_qspec_map == {skip: _ann(conv).input_qspec_map[skip]}
    assert _ann(add).output_qspec is None
    assert _ann(add)._is_output_of_quantized_pattern is (not relu)
    if relu:
        assert _ann(_node(gm, aten.relu.default, 1))._is_output_of_quantized_pattern


class LinearPost(nn.Module):
    def __init__(self, post: str) -> None:
        super().__init__()
        self.fc, self.fc2, self.post = nn.Linear(8, 8), nn.Linear(8, 4), post

    def forward(self, x):
        y = self.fc(x)
        y = {"none": lambda t: t, "relu": F.relu, "gelu": F.gelu, "add": lambda t: t + x, "add_relu": lambda t: F.relu(t + x)}[self.post](y)
        return self.fc2(y)


@pytest.mark.parametrize("post", ["none", "relu", "gelu", "add", "add_relu"])
def test_linear_patterns(post):
    x = torch.randn(3, 8)
    gm = _annotated(LinearPost(post), x)
    linear = _node(gm, aten.linear.default)
    assert _ann(linear).input_qspec_map[linear.args[0]].dtype == torch.uint8
    assert _ann(linear)._is_output_of_quantized_pattern is (post == "none")
    if post.startswith("add"):
        assert _ann(_node(gm, aten.add.Tensor)).input_qspec_map == {}  # linear's binary operand stays float
    fc2 = _node(gm, aten.linear.default, 1)
    assert fc2.args[0] in _ann(fc2).input_qspec_map


# ---------------------------------------------------------------------------------------------
# propagation ops


class Propagation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
        y = F.max_pool2d(y, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def test_int8_in_int8_out_ops_share_their_input_quantization():
    gm = _annotated(Propagation(), X)
    relu_a, relu_b = _node(gm, aten.relu.default), _node(gm, aten.relu.default, 1)
    cat = _node(gm, aten.cat.default)
    shared = SharedQuantizationSpec((relu_a, cat))
    assert _ann(cat).input_qspec_map[relu_a].dtype == torch.uint8
    assert _ann(cat).input_qspec_map[relu_b] == shared and _ann(cat).output_qspec == shared
    for target in (aten.max_pool2d.default, aten.adaptive_avg_pool2d.default, aten.flatten.using_ints):
        node = _node(gm, target)
        source = node.args[0]
        assert isinstance(_ann(node).input_qspec_map[source], QuantizationSpec)
        assert _ann(node).output_qspec == SharedQuantizationSpec((source, node))


def test_propagation_needs_a_quantized_producer_and_a_quantized_consumer():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            pooled = F.max_pool2d(torch.sigmoid(x), 2)  # producer not quantized
            return self.conv(pooled) + 0, torch.flatten(F.relu(self.conv(x)), 1)  # flatten feeds nothing quantized

    gm = _annotated(M(), X)
    assert _ann(_node(gm, aten.max_pool2d.default)) is None
    assert _ann(_node(gm, aten.flatten.using_ints)) is None


def test_guards_node_and_unsupported_ops_stay_unannotated():
    gm = _annotated(ConvAct(nn.Sigmoid()), X)
    assert any(n.op == "call_module" and n.target == "_guards_fn" for n in gm.graph.nodes)
    for node in gm.graph.nodes:
        if node.op == "call_module" or node.target == aten.sigmoid.default:
            assert QUANT_ANNOTATION_KEY not in node.meta


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        scores = torch.matmul(self.q(x), self.k(x).transpose(-1, -2))
        return torch.softmax(scores, -1) * torch.softmax(scores, -1)


def test_matmul_only_when_configured_and_same_shape_mul_by_default():
    x = torch.randn(2, 5, 8)
    config = get_default_x86_inductor_quantization_config()
    gm = _annotated(Attention(), x)
    assert _ann(_node(gm, aten.matmul.default)) is None
    mul = _node(gm, aten.mul.Tensor)
    assert len(_ann(mul).input_qspec_map) == 2 and _ann(mul)._is_output_of_quantized_pattern  # two activations
    gm = _annotated(Attention(), x, quantizer=X86InductorQuantizer().set_global(config).set_function_type_qconfig(torch.matmul, config))
    matmul = _node(gm, aten.matmul.default)
    assert set(_ann(matmul).input_qspec_map) == set(matmul.all_input_nodes)


# ---------------------------------------------------------------------------------------------
# scopes


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.second(self.first(x))


def test_module_name_none_keeps_that_module_float_and_wins_over_global():
    x = torch.randn(2, 4)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    quantizer.set_module_name_qconfig("second", None)
    gm = _annotated(Two(), x, quantizer=quantizer)
    first, second = _node(gm, aten.linear.default), _node(gm, aten.linear.default, 1)
    assert _ann(first).input_qspec_map and _ann(second).input_qspec_map == {} and _ann(second)._annotated


def test_module_name_config_overrides_global():
    x = torch.randn(2, 4)
    reduced = get_default_x86_inductor_quantization_config(reduce_range=True)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()).set_module_name_qconfig("first", reduced)
    gm = _annotated(Two(), x, quantizer=quantizer)
    first, second = _node(gm, aten.linear.default), _node(gm, aten.linear.default, 1)
    assert _ann(first).input_qspec_map[first.args[0]].quant_max == 127
    assert _ann(second).input_qspec_map[second.args[0]].quant_max == 255


def test_module_type_config_and_global_none():
    quantizer = X86InductorQuantizer().set_module_type_qconfig(nn.Conv2d, get_default_x86_inductor_quantization_config())
    gm = _annotated(Propagation(), X, quantizer=quantizer)
    assert _ann(_node(gm, aten.conv2d.default)).input_qspec_map
    assert _ann(_node(gm, aten.linear.default)) is None  # no global config: linear untouched
    assert _ann(_node(gm, aten.cat.default)) is None  # propagation follows its own scope only


def test_mixing_qat_and_ptq_configs_is_refused_with_a_warning():
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    with pytest.warns(UserWarning) as record:
        quantizer.set_module_name_qconfig("fc", get_default_x86_inductor_quantization_config(is_qat=True))
    assert any("mixing QAT" in str(w.message) for w in record)
    assert quantizer.module_name_qconfig == {}
    with pytest.warns(UserWarning, match="cannot configure"):
        quantizer.set_module_type_qconfig(nn.LSTM, get_default_x86_inductor_quantization_config())


# ---------------------------------------------------------------------------------------------
# prepare → calibrate → convert


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv2 = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        y = F.max_pool2d(self.dw(y) + y, 2)
        y = F.relu(self.conv2(y))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def _trained_cnn() -> SmallCNN:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model


@torch.no_grad()
def test_prepare_calibrate_convert_small_cnn():
    model = _trained_cnn()
    data = torch.randn(16, 3, 16, 16)
    prepared = prepare_pt2e(_export(model, data[:8]), X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()))
    prepared(data[:8])
    prepared(data[8:])
    converted = convert_pt2e(prepared)
    converted.graph.lint()
    counts = _counts(converted)
    # x; relu6 (read by dw and by the add); add -> max_pool (its output shares it);
    # relu -> avg_pool, avg_pool -> flatten, flatten -> fc (all one shared observer)
    assert counts[qd.quantize_per_tensor.default] == 7
    assert counts[qd.dequantize_per_tensor.default] == 8
    assert counts[qd.dequantize_per_channel.default] == 4  # conv1 (BN folded), dw, conv2, fc
    assert counts[qd.quantize_per_channel.default] == 0  # weights stored quantized
    assert aten.batch_norm.default not in counts
    out = torch.cat([converted(data[:8]), converted(data[8:])])
    assert_sqnr(model(data), out, min_db=25)


def test_qat_conv_bn_pattern_is_fake_quantized_after_the_batch_norm():
    torch.manual_seed(0)
    model = ConvAct(nn.ReLU()).train()
    gm = torch.export.export(model, (X,)).module()
    prepared = prepare_qat_pt2e(gm, X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True)))
    relu = _node(prepared, aten.relu.default)
    conv = _node(prepared, aten.conv2d.default)
    assert conv.args[1].op == "call_module"  # the BN-scaled weight is fake-quantized
    observed = _observed(prepared)
    assert relu.name in observed and "batch_norm" not in observed and "div" not in observed and "add" not in observed
    prepared(X)
    from fxquant.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pattern left unfolded would warn
        converted = convert_pt2e(prepared)
    assert aten.batch_norm.default not in _counts(converted)
    with torch.no_grad():
        assert_sqnr(model.eval()(X), converted(X), min_db=20)


class ViewMatmul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        heads = self.fc(x).view(2, 5, 2, 4)
        return torch.matmul(heads, heads.transpose(-1, -2))


@pytest.mark.parametrize("configure_matmul", [False, True], ids=["matmul_float", "matmul_int8"])
def test_shape_op_is_quantized_only_when_its_consumer_reads_int8(configure_matmul):
    config = get_default_x86_inductor_quantization_config()
    quantizer = X86InductorQuantizer().set_global(config)
    if configure_matmul:
        quantizer.set_function_type_qconfig(torch.matmul, config)
    gm = _annotated(ViewMatmul(), torch.randn(2, 5, 8), quantizer=quantizer)
    view = _node(gm, aten.view.default)
    assert (_ann(view) is not None) is configure_matmul
    if configure_matmul:
        assert _ann(view).output_qspec == SharedQuantizationSpec((view.args[0], view))
