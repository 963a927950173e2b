"""Rules lowering int8 elementwise, pooling and concatenation ops.

* ``add``: ``q(relu?(dq(a) + dq(b)))`` -> ``quantized::add[_relu](a, b)``.
* ``cat``: ``q(cat([dq(x_i)], dim))`` -> ``quantized::cat``.
* ``hardswish``: ``q(hardswish(dq(x)))`` -> ``quantized::hardswish``.
* ``avg_pool``: ``q(avg_pool(dq(x)))`` -> average pooling on the quantized tensor (result in
  ``x``'s parameters, rounded in the integer domain), requantized if ``q``'s differ.
* the batched-matmul rules of :mod:`fxquant.lowering.rules.matmul` (fused float attention).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import qmeta, set_qmeta
from fxquant.lowering.rule import (
    LoweringRule,
    Match,
    dequantized_input,
    quantize_node,
    sole_user_is,
)
from fxquant.lowering.rules.matmul import MATMUL_RULES

__all__ = ["ELEMENTWISE_RULES"]

A = torch.ops.aten
Q = torch.ops.quantized
_QUANTIZE = frozenset({A.quantize_per_tensor.default})


def _match_add(node: Node, gm: GraphModule) -> Match | None:
    total, reader = node.args[0], node
    if not isinstance(total, Node):
        return None
    if total.target == A.relu.default and sole_user_is(total, node):
        reader, total = total, total.args[0]
    if not isinstance(total, Node) or total.target != A.add.Tensor or total.kwargs:
        return None
    if not sole_user_is(total, reader) or len(total.args) != 2:
        return None
    a, b = (dequantized_input(x) for x in total.args)
    if a is None or b is None or any(qmeta(x).dtype != torch.quint8 for x in (a, b)):  # type: ignore[union-attr]  # both checked above
        return None
    return {"a": a, "b": b, "relu": reader is not node}


def _rewrite_add(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None
    kernel = Q.add_relu.default if m["relu"] else Q.add.default
    new = gm.graph.call_function(kernel, (m["a"], m["b"], out.scale, out.zero_point))
    return set_qmeta(new, out)


def _match_cat(node: Node, gm: GraphModule) -> Match | None:
    cat = node.args[0]
    if not isinstance(cat, Node) or cat.target != A.cat.default or not sole_user_is(cat, node):
        return None
    inputs = [dequantized_input(x) for x in cat.args[0]]  # type: ignore[union-attr]  # cat's list
    if not inputs or any(x is None for x in inputs):
        return None
    return {"inputs": inputs, "dim": cat.args[1] if len(cat.args) > 1 else 0}


def _rewrite_cat(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None
    new = gm.graph.call_function(Q.cat.default, (m["inputs"], m["dim"], out.scale, out.zero_point))
    return set_qmeta(new, out)


def _unary(target: object) -> Callable[[Node, GraphModule], Match | None]:
    def match(node: Node, gm: GraphModule) -> Match | None:
        op = node.args[0]
        if not isinstance(op, Node) or op.target != target or not sole_user_is(op, node):
            return None
        x = dequantized_input(op.args[0])
        return None if x is None else {"x": x, "op": op}

    return match


def _rewrite_hardswish(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None
    new = gm.graph.call_function(Q.hardswish.default, (m["x"], out.scale, out.zero_point))
    return set_qmeta(new, out)


def _rewrite_pool(node: Node, m: Match, gm: GraphModule) -> Node:
    out, x_meta = qmeta(node), qmeta(m["x"])
    assert out is not None and x_meta is not None
    op: Node = m["op"]
    pooled = gm.graph.call_function(op.target, (m["x"], *op.args[1:]), dict(op.kwargs))  # type: ignore[arg-type]  # call_function target
    set_qmeta(pooled, x_meta)
    if x_meta == out:
        return pooled
    return quantize_node(gm, gm.graph.call_function(A.dequantize.self, (pooled,)), out)


def _pool_rule(target: object) -> LoweringRule:
    return LoweringRule(name=f"{target}", anchors=_QUANTIZE, match=_unary(target),
                        rewrite=_rewrite_pool, exact=False,
                        doc="q(avg_pool(dq x)) -> avg_pool on the quantized tensor")


ELEMENTWISE_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="add", anchors=_QUANTIZE, match=_match_add, rewrite=_rewrite_add, exact=False,
                 doc="q(relu?(dq a + dq b)) -> quantized::add[_relu]"),
    LoweringRule(name="cat", anchors=_QUANTIZE, match=_match_cat, rewrite=_rewrite_cat, exact=False,
                 doc="q(cat([dq x_i])) -> quantized::cat"),
    LoweringRule(name="hardswish", anchors=_QUANTIZE, match=_unary(A.hardswish.default),
                 rewrite=_rewrite_hardswish, exact=False,
                 doc="q(hardswish(dq x)) -> quantized::hardswish"),
    _pool_rule(A.adaptive_avg_pool2d.default),
    _pool_rule(A.avg_pool2d.default),
    *MATMUL_RULES,  # float attention around int8 projections (lowering/rules/matmul.py)
)
