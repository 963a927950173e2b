"""Rules lowering FX graphs' torch-level ops to ops on quantized tensors (``convert_fx``).

Each rule is anchored on the ``torch.quantize_per_tensor`` that ends ``dequantize → op``:

* ``fx_binary``: ``q(relu?(dq a (+|*) dq b))`` → ``torch.ops.quantized.add[_relu]`` /
  ``mul[_relu]`` (``matmul`` without relu) with ``q``'s scale and zero point;
* ``fx_binary_scalar``: ``q(dq x (+|*) scalar)`` → the kernel's scalar form, which picks the
  output parameters itself, as upstream's lowering does;
* ``fx_identity``: eval-mode dropout keeps running, on the quantized tensor;
* ``fx_same_qparams``: pooling, clamps, ReLU, reshapes, ``cat`` run on the quantized tensors
  when every input already has ``q``'s parameters;
* ``fx_fixed_qparams``: sigmoid / tanh / hardsigmoid run on the quantized tensor when ``q``
  asks for exactly the parameters their kernels produce.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.fx.annotate import node_op
from fxquant.lowering.graph import QTensorMeta, qmeta, set_qmeta
from fxquant.lowering.rule import FX, LoweringRule, Match, dequantized_input, sole_producer
from fxquant.lowering.rules.fx_quantized_tensor_ops import (
    IDENTITY_OPS,
    RELU_TARGETS,
    fixed_output_qparams,
    runs_on_quantized_tensor,
)

__all__ = ["FX_OP_RULES", "is_relu"]

_QUANTIZE = frozenset({torch.quantize_per_tensor})
Q = torch.ops.quantized
# (float op, followed by relu) -> quantized kernel
_BINARY: dict[tuple[Any, bool], Any] = {
    (operator.add, False): Q.add, (torch.add, False): Q.add,
    (operator.add, True): Q.add_relu, (torch.add, True): Q.add_relu,
    (operator.mul, False): Q.mul, (torch.mul, False): Q.mul,
    (operator.mul, True): Q.mul_relu, (torch.mul, True): Q.mul_relu,
    (torch.matmul, False): Q.matmul,
}
_BINARY_OPS = frozenset(op for op, _ in _BINARY)
_SCALAR_BINARY = frozenset({operator.add, torch.add, operator.mul, torch.mul})


def is_relu(gm: GraphModule, node: Node | None) -> bool:
    """``node`` is a ReLU: an ``nn.ReLU`` module call, ``F.relu`` / ``torch.relu`` or the
    ``relu`` / ``relu_`` method."""
    if node is None:
        return False
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))) is nn.ReLU
    return (node.op == "call_function" and node.target in RELU_TARGETS) or (
        node.op == "call_method" and node.target in ("relu", "relu_")
    )


def _binary_node(gm: GraphModule, q: Node) -> tuple[Node, bool] | None:
    """The binary op ``q`` quantizes (directly or through a ReLU only it reads), and whether
    the ReLU is there."""
    op = sole_producer(q)
    if op is None:
        return None
    if is_relu(gm, op):
        inner = sole_producer(op)
        return None if inner is None else (inner, True)
    return op, False


def _is_binary(node: Node) -> bool:
    return node.op == "call_function" and node.target in _BINARY_OPS and not node.kwargs


def _match_binary(q: Node, gm: GraphModule) -> Match | None:
    found = _binary_node(gm, q)
    if found is None or not _is_binary(found[0]):
        return None
    node, relu = found
    a, b = (dequantized_input(x) for x in (*node.args, None, None)[:2])
    kernel = _BINARY.get((node.target, relu))
    if a is None or b is None or kernel is None:
        return None
    return {"kernel": kernel, "a": a, "b": b}


def _quantized_call(q: Node, gm: GraphModule, target: Any, args: tuple[Any, ...]) -> Node:
    """``target(*args)`` producing the quantized tensor ``q`` stood for."""
    meta = qmeta(q)
    assert meta is not None  # anchors are tensorized quantize nodes
    new = gm.graph.call_function(target, args)
    new.meta.update(q.meta)
    return set_qmeta(new, meta)


def _rewrite_binary(q: Node, m: Match, gm: GraphModule) -> Node:
    meta = qmeta(q)
    assert meta is not None
    return _quantized_call(q, gm, m["kernel"], (m["a"], m["b"], meta.scale, meta.zero_point))


def _match_binary_scalar(q: Node, gm: GraphModule) -> Match | None:
    node = sole_producer(q)
    if node is None or not _is_binary(node) or node.target not in _SCALAR_BINARY or len(node.args) != 2:
        return None
    first, second = node.args
    x, scalar = (dequantized_input(first), second) if isinstance(first, Node) else (dequantized_input(second), first)
    if x is None or not isinstance(scalar, (int, float)) or isinstance(scalar, bool):
        return None
    return {"kernel": _BINARY[(node.target, False)], "x": x, "scalar": scalar}


def _rewrite_binary_scalar(q: Node, m: Match, gm: GraphModule) -> Node:
    return _quantized_call(q, gm, m["kernel"], (m["x"], m["scalar"]))


def _dequantized_inputs(node: Node) -> list[Node] | None:
    """The dequantize nodes feeding ``node``'s first argument (a node or a list of nodes, as
    for ``cat``) when each reads a quantized tensor, else None."""
    first = node.args[0] if node.args else None
    items = list(first) if isinstance(first, (list, tuple)) else [first]
    if not items or any(dequantized_input(x) is None for x in items):
        return None
    return items  # type: ignore[return-value]  # each is a dequantize Node, checked above


Accepts = Callable[[Any, list[QTensorMeta | None], QTensorMeta], bool]
Matcher = Callable[[Node, GraphModule], Match | None]


def _passthrough(accepts: Accepts) -> Matcher:
    """A matcher for ``q(op(dq x, ...))`` where ``accepts(op, inputs' metas, q's meta)``; an
    input's meta is None where the graph does not say its parameters."""

    def match(q: Node, gm: GraphModule) -> Match | None:
        node, out = sole_producer(q), qmeta(q)
        if node is None or out is None:
            return None
        dqs = _dequantized_inputs(node)
        if dqs is None or not accepts(node_op(gm, node), [qmeta(d.args[0]) for d in dqs], out):
            return None
        return {"node": node, "dqs": dqs}

    return match


def _is_identity(op: Any, inputs: list[QTensorMeta | None], out: QTensorMeta) -> bool:
    # the output keeps the input's parameters, as upstream's lowering leaves it
    return _known(op, IDENTITY_OPS)


def _keeps_qparams(op: Any, inputs: list[QTensorMeta | None], out: QTensorMeta) -> bool:
    # lowered only when every input's parameters are known to equal the output's
    return runs_on_quantized_tensor(op) and all(meta == out for meta in inputs)


def _has_fixed_qparams(op: Any, inputs: list[QTensorMeta | None], out: QTensorMeta) -> bool:
    fixed = fixed_output_qparams(op, out.dtype)
    return fixed is not None and len(inputs) == 1 and (float(fixed[0]), int(fixed[1])) == (out.scale, out.zero_point)


def _known(op: Any, ops: frozenset[Any]) -> bool:
    try:
        return op in ops
    except TypeError:  # an unhashable target is no known op
        return False


def _rewrite_passthrough(q: Node, m: Match, gm: GraphModule) -> Node:
    """``op`` now reads the quantized tensors and produces ``q``'s."""
    node: Node = m["node"]
    for dq in dict.fromkeys(m["dqs"]):
        node.replace_input_with(dq, dq.args[0])
    meta = qmeta(q)
    assert meta is not None
    return set_qmeta(node, meta)


def _rule(name: str, match: Matcher, rewrite: Callable[[Node, Match, GraphModule], Node], doc: str, *,
          exact: bool = True) -> LoweringRule:
    return LoweringRule(name=name, anchors=_QUANTIZE, match=match, rewrite=rewrite, exact=exact,
                        dialects=FX, doc=doc)


FX_OP_RULES: tuple[LoweringRule, ...] = (
    _rule("fx_binary", _match_binary, _rewrite_binary, "q(relu?(dq a +|*|@ dq b)) -> quantized.add/mul[_relu]/matmul",
          exact=False),
    _rule("fx_binary_scalar", _match_binary_scalar, _rewrite_binary_scalar,
          "q(dq x +|* scalar) -> quantized.add/mul(x, scalar)", exact=False),
    _rule("fx_identity", _passthrough(_is_identity), _rewrite_passthrough,
          "q(dropout(dq x)) -> dropout(x) on the quantized tensor"),
    _rule("fx_same_qparams", _passthrough(_keeps_qparams), _rewrite_passthrough,
          "q(op(dq x..)) -> op(x..) when x.. have q's qparams (pool/clamp/reshape/cat)", exact=False),
    _rule("fx_fixed_qparams", _passthrough(_has_fixed_qparams), _rewrite_passthrough,
          "q(sigmoid|tanh|hardsigmoid(dq x)) -> op(x) when q has the kernel's fixed qparams",
          exact=False),
)
