"""Reading, writing and pruning the constant attributes that ``get_attr`` nodes refer to."""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

__all__ = [
    "NotConstantError",
    "constant_of",
    "drop_dead_constants",
    "free_attribute_name",
    "get_attr_value",
    "set_parameter",
]


class NotConstantError(ValueError):
    """A node that is not a ``get_attr`` of a tensor."""


def get_attr_value(gm: GraphModule, target: str) -> torch.Tensor:
    obj: object = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, torch.Tensor):
        raise NotConstantError(f"{target} is not a tensor attribute")
    return obj


def constant_of(gm: GraphModule, arg: object) -> object:
    """The value behind ``arg``: a get_attr node's tensor, or ``arg`` itself if it is not a
    node. Raises :class:`NotConstantError` for any other node."""
    if not isinstance(arg, Node):
        return arg
    if arg.op != "get_attr":
        raise NotConstantError(f"{arg.name} is computed, not a constant")
    return get_attr_value(gm, str(arg.target))


def set_parameter(gm: GraphModule, target: str, value: torch.Tensor) -> None:
    owner, _, name = target.rpartition(".")
    module = gm.get_submodule(owner) if owner else gm
    setattr(module, name, torch.nn.Parameter(value.detach(), requires_grad=False))


def drop_dead_constants(gm: GraphModule) -> None:
    """Erase get_attr nodes without users and delete their attributes unless something
    still reads them (another get_attr, or a call_module of an enclosing module)."""
    dead = [n for n in gm.graph.nodes if n.op == "get_attr" and not n.users]
    for node in dead:
        gm.graph.erase_node(node)
    read = {str(n.target) for n in gm.graph.nodes if n.op in ("get_attr", "call_module")}
    for target in {str(n.target) for n in dead}:
        if target in read or any(target.startswith(r + ".") for r in read):
            continue
        owner, _, attr = target.rpartition(".")
        module = gm.get_submodule(owner) if owner else gm
        if hasattr(module, attr):
            delattr(module, attr)


def free_attribute_name(gm: GraphModule, candidate: str) -> str:
    """``candidate``, or ``candidate_<i>`` if that attribute is taken."""
    owner_name, _, leaf = candidate.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    name, i = leaf, 0
    while hasattr(owner, name):
        i += 1
        name = f"{leaf}_{i}"
    return f"{owner_name}.{name}" if owner_name else name
