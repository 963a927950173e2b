"""Tensors a graph reads out of a module that convert swaps.

A model may call a layer and also read its parameters directly::

    def forward(self, x):
        return self.fc(x) + F.linear(x, self.fc.weight)

The traced graph reads ``fc.weight`` with a ``get_attr`` node. Convert replaces ``fc`` by a
reference module and lowering by a quantized module whose ``weight`` is a method returning
the packed int8 weight, so that ``get_attr`` would no longer find a tensor (upstream's
``convert_fx`` fails here). Before the swap, :func:`detach_swapped_module_attributes` gives
every such tensor its own attribute on the graph module (the same ``Parameter`` / buffer
object, no copy: ``fc_weight`` for ``fc.weight``) and points the ``get_attr`` nodes at it, so
the functional call reads the float tensor the prepared model read — and is quantized and
lowered like any functional call on a model constant. :func:`drop_unread_detached_attributes`
removes those attributes again once lowering has folded them into packed weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.fx import GraphModule

from fxquant.engine.constants import free_attribute_name

__all__ = [
    "DETACHED_ATTRIBUTES_META_KEY",
    "detach_swapped_module_attributes",
    "drop_unread_detached_attributes",
]

# gm.meta key: the attribute names detach_swapped_module_attributes created.
DETACHED_ATTRIBUTES_META_KEY = "fxquant_fx_detached_attributes"


def _owner(target: str, modules: set[str]) -> str | None:
    """The module among ``modules`` that holds the attribute path ``target``, if any."""
    parts = target.split(".")
    for end in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return None


def detach_swapped_module_attributes(gm: GraphModule, swapped: Iterable[str]) -> dict[str, str]:
    """Re-home every tensor that a ``get_attr`` node reads from inside one of the modules
    named in ``swapped`` (qualified names) as a top-level attribute of ``gm``, and retarget
    those nodes. Returns ``{old target: new attribute name}`` (also recorded in ``gm.meta``
    for :func:`drop_unread_detached_attributes`)."""
    modules = set(swapped)
    renamed: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr" or _owner(str(node.target), modules) is None:
            continue
        target = str(node.target)
        if target not in renamed:
            owner_path, _, attribute = target.rpartition(".")
            owner = gm.get_submodule(owner_path)
            value = getattr(owner, attribute, None)
            if not isinstance(value, torch.Tensor):
                continue
            name = free_attribute_name(gm, target.replace(".", "_"))
            if isinstance(value, torch.nn.Parameter):
                gm.register_parameter(name, value)
            else:
                gm.register_buffer(name, value, persistent=attribute not in owner._non_persistent_buffers_set)
            renamed[target] = name
        node.target = renamed[target]
    if renamed:
        gm.meta.setdefault(DETACHED_ATTRIBUTES_META_KEY, []).extend(renamed.values())
        gm.recompile()
    return renamed


def drop_unread_detached_attributes(gm: GraphModule) -> list[str]:
    """Delete the attributes :func:`detach_swapped_module_attributes` created that no
    ``get_attr`` node reads any more (lowering packed them). Returns their names."""
    names = gm.meta.pop(DETACHED_ATTRIBUTES_META_KEY, [])
    read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    dropped = [name for name in names if name not in read and hasattr(gm, name)]
    for name in dropped:
        delattr(gm, name)
    return dropped
