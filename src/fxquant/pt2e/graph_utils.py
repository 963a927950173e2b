"""Graph helpers for quantizer authors: source partitions in sequence, equivalent op types,
and a traversal that reaches into control-flow subgraphs.

A *source partition* (``torch.fx.passes.utils.source_matcher_utils``) groups the nodes that
came from one module call or function call. :func:`find_sequential_partitions` finds chains
of them — e.g. ``[torch.nn.Conv2d, torch.nn.ReLU]`` — where each partition feeds the next.
A module type and its functional forms are *equivalent* (``nn.ReLU``, ``F.relu``, ``"relu"``),
so a pattern written with one matches graphs captured from the others; the string names are
what ``torch.export`` records (``node.meta["torch_fn"]``) for calls made outside a leaf module.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import ExportedProgram
from torch.fx import GraphModule, Node
from torch.fx.passes.utils.source_matcher_utils import (
    SourcePartition,
    check_subgraphs_connected,
    get_source_partitions,
)

__all__ = [
    "bfs_trace_with_node_process",
    "collect_producer_nodes",
    "find_sequential_partitions",
    "get_equivalent_types",
    "update_equivalent_types_dict",
]

_DEFAULT_EQUIVALENT_TYPES: list[set[Any]] = [
    {nn.Conv1d, F.conv1d, "conv1d"},
    {nn.Conv2d, F.conv2d, "conv2d"},
    {nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, "adaptive_avg_pool2d"},
    {nn.ReLU, F.relu, F.relu_, "relu", "relu_"},
    {nn.BatchNorm2d, F.batch_norm, "batch_norm"},
    {nn.Hardtanh, F.hardtanh, F.hardtanh_, "hardtanh", "hardtanh_"},
    {torch.add, operator.add, operator.iadd, "add", "add_"},
    {torch.mul, operator.mul, operator.imul, "mul", "mul_"},
]


class _EquivalentTypes:
    """The equivalence classes and, for each member, the members of its class."""

    def __init__(self, classes: list[set[Any]]) -> None:
        self.classes = classes
        self.lookup: dict[Any, list[Any]] = {}
        for members in classes:
            for member in members:
                self.lookup[member] = list(members)


_equivalent = _EquivalentTypes(_DEFAULT_EQUIVALENT_TYPES)


def get_equivalent_types() -> list[set[Any]]:
    """The classes of interchangeable partition types (module, functions, export names)."""
    return _equivalent.classes


def update_equivalent_types_dict(customized_equivalent_types: list[set[Any]] | None = None) -> None:
    """Replace the equivalence classes used by :func:`find_sequential_partitions`.

    >>> update_equivalent_types_dict(get_equivalent_types() + [{nn.SiLU, F.silu, "silu"}])
    """
    global _equivalent
    if customized_equivalent_types is None:
        raise ValueError(
            "update_equivalent_types_dict needs the new list of equivalence classes "
            "(e.g. get_equivalent_types() + [{nn.SiLU, F.silu}])"
        )
    _equivalent = _EquivalentTypes(customized_equivalent_types)


def _matching_types(partition_type: Any) -> list[Any]:
    return [partition_type, *_equivalent.lookup.get(partition_type, [])]


def _check_distinct_types(partition_types: Sequence[Any]) -> None:
    seen: set[Any] = set()
    for partition_type in partition_types:
        matching = set(_matching_types(partition_type))
        if seen & matching:
            raise ValueError(
                f"invalid partition types {list(partition_types)}: each type in the sequence "
                "must be distinct (equivalent types, such as nn.ReLU and F.relu, count as one)"
            )
        seen |= matching


def _is_sequential(partitions: Sequence[SourcePartition]) -> bool:
    return all(check_subgraphs_connected(a, b) for a, b in itertools.pairwise(partitions))


def find_sequential_partitions(
    gm: GraphModule,
    partition_types: list[Any],
    include_functional_equivalent: bool = True,
    filter_fn: Callable[[Node], bool] | None = None,
) -> list[tuple[SourcePartition, ...]]:
    """Chains of source partitions of ``partition_types``, in order, each feeding the next.

    >>> for conv, relu in find_sequential_partitions(gm, [torch.nn.Conv2d, torch.nn.ReLU]):
    ...     conv_node, relu_node = conv.output_nodes[0], relu.output_nodes[0]

    ``include_functional_equivalent=False`` matches only the given types themselves.
    """
    _check_distinct_types(partition_types)
    per_type: list[list[SourcePartition]] = []
    for partition_type in partition_types:
        wanted = _matching_types(partition_type) if include_functional_equivalent else [partition_type]
        found = get_source_partitions(gm.graph, wanted, filter_fn)
        per_type.append(list(itertools.chain.from_iterable(found.values())))
    return [chain for chain in itertools.product(*per_type) if _is_sequential(chain)]


_CONTROL_FLOW_SUBGRAPH_ARGS: dict[Any, tuple[int, ...]] = {
    torch.ops.higher_order.cond: (1, 2),
    torch.ops.higher_order.map_impl: (0,),
    torch.ops.higher_order.scan: (0,),
    torch.ops.higher_order.while_loop: (0, 1),
}


def _control_flow_subgraphs(gm: GraphModule) -> list[GraphModule]:
    """The graph modules that control-flow ops of ``gm`` call (not recursively)."""
    found: list[GraphModule] = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        for index in _CONTROL_FLOW_SUBGRAPH_ARGS.get(node.target, ()):
            arg = node.args[index]
            if isinstance(arg, Node) and arg.op == "get_attr":
                sub = gm.get_submodule(str(arg.target))
                if isinstance(sub, GraphModule):
                    found.append(sub)
    return found


def bfs_trace_with_node_process(
    model: ExportedProgram | GraphModule, node_op: Callable[[Node], Any]
) -> None:
    """Call ``node_op`` on every node except placeholders and outputs, breadth first through
    ``model`` and the subgraphs of its control-flow ops (cond, map, scan, while_loop)."""
    if not isinstance(model, (ExportedProgram, GraphModule)):
        raise TypeError(f"expected a GraphModule or an ExportedProgram, got {type(model).__name__}")
    root = model.graph_module if isinstance(model, ExportedProgram) else model
    queue: list[GraphModule] = [root]
    while queue:
        gm = queue.pop(0)
        for node in gm.graph.nodes:
            if node.op not in ("placeholder", "output"):
                node_op(node)
        queue.extend(_control_flow_subgraphs(gm))


def collect_producer_nodes(node: Node) -> list[Node] | None:
    """``node`` and every node it is computed from, up to constants (``get_attr``); None when
    it depends on a graph input (a placeholder), i.e. it cannot be constant-folded."""
    nodes = [node]
    frontier = [node]
    while frontier:
        current = frontier.pop()
        for arg in current.all_input_nodes:
            if arg.op == "placeholder":
                return None
            nodes.append(arg)
            if not (arg.op == "call_function" and arg.target is getattr):
                frontier.append(arg)
    return nodes
