"""Fusion on a traced graph, driven by the fusion patterns of a ``BackendConfig`` (those with a
fuser method): ``conv → bn → relu``, ``conv → relu``, ``linear → bn``, ``bn → relu``,
``conv_transpose → bn``, ``conv → add (→ relu)`` on oneDNN, ... become one module, built by
the pattern's fuser method (``fxquant.nn.intrinsic`` containers, or the float module with
batch norm folded in for post-training quantization).

As upstream: the matched modules are handed to the fuser method in the pattern's reversed
nested format, a functional ``F.relu`` becomes an ``nn.ReLU`` module, other functions and
methods are passed as themselves; the fused module replaces the root's module, the extra
inputs the pattern names (the other operand of ``add``) are appended to the root's
arguments, and the other matched nodes disappear.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.backend_config import BackendConfig, get_native_backend_config
from fxquant.backend_config.patterns import MatchAllNode, fuser_method_in_reversed_nested_format
from fxquant.fx.match import PatternMatch, find_matches, sorted_pattern_configs

__all__ = ["fuse_graph"]


def _as_module(gm: GraphModule, node: Any, root_module: nn.Module) -> Any:
    if not isinstance(node, Node):
        return MatchAllNode
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))
    if node.op == "call_function" and node.target is F.relu:
        relu = nn.ReLU()
        relu.training = root_module.training
        return relu
    return node.target


def _modules_in_pattern(gm: GraphModule, node: Node, pattern: Any, root_module: nn.Module) -> Any:
    """The matched modules (or ops) in the nesting of ``pattern`` (reversed nested format)."""
    if not isinstance(pattern, tuple):
        return _as_module(gm, node, root_module)
    parts = [_as_module(gm, node, root_module)]
    for arg, sub in zip(node.args, pattern[1:]):
        is_any = isinstance(sub, type) and issubclass(sub, MatchAllNode)
        parts.append(MatchAllNode if is_any or not isinstance(arg, Node)
                     else _modules_in_pattern(gm, arg, sub, root_module))
    return tuple(parts)


def _node_pattern(node: Any, pattern: Any) -> Any:
    if not isinstance(pattern, tuple) or not isinstance(node, Node):
        return node
    return (node, *(_node_pattern(a, p) for a, p in zip(node.args, pattern[1:])))


def _fuse_match(gm: GraphModule, match: PatternMatch, *, is_qat: bool) -> None:
    root = match.root
    if root.op != "call_module":
        raise TypeError(f"fusion pattern {match.pattern} has root {root.format_node()}, which is "
                        "not a module; a fusion pattern's root must be a module call")
    root_module = gm.get_submodule(str(root.target))
    modules = _modules_in_pattern(gm, match.output, match.pattern, root_module)
    fuser = fuser_method_in_reversed_nested_format(match.config)
    fused = fuser(is_qat, *modules) if isinstance(modules, tuple) else fuser(is_qat, modules)
    gm.add_submodule(str(root.target), fused)
    getter = match.config._extra_inputs_getter
    if getter is not None:
        root.args = (*root.args, *getter(_node_pattern(match.output, match.pattern)))
    output = match.output
    if output is not root:
        output.prepend(root)  # where the pattern's output was: after every extra input
        output.replace_all_uses_with(root)
    for node in reversed(match.nodes):
        if node is not root and not node.users:
            gm.graph.erase_node(node)


def _delete_unused_submodules(gm: GraphModule) -> None:
    """``GraphModule.delete_all_unused_submodules`` in linear time (torch's searches a list:
    quadratic in the module count, 80 ms at 10,000 nodes)."""
    used: set[str] = set()
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "get_attr") or not isinstance(node.target, str):
            continue
        parts = node.target.split(".")
        used.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        if node.op == "call_module":
            try:
                module = gm.get_submodule(node.target)
            except AttributeError:
                continue
            used.update(f"{node.target}.{name}" for name, _ in module.named_modules() if name)
    for name in [name for name, _ in gm.named_modules() if name and name not in used]:
        gm.delete_submodule(name)


def fuse_graph(
    gm: GraphModule, *, is_qat: bool, backend_config: BackendConfig | None = None, recompile: bool = True
) -> GraphModule:
    """Fuse every match of ``backend_config``'s fusion patterns (default: the native backend)
    in ``gm`` in place; returns ``gm``, recompiled unless ``recompile=False`` (for a caller
    that edits the graph further and recompiles once at the end)."""
    config = backend_config if backend_config is not None else get_native_backend_config()
    pairs = sorted_pattern_configs(config, lambda c: c.fuser_method is not None)
    matches = find_matches(gm, pairs, lambda m: m.root.op == "call_module")
    done: set[int] = set()
    for node in list(gm.graph.nodes):
        match = matches.get(node)
        if match is None or id(match) in done or node is not match.output:
            continue
        done.add(id(match))
        _fuse_match(gm, match, is_qat=is_qat)
    gm.graph.lint()
    _delete_unused_submodules(gm)
    if recompile:
        gm.recompile()
    return gm
