"""Rules for the int8/float boundaries themselves.

* ``quantize``: a full-range ``quantized_decomposed.quantize_per_tensor`` with constant
  parameters becomes ``torch.quantize_per_tensor`` (its value a ``torch.quint8``/``qint8``
  tensor), and a ``dequantize`` of such a value becomes ``Tensor.dequantize``. Restricted
  ranges (e.g. [0, 127]) have no quantized-tensor form and stay as they are.
* ``fx_quantize``: the same for FX graphs, as upstream's ``convert_fx`` does it: every
  per-tensor quantize with constant parameters becomes a ``torch.quantize_per_tensor`` call;
  the observer's restricted range (x86's ``reduce_range`` [0, 127]) is dropped, the kernels
  clamp to the dtype's full range.
* ``dequantize`` (both dialects): the dequantize of such a quantized tensor, at its
  quantize's level (``aten.dequantize`` in exported graphs; in FX graphs one
  ``Tensor.dequantize`` method call per reader, as upstream's ``convert_fx`` prints them).
* ``requantize`` (both dialects): ``quantize(dequantize(x))`` with ``x``'s own parameters is ``x``.
* ``sink_quantize``: ``quantize(op(y)) -> op(quantize(y))`` for ops that commute exactly with
  a monotone rounding (max pooling, relu, zero padding, reshapes), so that the quantize meets
  the kernel that produced ``y`` (conv -> relu6 -> pad -> q becomes conv_relu -> pad).
* ``dropout``: eval-mode ``dropout`` is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import QTensorMeta, qmeta, set_qmeta
from fxquant.lowering.kernels import zero_pad
from fxquant.lowering.rule import (
    ALL_DIALECTS,
    FX,
    LoweringRule,
    Match,
    arg,
    dequantized_input,
    quantize_node,
)
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["BOUNDARY_RULES", "COMMUTING_OPS", "is_eval_dropout"]

A = torch.ops.aten
_QDTYPES = {torch.uint8: (torch.quint8, 0, 255), torch.int8: (torch.qint8, -128, 127)}
_FX_QDTYPES = {torch.uint8: torch.quint8, torch.int8: torch.qint8, torch.int32: torch.qint32}


def _match_quantize(node: Node, gm: GraphModule) -> Match | None:
    if len(node.args) != 6 or node.kwargs:
        return None
    x, scale, zero_point, qmin, qmax, dtype = node.args
    if not isinstance(dtype, torch.dtype) or dtype not in _QDTYPES:
        return None
    if not isinstance(scale, float) or not isinstance(zero_point, int):
        return None
    qdtype, lo, hi = _QDTYPES[dtype]
    if (qmin, qmax) != (lo, hi) or not lo <= zero_point <= hi or not scale > 0:
        return None
    return {"x": x, "meta": QTensorMeta(scale=scale, zero_point=zero_point, dtype=qdtype)}


def _rewrite_quantize(node: Node, m: Match, gm: GraphModule) -> Node:
    meta: QTensorMeta = m["meta"]
    new = gm.graph.call_function(
        A.quantize_per_tensor.default, (m["x"], meta.scale, meta.zero_point, meta.dtype)
    )
    return set_qmeta(new, meta)


def _match_fx_quantize(node: Node, gm: GraphModule) -> Match | None:
    if node.kwargs:
        return None
    dtype: object
    if node.target is torch.quantize_per_tensor:
        # already a quantized-tensor op (a standalone module's quantized output): described once
        if len(node.args) != 4 or qmeta(node) is not None:
            return None
        x, scale, zero_point, qdtype = node.args
        dtype = next((k for k, v in _FX_QDTYPES.items() if v == qdtype), None)
    elif len(node.args) == 6:
        x, scale, zero_point, _, _, dtype = node.args
    else:
        return None
    if not isinstance(dtype, torch.dtype) or dtype not in _FX_QDTYPES:
        return None
    if not isinstance(scale, (float, int)) or not isinstance(zero_point, int) or not scale > 0:
        return None
    return {"x": x, "meta": QTensorMeta(scale=float(scale), zero_point=zero_point, dtype=_FX_QDTYPES[dtype])}


def _rewrite_fx_quantize(node: Node, m: Match, gm: GraphModule) -> Node:
    meta: QTensorMeta = m["meta"]
    if node.target is torch.quantize_per_tensor:
        return set_qmeta(node, meta)  # in place
    new = gm.graph.call_function(torch.quantize_per_tensor, (m["x"], meta.scale, meta.zero_point, meta.dtype))
    new.meta.update(node.meta)
    return set_qmeta(new, meta)


def _match_dequantize(node: Node, gm: GraphModule) -> Match | None:
    src = node.args[0]
    meta = qmeta(src)
    if meta is None or len(node.args) != 6 or node.kwargs:
        return None
    scale, zero_point = node.args[1:3]
    if (scale, zero_point) != (meta.scale, meta.zero_point):
        return None
    return {"x": src}


def _rewrite_dequantize(node: Node, m: Match, gm: GraphModule) -> Node:
    x: Node = m["x"]
    if x.target is not torch.quantize_per_tensor:
        return gm.graph.call_function(A.dequantize.self, (x,))
    # an FX graph: the method, as upstream prints it, one per reader (as upstream's convert
    # inserts them), so that each op's dequantize -> op -> quantize pattern is its own
    first = gm.graph.call_method("dequantize", (x,))
    first.meta.update(node.meta)
    for user in list(node.users)[1:]:
        with gm.graph.inserting_before(user):
            copy = gm.graph.call_method("dequantize", (x,))
        copy.meta.update(node.meta)
        user.replace_input_with(node, copy)
    return first


def _match_requantize(node: Node, gm: GraphModule) -> Match | None:
    src = dequantized_input(node.args[0])
    if src is None or qmeta(src) != qmeta(node):
        return None
    return {"x": src}


def _same(node: Node, m: Match, gm: GraphModule) -> Node:
    result: Node = m["x"]
    return result


# ops with op(q(y)) == q(op(y)) for a monotone q with q(0) = zero_point; condition on args
def _zero_pad(node: Node) -> bool:
    if node.target == A.constant_pad_nd.default:
        return arg(node, 2, "value", 0) in (0, 0.0)
    return arg(node, 2, "mode", "constant") == "constant" and arg(node, 3, "value", None) in (None, 0, 0.0)


COMMUTING_OPS: dict[object, Callable[[Node], bool]] = {
    A.pad.default: _zero_pad,
    A.constant_pad_nd.default: _zero_pad,
    A.max_pool2d.default: lambda n: True,
    A.relu.default: lambda n: True,
    A.flatten.using_ints: lambda n: True,
    A.view.default: lambda n: True,
    A.reshape.default: lambda n: True,
    A.permute.default: lambda n: True,
    A.transpose.int: lambda n: True,
    A.unflatten.int: lambda n: True,
    A.squeeze.dim: lambda n: True,
    A.unsqueeze.default: lambda n: True,
}


def _match_sink(node: Node, gm: GraphModule) -> Match | None:
    op = node.args[0]
    if not isinstance(op, Node) or op.op != "call_function" or set(op.users) != {node}:
        return None
    condition = COMMUTING_OPS.get(op.target)
    y = op.args[0] if op.args else None
    if condition is None or not condition(op) or not isinstance(y, Node):
        return None
    return {"op": op, "y": y}


def _rewrite_sink(node: Node, m: Match, gm: GraphModule) -> Node:
    meta = qmeta(node)
    assert meta is not None  # anchors are tensorized quantize nodes
    op: Node = m["op"]
    quantized = quantize_node(gm, m["y"], meta)
    if op.target in (A.pad.default, A.constant_pad_nd.default):
        new = gm.graph.call_function(zero_pad, (quantized, op.args[1]))
    else:
        new = gm.graph.call_function(op.target, (quantized, *op.args[1:]), dict(op.kwargs))  # type: ignore[arg-type]  # call_function target
    return set_qmeta(new, meta)


def is_eval_dropout(node: Node) -> bool:
    """A dropout call with ``train=False``: the identity, removed by the ``dropout_eval`` rule."""
    return arg(node, 2, "train", True) is False


def _match_dropout(node: Node, gm: GraphModule) -> Match | None:
    return {"x": node.args[0]} if is_eval_dropout(node) else None


BOUNDARY_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="dropout_eval", anchors=frozenset({A.dropout.default}), stage=0,
                 match=_match_dropout, rewrite=_same, doc="eval dropout -> identity"),
    LoweringRule(name="quantize", anchors=frozenset({qd.quantize_per_tensor.default}), stage=0,
                 match=_match_quantize, rewrite=_rewrite_quantize, exact=False,
                 doc="q -> torch.quantize_per_tensor (quantized tensor)"),
    LoweringRule(name="fx_quantize", anchors=frozenset({qd.quantize_per_tensor.default, torch.quantize_per_tensor}),
                 stage=0,
                 match=_match_fx_quantize, rewrite=_rewrite_fx_quantize, exact=False, dialects=FX,
                 doc="q -> torch.quantize_per_tensor, any observed range (as upstream convert_fx)"),
    LoweringRule(name="dequantize", anchors=frozenset({qd.dequantize_per_tensor.default}), stage=0,
                 match=_match_dequantize, rewrite=_rewrite_dequantize, dialects=ALL_DIALECTS,
                 doc="dq of a quantized tensor -> Tensor.dequantize"),
    LoweringRule(name="requantize",
                 anchors=frozenset({A.quantize_per_tensor.default, torch.quantize_per_tensor}),
                 match=_match_requantize, rewrite=_same, dialects=ALL_DIALECTS,
                 doc="q(dq(x)) with x's qparams -> x"),
    LoweringRule(name="sink_quantize", anchors=frozenset({A.quantize_per_tensor.default}),
                 match=_match_sink, rewrite=_rewrite_sink,
                 doc="q(op(y)) -> op(q(y)) for pad/max_pool/relu/reshapes"),
)
