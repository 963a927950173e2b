"""The XNNPACK annotator table and its helpers."""

from __future__ import annotations

import torch
from torch import nn

from fxquant.engine.qat_conv_bn import rewrite_conv_bn_for_qat
from fxquant.pt2e.quantizer.quantization_config import QuantizationConfig
from fxquant.pt2e.quantizer.utils import ANNOTATION_KEY, mark_nodes_as_annotated
from fxquant.pt2e.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
from fxquant.pt2e.quantizer.xnnpack_quantizer_utils import (
    OP_TO_ANNOTATOR,
    _convert_scalars_to_attrs,
    propagate_annotation,
    register_annotator,
)
from fxquant.pt2e.quantizer.xnnpack_quantizer_utils import (
    QuantizationConfig as ReexportedConfig,
)

aten = torch.ops.aten
CONFIG = get_symmetric_quantization_config()


def _node(gm, target, index=0):
    return [n for n in gm.graph.nodes if n.target == target][index]


def test_table_has_every_upstream_pattern_and_reexports_the_config():
    assert set(OP_TO_ANNOTATOR) >= {
        "linear", "linear_relu", "conv", "conv_relu", "conv_transpose_relu", "conv_bn", "conv_bn_relu",
        "conv_transpose_bn", "conv_transpose_bn_relu", "gru_io_only", "adaptive_avg_pool2d",
        "add_relu", "add", "mul_relu", "mul", "cat",
    }
    assert ReexportedConfig is QuantizationConfig


def test_register_annotator_returns_the_function():
    def annotator(gm, config, filter_fn=None):
        return []

    try:
        assert register_annotator("test_only")(annotator) is annotator
        assert OP_TO_ANNOTATOR["test_only"] is annotator
    finally:
        OP_TO_ANNOTATOR.pop("test_only", None)


class Scalars(nn.Module):
    def forward(self, x):
        return (x + 2) * 0.5


def test_scalars_become_tensor_constants():
    gm = torch.export.export(Scalars(), (torch.randn(3),)).module()
    gm = _convert_scalars_to_attrs(gm)
    add, mul = _node(gm, aten.add.Tensor), _node(gm, aten.mul.Tensor)
    assert add.args[1].op == "get_attr" and torch.equal(getattr(gm, add.args[1].target), torch.tensor(2.0))
    assert mul.args[1].op == "get_attr" and mul.args[1].meta["val"].shape == ()
    x = torch.randn(3)
    torch.testing.assert_close(gm(x), (x + 2) * 0.5)


class LinearPair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.b(self.a(x)).view(-1)


def test_annotators_skip_claimed_nodes_and_filtered_nodes():
    gm = torch.export.export(LinearPair().eval(), (torch.randn(2, 4),)).module()
    first, second = _node(gm, aten.linear.default), _node(gm, aten.linear.default, 1)
    mark_nodes_as_annotated([first])
    partitions = OP_TO_ANNOTATOR["linear"](gm, CONFIG, lambda n: True)
    assert [p[0] for p in partitions] == [second]
    assert not first.meta[ANNOTATION_KEY].input_qspec_map
    gm2 = torch.export.export(LinearPair().eval(), (torch.randn(2, 4),)).module()
    assert OP_TO_ANNOTATOR["linear"](gm2, CONFIG, lambda n: False) == []


def test_propagate_annotation_shares_the_producer_output():
    gm = torch.export.export(LinearPair().eval(), (torch.randn(2, 4),)).module()
    OP_TO_ANNOTATOR["linear"](gm, CONFIG, None)
    propagate_annotation(gm)
    view, second = _node(gm, aten.view.default), _node(gm, aten.linear.default, 1)
    annotation = view.meta[ANNOTATION_KEY]
    assert annotation.input_qspec_map[second].edge_or_node is second
    assert annotation.output_qspec.edge_or_node is second


class ConvBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_qat_conv_bn_pattern_leaves_the_scaled_weight_mul_and_bias_add_alone():
    gm = torch.export.export(ConvBn().train(), (torch.randn(2, 3, 4, 4),)).module()
    gm = rewrite_conv_bn_for_qat(gm)
    qat = get_symmetric_quantization_config(is_qat=True)
    for name in ("conv_bn", "add", "mul"):
        OP_TO_ANNOTATOR[name](gm, qat, None)
    conv, bn = _node(gm, aten.conv2d.default), _node(gm, aten.batch_norm.default)
    weight_mul = conv.args[1]
    assert weight_mul.target == aten.mul.Tensor
    assert conv.meta[ANNOTATION_KEY].input_qspec_map[weight_mul] is qat.weight
    assert bn.meta[ANNOTATION_KEY].output_qspec is qat.output_activation
    assert not weight_mul.meta.get(ANNOTATION_KEY, None) or not weight_mul.meta[ANNOTATION_KEY].input_qspec_map
    rescale = next(iter(conv.users))
    bias_add = next(iter(rescale.users))
    assert (rescale.target, bias_add.target) == (aten.div.Tensor, aten.add.Tensor)
    assert not bias_add.meta[ANNOTATION_KEY].input_qspec_map and bias_add.meta[ANNOTATION_KEY].output_qspec is None
