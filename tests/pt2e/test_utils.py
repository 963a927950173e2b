"""pt2e.utils: op predicates, attribute naming, pattern capture, conv-bn chains."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fxquant.engine.qat_conv_bn import rewrite_conv_bn_for_qat
from fxquant.pt2e.utils import (
    _conv_bn_chain,
    _filter_sym_size_users,
    _get_aten_graph_module_for_pattern,
    _is_constant_node,
    _is_conv_node,
    _is_conv_transpose_node,
    _is_float_tensor_node,
    _is_linear_node,
    create_getattr_from_value,
    get_new_attr_name_with_prefix,
    is_per_channel,
    is_per_tensor,
)

aten = torch.ops.aten


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.up = nn.ConvTranspose2d(4, 2, 2)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.up(self.bn(self.conv(x))).mean((2, 3)))


def _export(model, train=False):
    model = model.train() if train else model.eval()
    return torch.export.export(model, (torch.randn(2, 3, 6, 6),)).module()


def _node(gm, target):
    return next(n for n in gm.graph.nodes if n.target == target)


def test_op_predicates():
    gm = _export(Mixed())
    conv, up, fc = _node(gm, aten.conv2d.default), _node(gm, aten.conv_transpose2d.input), _node(gm, aten.linear.default)
    assert _is_conv_node(conv) and not _is_conv_node(up) and not _is_conv_node(fc)
    assert _is_conv_transpose_node(up) and not _is_conv_transpose_node(conv)
    assert _is_linear_node(fc) and not _is_linear_node(conv)
    assert _is_float_tensor_node(conv) and _is_constant_node(conv.args[1]) and not _is_constant_node(conv)
    assert _filter_sym_size_users(conv) == list(conv.users)
    assert is_per_tensor(torch.per_tensor_symmetric) and not is_per_tensor(torch.per_channel_symmetric)
    assert is_per_channel(torch.per_channel_affine_float_qparams) and not is_per_channel(None)


def test_new_attribute_names_and_getattr_from_value():
    gm = _export(Mixed())
    new_name = get_new_attr_name_with_prefix("my.const_")
    assert new_name(gm) == "my_const_0"
    with gm.graph.inserting_before(next(iter(gm.graph.nodes))):
        node = create_getattr_from_value(gm, gm.graph, "my.const_", 3.5)
    assert node.op == "get_attr" and node.target == "my_const_0"
    assert torch.equal(gm.my_const_0, torch.tensor(3.5)) and new_name(gm) == "my_const_1"


def test_pattern_graph_has_no_guards_or_dead_code():
    def pattern(x, w):
        unused = x * 2  # noqa: F841
        return F.relu(F.conv2d(x, w))

    gm = _get_aten_graph_module_for_pattern(pattern, (torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1)))
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets == [aten.conv2d.default, aten.relu.default]
    assert not any(n.op == "call_module" for n in gm.graph.nodes) and not hasattr(gm, "_guards_fn")


def test_conv_bn_chain_plain_and_qat_rewritten():
    gm = _export(Mixed())
    conv = _node(gm, aten.conv2d.default)
    assert [n.target for n in _conv_bn_chain(conv)] == [aten.conv2d.default, aten.batch_norm.default]
    assert _conv_bn_chain(_node(gm, aten.conv_transpose2d.input)) is None
    qat = rewrite_conv_bn_for_qat(_export(Mixed(), train=True))
    chain = _conv_bn_chain(_node(qat, aten.conv2d.default))
    assert chain is not None and chain[-1].target == aten.batch_norm.default and len(chain) >= 3
    assert chain[1].target == aten.div.Tensor  # the rescale the QAT rewrite inserts
