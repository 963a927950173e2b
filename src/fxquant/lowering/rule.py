"""One lowering rule: a matcher on the converted graph and the rewrite that replaces the match.

A rule is anchored on one op (usually the ``quantize`` that ends a float region, the way
upstream's reference patterns end): ``match(anchor, gm)`` looks at the nodes feeding the
anchor and returns what the rewrite needs (or None), ``rewrite(anchor, match, gm)`` inserts the
replacement before the anchor and returns the node that takes over the anchor's uses (or the
anchor itself, rewritten in place). The float nodes the match consumed become dead and are
removed by the loop in :mod:`fxquant.lowering.lower`. Rules are applied stage by stage (lower
stages first, each to a fixed point) so that, e.g., weights are only turned into float
constants after every kernel rule had its chance to take them in int8.

Anchors are the targets of ``call_function`` nodes (op overloads, torch functions) or, for
``call_module`` nodes, module classes. A rule serves the graph dialects it names: exported
aten graphs (:attr:`Dialect.PT2E`, from ``convert_pt2e``) and/or FX graphs of torch-level
calls and modules (:attr:`Dialect.FX`, from ``convert_fx``). Their int8 values are the same
quantized tensors: ``quantize_per_tensor`` nodes carrying one :class:`QTensorMeta`, read back
by ``dequantize`` (the aten op in exported graphs, the ``Tensor.dequantize`` method in FX
graphs, as upstream prints them); :func:`dequantized_input` recognises both.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import QTensorMeta, add_constant, qmeta, set_qmeta

__all__ = [
    "ALL_DIALECTS",
    "FX",
    "PT2E",
    "Dialect",
    "LoweringRule",
    "Match",
    "arg",
    "call_packed_kernel",
    "dequantized_input",
    "is_activation",
    "is_dequantize",
    "quantize_node",
    "quint8_activations",
    "relu_fusion_is_exact",
    "sole_producer",
    "sole_user_is",
]

A = torch.ops.aten
Match = Mapping[str, Any]


class Dialect(enum.Enum):
    """The kind of converted graph a rule applies to."""

    PT2E = "pt2e"  # exported aten graph (convert_pt2e)
    FX = "fx"  # symbolically traced graph of torch functions, methods and modules (convert_fx)


PT2E = frozenset({Dialect.PT2E})
FX = frozenset({Dialect.FX})
ALL_DIALECTS = frozenset(Dialect)


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
    dialects: frozenset[Dialect] = PT2E

    def __post_init__(self) -> None:
        if not self.name or not self.anchors:
            raise ValueError("a LoweringRule needs a name and at least one anchor op")
        if not self.dialects or not all(isinstance(d, Dialect) for d in self.dialects):
            raise ValueError(
                f"LoweringRule {self.name!r}: dialects must be a non-empty set of Dialect members, "
                f"got {set(self.dialects)!r}"
            )


def arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` (or keyword ``name``) of ``node``, else ``default``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def sole_user_is(node: object, user: Node) -> bool:
    """``node`` is a call whose value is read by ``user`` only (safe to fold into it)."""
    return isinstance(node, Node) and node.op == "call_function" and set(node.users) == {user}


def sole_producer(node: Node) -> Node | None:
    """The call node ``node`` reads as its first argument, if ``node`` is its only reader (the
    op a ``quantize`` anchor ends)."""
    src = node.args[0] if node.args else None
    if not isinstance(src, Node) or src.op not in ("call_function", "call_method", "call_module"):
        return None
    return src if set(src.users) == {node} else None


def is_dequantize(node: object) -> bool:
    """``node`` turns a quantized tensor back to float: ``aten.dequantize.self`` (exported
    graphs) or the ``Tensor.dequantize`` method (FX graphs)."""
    if not isinstance(node, Node):
        return False
    if node.op == "call_method":
        return node.target == "dequantize"
    return node.op == "call_function" and node.target == A.dequantize.self


def dequantized_input(node: object) -> Node | None:
    """If ``node`` is ``x.dequantize()`` of a quantized tensor node ``x``, return ``x``.

    In exported graphs ``x`` is a node the rules made, with known parameters (:func:`qmeta`).
    An FX graph's ``dequantize`` method may also read quantized tensors whose parameters the
    graph does not say (a quantized input, a standalone or custom module's output), as
    upstream's FX lowering assumes: then ``qmeta(x)`` is None."""
    if not isinstance(node, Node) or not is_dequantize(node):
        return None
    src = node.args[0]
    if not isinstance(src, Node):
        return None
    return src if node.op == "call_method" or qmeta(src) is not None else None


def call_packed_kernel(
    anchor: Node, gm: GraphModule, kernel: Any, x: Node, packed: object, prefix: str
) -> Node:
    """``kernel(x, packed, scale, zero_point)`` with the anchor's output parameters, its packed
    weights stored as a constant of ``gm`` (the call shape of torch's quantized conv/linear)."""
    out = qmeta(anchor)
    assert out is not None  # anchors of kernel rules are tensorized quantize nodes
    weights = add_constant(gm, prefix, packed, anchor)
    new = gm.graph.call_function(kernel, (x, weights, out.scale, out.zero_point))
    return set_qmeta(new, out)


def quint8_activations(q: Node, dequantizes: list[Any]) -> bool:
    """Whether ``q`` and the values the ``dequantizes`` read are quint8 (or of unknown
    parameters): torch's quantized CPU modules and kernels take and give quint8 activations
    only. With qint8 ones (e.g. the symmetric qnnpack qconfigs) an op stays in its reference
    form, whose numbers are right, instead of becoming a kernel that fails when called (as
    upstream's lowering does)."""
    out = qmeta(q)
    if out is None or out.dtype != torch.quint8:
        return False
    for dq in dequantizes:
        src = dequantized_input(dq)
        meta = qmeta(src) if src is not None else None
        if meta is not None and meta.dtype != torch.quint8:
            return False
    return True


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
