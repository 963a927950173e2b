"""Evaluating a converted (q/dq) graph against its float original, node by node.

Three walks over graphs exported by ``torch.export`` whose nodes carry numeric debug handles
(:func:`fxquant.pt2e._numeric_debugger.generate_numeric_debug_handle`):

- :func:`run_float`: every node's value in the float graph, keyed by handle.
- :func:`run_quantized`: the quantized graph, also evaluating each quantized op *locally* —
  on the float model's activations, quantized by the q/dq nodes in front of the op, with its
  quantized weights, followed by its own output q/dq (only this op quantized).
- :func:`run_with_float_ops`: the quantized graph with some ops put back in float: their
  weights float, and the q/dq around them dropped unless a neighbour still asks for it.

The quantization "machinery" is the ``quantized_decomposed`` quantize/dequantize ops (and the
``choose_qparams`` + ``getitem`` of dynamic quantization); everything else is an op.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.fx import GraphModule, Node
from torch.fx.node import map_aggregate, map_arg
from torch.utils import _pytree as pytree

from fxquant.engine.constants import get_attr_value
from fxquant.numerics.ops import ensure_registered
from fxquant.pt2e._numeric_debugger import get_debug_key
from fxquant.pt2e.quantizer.float_fallback import kept_float_reason
from fxquant.pt2e.quantizer.quantizer import QuantizationAnnotation
from fxquant.pt2e.quantizer.utils import get_annotation

__all__ = [
    "DEQUANTIZE_OPS",
    "PER_CHANNEL_DEQUANTIZE_OPS",
    "QUANTIZE_OPS",
    "GraphIndex",
    "LocalValues",
    "flat_inputs",
    "handle_of",
    "is_qdq",
    "output_leaves",
    "run_float",
    "run_quantized",
    "run_with_float_ops",
]

ensure_registered()
_qd = torch.ops.quantized_decomposed
QUANTIZE_OPS = frozenset({
    _qd.quantize_per_tensor.default, _qd.quantize_per_tensor.tensor, _qd.quantize_per_tensor.tensor2,
    _qd.quantize_per_channel.default, _qd.quantize_per_token.default, _qd.quantize_per_channel_group.default,
})
DEQUANTIZE_OPS = frozenset({
    _qd.dequantize_per_tensor.default, _qd.dequantize_per_tensor.tensor, _qd.dequantize_per_tensor.tensor2,
    _qd.dequantize_per_channel.default, _qd.dequantize_per_token.default,
    _qd.dequantize_per_channel_group.default,
})
PER_CHANNEL_DEQUANTIZE_OPS = frozenset({_qd.dequantize_per_channel.default, _qd.dequantize_per_channel_group.default})
_QPARAM_OPS = frozenset({_qd.choose_qparams.tensor, _qd.choose_qparams_symmetric.tensor,
                         _qd.choose_qparams_per_token_asymmetric.default})


def is_qdq(node: Node) -> bool:
    """A quantize or dequantize node."""
    return node.op == "call_function" and node.target in (QUANTIZE_OPS | DEQUANTIZE_OPS)


def _is_machinery(node: Node) -> bool:
    if node.op != "call_function":
        return False
    if node.target in QUANTIZE_OPS or node.target in DEQUANTIZE_OPS or node.target in _QPARAM_OPS:
        return True
    return (node.target is operator.getitem and isinstance(node.args[0], Node)
            and node.args[0].op == "call_function" and node.args[0].target in _QPARAM_OPS)


def handle_of(node: Node) -> int | None:
    """The node's numeric debug handle (None if it has none)."""
    key = get_debug_key(node)
    return key if isinstance(key, int) else None


def _producer(node: Node) -> Node:
    """Follow quantize/dequantize nodes up to the node whose value they quantize."""
    while is_qdq(node) and isinstance(node.args[0], Node):
        node = node.args[0]
    return node


def _is_constant(node: Node) -> bool:
    """Computed from ``get_attr`` nodes only (a weight, possibly through its dequantize)."""
    seen: set[Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n.op == "placeholder":
            return False
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return True


@dataclass
class GraphIndex:
    """Facts about a converted graph that every walk needs, computed once.

    A *layer* is a quantized op (its annotation quantizes an input or its output) with the ops
    fused after it: single-user followers the quantizer claimed for the same pattern without
    quantizing them (the relu of an x86 conv-relu). The layer's output is its last fused op,
    followed by the q/dq nodes that quantize it.
    """

    gm: GraphModule
    nodes: list[Node]
    ops: list[Node]  # non-machinery call_function/call_module nodes
    annotation: dict[Node, QuantizationAnnotation]
    quantized: list[Node]  # layer heads: ops whose annotation quantizes an input or the output
    tail: dict[Node, Node]  # layer head -> its last fused op (the head itself if none)
    fused_into: dict[Node, Node]  # fused follower -> its layer head
    output_chain_end: dict[Node, Node]  # op -> last q/dq node of its output chain (or the op)
    constant: dict[Node, bool]
    last_use: dict[Node, int] = field(default_factory=dict)

    @classmethod
    def of(cls, gm: GraphModule) -> GraphIndex:
        nodes = list(gm.graph.nodes)
        position = {n: i for i, n in enumerate(nodes)}
        ops = [n for n in nodes if n.op in ("call_function", "call_module") and not _is_machinery(n)]
        annotation = {n: a for n in ops if (a := get_annotation(n)) is not None}
        quantized = [n for n in ops if n in annotation and _quantizes(annotation[n])]
        tail: dict[Node, Node] = {}
        fused_into: dict[Node, Node] = {}
        for head in quantized:
            tail[head] = head
            while (follower := _fused_follower(tail[head], annotation)) is not None:
                fused_into[follower] = head
                tail[head] = follower
        chain_end = {n: _chain_end(n, position) for n in ops}
        constant = {n: _is_constant(n) for n in nodes if n.op != "output"}
        return cls(gm=gm, nodes=nodes, ops=ops, annotation=annotation, quantized=quantized, tail=tail,
                   fused_into=fused_into, output_chain_end=chain_end, constant=constant,
                   last_use=_last_use(nodes, position))

    def layer_end(self, head: Node) -> Node:
        """The last node of a layer: the q/dq after its last fused op (or that op)."""
        return self.output_chain_end[self.tail[head]]

    def quantizes_output(self, node: Node) -> bool:
        ann = self.annotation.get(node)
        return ann is not None and ann.output_qspec is not None

    def quantizes_edge(self, producer: Node, consumer: Node) -> bool:
        ann = self.annotation.get(consumer)
        return ann is not None and ann.input_qspec_map.get(producer) is not None


def _fused_follower(node: Node, annotation: dict[Node, QuantizationAnnotation]) -> Node | None:
    """The op fused after ``node``: its only user, claimed by the quantizer without being
    quantized (and not kept in float on purpose), reading ``node`` directly and no weights."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    ann = annotation.get(user)
    if ann is None or not ann._annotated or _quantizes(ann) or _is_machinery(user) or kept_float_reason(user):
        return None
    if any(a.op == "get_attr" for a in user.all_input_nodes):
        return None
    return user if user.args and user.args[0] is node else None


def _last_use(nodes: list[Node], position: dict[Node, int]) -> dict[Node, int]:
    """The position of each node's last reader; a consumer behind q/dq nodes also reads the
    producer (walks may bypass the q/dq and take the producer's raw value)."""
    last = {n: position[n] for n in nodes}
    for n in nodes:
        for a in n.all_input_nodes:
            for source in (a, _producer(a)):
                last[source] = max(last[source], position[n])
    return last


def _quantizes(annotation: QuantizationAnnotation) -> bool:
    return annotation.output_qspec is not None or any(
        s is not None for s in annotation.input_qspec_map.values()
    )


def _chain_end(op: Node, position: dict[Node, int]) -> Node:
    end, frontier = op, [op]
    while frontier:
        n = frontier.pop()
        for user in n.users:
            if is_qdq(user) and user.args[0] is n:
                frontier.append(user)
                if position[user] > position[end]:
                    end = user
    return end


def flat_inputs(gm: GraphModule, args: tuple[Any, ...]) -> list[Any]:
    """``args`` flattened to the graph's placeholders (a ValueError if the counts differ)."""
    leaves = pytree.tree_leaves(args)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(leaves) != len(placeholders):
        raise ValueError(
            f"the batch has {len(leaves)} input tensors/values but the captured graph takes "
            f"{len(placeholders)} ({', '.join(p.name for p in placeholders)}); pass batches shaped "
            "like example_inputs (a tensor, or a tuple of positional inputs)"
        )
    return leaves


def output_leaves(gm: GraphModule, env: Callable[[Node], Any]) -> list[Tensor]:
    """The graph's outputs (tensor leaves, in order) read through ``env``."""
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    leaves: list[Tensor] = []

    def collect(a: Any) -> Any:
        value = env(a) if isinstance(a, Node) else a
        if isinstance(value, Tensor):
            leaves.append(value)
        return a

    map_aggregate(output.args[0], collect)
    return leaves


def _call(gm: GraphModule, node: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))(*args, **kwargs)
    return node.target(*args, **kwargs)  # type: ignore[operator]  # call_function targets are callables


def _leaf_value(gm: GraphModule, node: Node, inputs: Iterator[Any]) -> Any:
    if node.op == "placeholder":
        return next(inputs)
    return get_attr_value(gm, str(node.target))


def run_float(index: GraphIndex, inputs: list[Any]) -> tuple[dict[int, Any], list[Tensor]]:
    """Every handle's value in the float graph, and the graph's outputs."""
    env: dict[Node, Any] = {}
    by_handle: dict[int, Any] = {}
    it = iter(inputs)
    for node in index.nodes:
        if node.op in ("placeholder", "get_attr"):
            env[node] = _leaf_value(index.gm, node, it)
        elif node.op == "output":
            return by_handle, output_leaves(index.gm, env.__getitem__)
        else:
            args, kwargs = map_arg((node.args, node.kwargs), env.__getitem__)
            env[node] = _call(index.gm, node, args, kwargs)
            handle = handle_of(node)
            if handle is not None:
                by_handle[handle] = env[node]
    raise ValueError("the float graph has no output node")


@dataclass
class LocalValues:
    """What one batch through :func:`run_quantized` yields for one layer (head op ``node``)."""

    node: Node
    reference: Any  # the float model's value of the layer output
    propagated: Any  # the quantized model's value (after the layer's output q/dq)
    local: Any  # only this layer quantized (after its output q/dq)
    op_local: Any  # only this layer quantized, before its output q/dq
    head_reference: Any  # the float model's value of the head op
    pre_args: tuple[Any, ...]  # the head op's arguments with only this layer quantized
    raw_args: tuple[Any, ...]  # its arguments in the float model (float weights, float inputs)


def run_quantized(
    index: GraphIndex, inputs: list[Any], float_values: dict[int, Any], float_weights: Callable[[Node, int], Any],
    on_layer: Callable[[LocalValues], None],
) -> list[Tensor]:
    """Run the quantized graph; for every layer with a float counterpart, call ``on_layer``
    with its reference, propagated and local values. Returns the outputs."""
    env: dict[Node, Any] = {}  # the quantized model
    pre: dict[Node, Any] = {}  # float values, quantized only by the machinery in between
    chain: dict[Node, Any] = {}  # a layer's local value, through its fused ops and output q/dq
    pending: dict[Node, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}
    tail_local: dict[Node, Any] = {}  # layer head -> local value of its last fused op
    heads = set(index.quantized)
    ends = {index.layer_end(h): h for h in heads}
    tails = {index.tail[h]: h for h in heads}
    it = iter(inputs)
    for i, node in enumerate(index.nodes):
        if node.op in ("placeholder", "get_attr"):
            env[node] = pre[node] = _leaf_value(index.gm, node, it)
            continue
        if node.op == "output":
            return output_leaves(index.gm, env.__getitem__)
        args, kwargs = map_arg((node.args, node.kwargs), env.__getitem__)
        env[node] = _call(index.gm, node, args, kwargs)
        pre_args, pre_kwargs = map_arg((node.args, node.kwargs), pre.__getitem__)
        handle = handle_of(node)
        if _is_machinery(node):
            pre[node] = _call(index.gm, node, pre_args, pre_kwargs)
        elif handle is not None and handle in float_values:
            pre[node] = float_values[handle]
        else:
            pre[node] = _call(index.gm, node, pre_args, pre_kwargs)
        source = node.args[0] if node.args else None
        if node in heads and handle is not None and handle in float_values:
            chain[node] = _call(index.gm, node, pre_args, pre_kwargs)
            raw = tuple(_raw_arg(index, node, j, a, pre, float_weights) for j, a in enumerate(node.args))
            pending[node] = (pre_args, raw)
        elif isinstance(source, Node) and source in chain and (is_qdq(node) or node in index.fused_into):
            chain[node] = _call(index.gm, node, (chain[source], *pre_args[1:]), pre_kwargs)
        if node in tails and node in chain:
            tail_local[tails[node]] = chain[node]
        if node in ends and ends[node] in pending:
            head = ends[node]
            _report_layer(index, head, node, env, chain[node], tail_local.pop(head), pending.pop(head),
                          float_values, on_layer)
        _free(index, i, env, pre, chain)
    raise ValueError("the quantized graph has no output node")


def _report_layer(index: GraphIndex, head: Node, end: Node, env: dict[Node, Any], local: Any, op_local: Any,
                  args: tuple[tuple[Any, ...], tuple[Any, ...]], float_values: dict[int, Any],
                  on_layer: Callable[[LocalValues], None]) -> None:
    tail = index.tail[head]
    tail_handle, head_handle = handle_of(tail), handle_of(head)
    if tail_handle is None or tail_handle not in float_values or head_handle is None:
        return
    pre_args, raw_args = args
    on_layer(LocalValues(node=head, reference=float_values[tail_handle], propagated=env[end], local=local,
                         op_local=op_local, head_reference=float_values[head_handle],
                         pre_args=pre_args, raw_args=raw_args))


def _raw_arg(index: GraphIndex, node: Node, position: int, arg: Any, pre: dict[Node, Any],
             float_weights: Callable[[Node, int], Any]) -> Any:
    """Argument ``position`` of ``node`` as the float model sees it."""
    if not isinstance(arg, Node):
        return map_arg(arg, lambda a: pre[_producer(a)])
    if index.constant.get(arg, False):
        weight = float_weights(node, position)
        return weight if weight is not None else pre[arg]
    return pre[_producer(arg)]


def _free(index: GraphIndex, i: int, *envs: dict[Node, Any]) -> None:
    """Drop values whose last user has run (keeps memory to the live activations)."""
    node = index.nodes[i]
    for arg in node.all_input_nodes:
        if index.last_use.get(arg, -1) <= i and arg.op != "get_attr":
            for env in envs:
                env.pop(arg, None)


def run_with_float_ops(
    index: GraphIndex, inputs: list[Any], float_ops: set[Node], float_weights: Callable[[Node, int], Any],
) -> list[Tensor]:
    """The quantized graph's outputs with ``float_ops`` run in float: their constant inputs
    (weights) taken from the float model, and each q/dq chain between a producer P and a
    consumer C kept only if P's output or the edge P -> C is still quantized."""
    env: dict[Node, Any] = {}
    it = iter(inputs)
    for i, node in enumerate(index.nodes):
        if node.op in ("placeholder", "get_attr"):
            env[node] = _leaf_value(index.gm, node, it)
            continue
        if node.op == "output":
            return output_leaves(index.gm, lambda a: _edge_value(index, a, consumer=None, env=env, float_ops=float_ops))
        if _is_machinery(node):
            args, kwargs = map_arg((node.args, node.kwargs), env.__getitem__)
        else:
            args = tuple(_float_op_arg(index, node, j, a, env, float_ops, float_weights)
                         for j, a in enumerate(node.args))
            kwargs = map_arg(node.kwargs, functools.partial(_edge_value, index, consumer=node, env=env,
                                                            float_ops=float_ops))
        env[node] = _call(index.gm, node, args, kwargs)
        _free(index, i, env)
    raise ValueError("the quantized graph has no output node")


def _float_op_arg(index: GraphIndex, node: Node, position: int, arg: Any, env: dict[Node, Any],
                  float_ops: set[Node], float_weights: Callable[[Node, int], Any]) -> Any:
    if isinstance(arg, Node) and node in float_ops and index.constant.get(arg, False) and is_qdq(arg):
        weight = float_weights(node, position)
        if weight is not None:
            return weight
    return map_arg(arg, functools.partial(_edge_value, index, consumer=node, env=env, float_ops=float_ops))


def _edge_value(index: GraphIndex, arg: Node, *, consumer: Node | None, env: dict[Node, Any],
                float_ops: set[Node]) -> Any:
    """The value ``consumer`` reads through ``arg``: the q/dq'd value if that quantization
    survives putting ``float_ops`` in float, else the producer's raw value."""
    if not is_qdq(arg) or index.constant.get(arg, False):
        return env[arg]
    producer = _producer(arg)
    keeps_output = index.quantizes_output(producer) and producer not in float_ops
    keeps_edge = consumer is not None and consumer not in float_ops and index.quantizes_edge(producer, consumer)
    unannotated = producer not in index.annotation and (consumer is None or consumer not in index.annotation)
    return env[arg] if (keeps_output or keeps_edge or unannotated) else env[producer]
