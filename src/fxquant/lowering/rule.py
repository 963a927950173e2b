"""One lowering rule: a matcher on the converted graph and the rewrite that replaces the match.

A rule is anchored on one op (usually the ``quantize`` that ends a float region, the way
upstream's reference patterns end): ``match(anchor, gm)`` looks at the nodes feeding the
anchor and returns what the rewrite needs (or None), ``rewrite(anchor, match, gm)`` inserts the
replacement before the anchor and returns the node that takes over the anchor's uses. The
float nodes the match consumed become dead and are removed by the loop in
:mod:`fxquant.lowering.lower`. Rules are applied stage by stage (lower stages first, each to a
fixed point) so that, e.g., weights are only turned into float constants after every kernel
rule had its chance to take them in int8.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import QTensorMeta, qmeta, set_qmeta

__all__ = [
    "LoweringRule",
    "Match",
    "arg",
    "dequantized_input",
    "is_activation",
    "quantize_node",
    "relu_fusion_is_exact",
    "sole_user_is",
]

A = torch.ops.aten
Match = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoweringRule:
    """A pattern -> replacement rule of the int8 lowering table."""

    name: str
    anchors: frozenset[Any]  # op overloads the anchor node may call
    match: Callable[[Node, GraphModule], Match | None]
    rewrite: Callable[[Node, Match, GraphModule], Node]
    stage: int = 1
    exact: bool = True  # bit-exact to the reference graph, else within one output step
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.anchors:
            raise ValueError("a LoweringRule needs a name and at least one anchor op")


def arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` (or keyword ``name``) of ``node``, else ``default``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def sole_user_is(node: object, user: Node) -> bool:
    """``node`` is a call whose value is read by ``user`` only (safe to fold into it)."""
    return isinstance(node, Node) and node.op == "call_function" and set(node.users) == {user}


def dequantized_input(node: object) -> Node | None:
    """If ``node`` is ``x.dequantize()`` of a quantized tensor node ``x``, return ``x``."""
    if isinstance(node, Node) and node.target == A.dequantize.self and qmeta(node.args[0]):
        src = node.args[0]
        return src if isinstance(src, Node) else None
    return None


def quantize_node(gm: GraphModule, value: Node, meta: QTensorMeta) -> Node:
    """A ``torch.quantize_per_tensor(value, ...)`` node with ``meta``'s parameters, inserted
    after ``value``."""
    with gm.graph.inserting_after(value):
        node = gm.graph.call_function(
            A.quantize_per_tensor.default, (value, meta.scale, meta.zero_point, meta.dtype)
        )
    return set_qmeta(node, meta)


# relu6 as the x86 quantizer observes it (after the clamp): for y >= 0,
#   q(clamp(y, 0, 6)) = clamp(round(min(y, 6) / s) + zp, qmin, qmax)
# equals the relu-fused kernel's clamp(round(y / s) + zp, zp, qmax) exactly when zp = qmin
# (0 maps to the bottom of the range) and q(6) = qmax (6 is at or above its top).
_RELU = {A.relu.default}
_CLAMP_0_6 = {A.hardtanh.default, A.clamp.default, A.relu6.default}


def relu_fusion_is_exact(act: Node, out: QTensorMeta) -> bool:
    """Whether ``q(act(y))`` with ``out``'s parameters equals a relu-fused int8 kernel's
    output: always for relu; for relu6 (``relu6``, ``hardtanh(0, 6)``, ``clamp(0, 6)``) when the output
    range is [0, <= 6]."""
    if act.target in _RELU:
        return True
    if act.target not in _CLAMP_0_6:
        return False
    if act.target == A.relu6.default:
        low, high = 0, 6.0
    elif act.target == A.hardtanh.default:
        low, high = arg(act, 1, "min_val", -1.0), arg(act, 2, "max_val", 1.0)
    else:
        low, high = arg(act, 1, "min", None), arg(act, 2, "max", None)
    if low != 0 or high is None or high <= 0:
        return False
    return out.zero_point == out.qmin and out.quantize(float(high)) == out.qmax


def is_activation(node: object) -> bool:
    """relu, hardtanh or clamp: the post-ops a relu-fused kernel may absorb."""
    return isinstance(node, Node) and node.target in _RELU | _CLAMP_0_6
