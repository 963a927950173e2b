"""Rules lowering int8 linears to ``quantized::linear*`` with pre-packed weights.

* ``linear``: ``q(relu?(linear(dq(x), dq(W), b)))`` -> ``quantized::linear[_relu](x, packed)``.
* ``linear_float_out``: ``linear(dq(x), dq(W), b)`` read in float -> ``quantized::
  linear_with_input_q_dq_qweight_dq_output_fp32(float x, scale, zero_point, packed)`` (int8
  GEMM, float result: what the reference computes, without the float weight).
* ``linear_dynamic``: ``linear(dq(q(x, choose_qparams(x))), dq(W), b)`` ->
  ``quantized::linear_dynamic(x, packed)`` (parameters chosen per call inside the kernel).
"""

from __future__ import annotations

import logging

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import add_constant, constant_value, qmeta, set_qmeta
from fxquant.lowering.rule import LoweringRule, Match, arg, dequantized_input, sole_user_is
from fxquant.lowering.weights import pack_linear, quantized_weight
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["LINEAR_RULES"]

A = torch.ops.aten
Q = torch.ops.quantized
logger = logging.getLogger(__name__)


def _packed_weight(linear: Node, gm: GraphModule) -> object | None:
    weight = quantized_weight(gm, arg(linear, 1, "weight"))
    bias_node = arg(linear, 2, "bias")
    bias = constant_value(gm, bias_node)
    if weight is None or weight.dim() != 2 or (bias_node is not None and bias is None):
        return None
    try:
        return pack_linear(weight, bias)
    except RuntimeError as e:  # the kernel library refuses this weight
        logger.debug("%s stays in float: %s", linear.format_node(), e)
        return None


def _uint8_input(linear: Node) -> Node | None:
    x = dequantized_input(linear.args[0])
    meta = qmeta(x)
    return x if meta is not None and meta.dtype == torch.quint8 else None


def _match_linear(node: Node, gm: GraphModule) -> Match | None:
    y, relu = node.args[0], None
    if qmeta(node) is None or not isinstance(y, Node):
        return None
    if y.target == A.relu.default and sole_user_is(y, node):
        relu, y = y, y.args[0]
    if not isinstance(y, Node) or y.target != A.linear.default:
        return None
    if not sole_user_is(y, node if relu is None else relu):
        return None
    x = _uint8_input(y)
    packed = None if x is None else _packed_weight(y, gm)
    return None if packed is None else {"x": x, "packed": packed, "relu": relu is not None}


def _rewrite_linear(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None
    packed = add_constant(gm, "packed_linear", m["packed"], node)
    kernel = Q.linear_relu.default if m["relu"] else Q.linear.default
    new = gm.graph.call_function(kernel, (m["x"], packed, out.scale, out.zero_point))
    return set_qmeta(new, out)


def _match_linear_float_out(node: Node, gm: GraphModule) -> Match | None:
    x = _uint8_input(node)
    meta = qmeta(x)
    packed = None if x is None or meta is None else _packed_weight(node, gm)
    if x is None or meta is None or packed is None:
        return None
    # the kernel quantizes a float input itself: give it the float that x quantized, or
    # x dequantized (on x's grid, so quantizing it again gives x's integers back)
    source = x.args[0] if x.target == A.quantize_per_tensor.default else node.args[0]
    return {"x": source, "scale": meta.scale, "zero_point": meta.zero_point, "packed": packed}


def _rewrite_linear_float_out(node: Node, m: Match, gm: GraphModule) -> Node:
    packed = add_constant(gm, "packed_linear", m["packed"], node)
    return gm.graph.call_function(
        Q.linear_with_input_q_dq_qweight_dq_output_fp32.default,
        (m["x"], m["scale"], m["zero_point"], packed),
    )


def _dynamic_input(linear: Node) -> Node | None:
    """``x`` of ``dq(q(x, *choose_qparams(x)))`` with uint8 [0, 255], else None."""
    dq = linear.args[0]
    if not isinstance(dq, Node) or dq.target != qd.dequantize_per_tensor.tensor:
        return None
    q = dq.args[0]
    if not isinstance(q, Node) or q.target != qd.quantize_per_tensor.tensor:
        return None
    x, scale, zero_point = q.args[:3]
    if not (isinstance(scale, Node) and isinstance(zero_point, Node)):
        return None
    chooser = scale.args[0] if scale.target.__name__ == "getitem" else None  # type: ignore[union-attr]  # call_function target
    if not isinstance(chooser, Node) or chooser.target != qd.choose_qparams.tensor:
        return None
    if zero_point.args != (chooser, 1) or chooser.args[0] is not x or tuple(q.args[3:6]) != (0, 255, torch.uint8):
        return None
    return x if isinstance(x, Node) else None


def _match_linear_dynamic(node: Node, gm: GraphModule) -> Match | None:
    x = _dynamic_input(node)
    packed = None if x is None else _packed_weight(node, gm)
    return None if packed is None else {"x": x, "packed": packed}


def _rewrite_linear_dynamic(node: Node, m: Match, gm: GraphModule) -> Node:
    packed = add_constant(gm, "packed_linear", m["packed"], node)
    return gm.graph.call_function(Q.linear_dynamic.default, (m["x"], packed, False))


LINEAR_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="linear", anchors=frozenset({A.quantize_per_tensor.default}),
                 match=_match_linear, rewrite=_rewrite_linear,
                 doc="q(relu?(linear(dq x, dq W))) -> quantized::linear[_relu]"),
    LoweringRule(name="linear_dynamic", anchors=frozenset({A.linear.default}),
                 match=_match_linear_dynamic, rewrite=_rewrite_linear_dynamic, exact=False,
                 doc="linear(dq(q(x, choose_qparams(x))), dq W) -> quantized::linear_dynamic"),
    LoweringRule(name="linear_float_out", anchors=frozenset({A.linear.default}), stage=2,
                 match=_match_linear_float_out, rewrite=_rewrite_linear_float_out, exact=False,
                 doc="float linear(dq(q x), dq W) -> int8 GEMM with float output"),
)
