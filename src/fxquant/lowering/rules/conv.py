"""Rules lowering int8 convolutions to ``quantized::conv2d`` with pre-packed weights.

* ``conv2d``:  ``q(act?(conv2d(dq(x), dq(W), b)))`` -> ``quantized::conv2d[_relu](x, packed)``
  where ``act`` is relu, or relu6 when the output range makes the fusion exact.
* ``conv2d_add``: ``q(relu?(conv2d(dq(x), dq(W), b) + dq(y)))`` -> oneDNN's
  ``quantized::conv2d_add[_relu](x, y, packed)`` (see :mod:`fxquant.lowering.kernels`). The
  kernel accumulates into ``y``'s buffer when it is channels-last: ``y`` is cloned first
  unless this is its last reader.

Weights are packed for oneDNN (fast for every depthwise shape).
"""

from __future__ import annotations

import logging

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import add_constant, constant_value, qmeta, set_qmeta
from fxquant.lowering.kernels import HAS_ONEDNN, conv2d_add, conv2d_add_relu, pack_conv2d
from fxquant.lowering.rule import (
    LoweringRule,
    Match,
    arg,
    dequantized_input,
    is_activation,
    relu_fusion_is_exact,
    sole_user_is,
)
from fxquant.lowering.weights import quantized_weight

__all__ = ["CONV_RULES"]

A = torch.ops.aten
Q = torch.ops.quantized
logger = logging.getLogger(__name__)


def _conv_operands(conv: object, gm: GraphModule) -> Match | None:
    """Input quantized-tensor node and packed weights of ``conv2d(dq(x), dq(W), b, ...)``."""
    if not isinstance(conv, Node) or conv.target != A.conv2d.default:
        return None
    x = dequantized_input(conv.args[0])
    weight = quantized_weight(gm, arg(conv, 1, "weight"))
    bias_node = arg(conv, 2, "bias")
    bias = constant_value(gm, bias_node)
    x_meta = qmeta(x)
    if x is None or x_meta is None or x_meta.dtype != torch.quint8 or weight is None:
        return None
    if weight.dim() != 4 or (bias_node is not None and bias is None):
        return None
    try:
        packed = pack_conv2d(
            weight, bias, arg(conv, 3, "stride", [1, 1]), arg(conv, 4, "padding", [0, 0]),
            arg(conv, 5, "dilation", [1, 1]), arg(conv, 6, "groups", 1),
        )
    except RuntimeError as e:  # the kernel library refuses this weight (e.g. asymmetric)
        logger.debug("%s stays in float: %s", conv.format_node(), e)
        return None
    return {"x": x, "packed": packed}


def _match_conv(node: Node, gm: GraphModule) -> Match | None:
    out = qmeta(node)
    y, act = node.args[0], None
    if out is None or not isinstance(y, Node):
        return None
    if is_activation(y) and sole_user_is(y, node):
        if not relu_fusion_is_exact(y, out):
            return None
        act, y = y, y.args[0]
    if not sole_user_is(y, node if act is None else act):
        return None
    operands = _conv_operands(y, gm)
    return None if operands is None else {**operands, "relu": act is not None}


def _rewrite_conv(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None
    packed = add_constant(gm, "packed_conv", m["packed"], node)
    kernel = Q.conv2d_relu.new if m["relu"] else Q.conv2d.new
    new = gm.graph.call_function(kernel, (m["x"], packed, out.scale, out.zero_point))
    return set_qmeta(new, out)


def _match_conv_add(node: Node, gm: GraphModule) -> Match | None:
    out = qmeta(node)
    total, reader = node.args[0], node
    if out is None or not isinstance(total, Node):
        return None
    if total.target == A.relu.default and sole_user_is(total, node):
        reader, total = total, total.args[0]
    if not isinstance(total, Node) or total.target != A.add.Tensor or total.kwargs:
        return None
    if not sole_user_is(total, reader):
        return None
    relu = reader is not node
    if not HAS_ONEDNN:
        return None
    for conv, other in (total.args, total.args[::-1]):
        y = dequantized_input(other)
        if y is not None and sole_user_is(conv, total):
            operands = _conv_operands(conv, gm)
            if operands is not None:
                fresh = operands["x"] is not y and _read_last_here(y, total, node)
                return {**operands, "y": y, "relu": relu, "overwrite_y": fresh}
    return None


def _read_last_here(y: Node, add: Node, anchor: Node) -> bool:
    """Whether every other reader of ``y`` (directly or through a dequantize) runs before
    ``anchor``: then the kernel may accumulate into ``y``'s buffer."""
    order = {n: i for i, n in enumerate(anchor.graph.nodes)}
    readers = [u for d in y.users for u in (d.users if d.target == A.dequantize.self else [d])]
    return all(u is add or order[u] < order[anchor] for u in readers)


def _rewrite_conv_add(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None
    packed = add_constant(gm, "packed_conv", m["packed"], node)
    y = m["y"]
    if not m["overwrite_y"]:  # oneDNN sums into the residual's buffer (channels-last) in place
        y = set_qmeta(gm.graph.call_function(A.clone.default, (y,)), qmeta(y))  # type: ignore[arg-type]  # y is quantized
    kernel = conv2d_add_relu if m["relu"] else conv2d_add
    new = gm.graph.call_function(kernel, (m["x"], y, packed, out.scale, out.zero_point))
    return set_qmeta(new, out)


_QUANTIZE = frozenset({A.quantize_per_tensor.default})

CONV_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="conv2d", anchors=_QUANTIZE, match=_match_conv, rewrite=_rewrite_conv,
                 doc="q(act?(conv2d(dq x, dq W))) -> quantized::conv2d[_relu]"),
    LoweringRule(name="conv2d_add", anchors=_QUANTIZE, match=_match_conv_add,
                 rewrite=_rewrite_conv_add,
                 doc="q(relu?(conv2d(dq x, dq W) + dq y)) -> quantized::conv2d_add[_relu]"),
)
