"""Which qconfig applies to each node of a traced (and fused) graph, resolved from a
:class:`~fxquant.qconfig.QConfigMapping` the way upstream's FX prepare resolves it."""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from typing import Any

from torch.fx import GraphModule, Node

from fxquant.fx.tracer import SCOPE_META_KEY
from fxquant.nn.intrinsic import _FusedModule
from fxquant.qconfig.mapping import QConfigMapping
from fxquant.qconfig.qconfig import QConfigAny
from fxquant.qconfig.resolve import (
    qconfig_for_function_call,
    qconfig_for_method_call,
    qconfig_for_module_call,
)

__all__ = ["FusedQConfigError", "mapping_with_fused_types", "node_qconfigs"]


class FusedQConfigError(LookupError):
    """The modules of one fused module have different object-type qconfigs."""


def mapping_with_fused_types(gm: GraphModule, mapping: QConfigMapping) -> QConfigMapping:
    """A copy of ``mapping`` where each fused module type inherits the object-type entry of
    its first module (``nn.Conv2d`` → ``ConvReLU2d``); raises :class:`FusedQConfigError`
    if the fused modules' entries disagree."""
    entries = mapping.object_type_qconfigs
    added: dict[Any, QConfigAny] = {}
    for module in gm.modules():
        if not isinstance(module, _FusedModule):
            continue
        parts = list(module.children())
        first = entries.get(type(parts[0]))
        for part in parts[1:]:
            if entries.get(type(part)) != first:
                raise FusedQConfigError(
                    f"{type(module).__name__} fuses {type(parts[0]).__name__} and "
                    f"{type(part).__name__}, which have different object-type qconfigs; give "
                    "them the same qconfig (or None to both)"
                )
        if first is not None:
            added[type(module)] = first
    if not added:
        return mapping
    result = copy.copy(mapping)
    result.object_type_qconfigs = OrderedDict({**entries, **added})
    return result


def _scope(node: Node) -> tuple[str, type | None]:
    return node.meta.get(SCOPE_META_KEY, ("", None))


def node_qconfigs(gm: GraphModule, mapping: QConfigMapping) -> dict[Node, QConfigAny]:
    """The qconfig of every call node of ``gm`` (None: keep in float)."""
    counts: Counter[tuple[str, object]] = Counter()
    result: dict[Node, QConfigAny] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            name = str(node.target)
            module_type = type(gm.get_submodule(name))
            parent = name.rpartition(".")[0]
            index = counts[(parent, module_type)]
            counts[(parent, module_type)] += 1
            result[node] = qconfig_for_module_call(mapping, name, module_type, index)
        elif node.op == "call_function":
            scope_name, scope_type = _scope(node)
            index = counts[(scope_name, node.target)]
            counts[(scope_name, node.target)] += 1
            result[node] = qconfig_for_function_call(mapping, node.target, scope_name, scope_type, index)
        elif node.op == "call_method":
            scope_name, scope_type = _scope(node)
            result[node] = qconfig_for_method_call(mapping, str(node.target), scope_name, scope_type)
    return result


