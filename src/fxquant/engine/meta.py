"""Carrying node metadata onto the nodes a pass creates."""

from __future__ import annotations

import copy

from torch.fx import Node

__all__ = ["PORTED_META_KEYS", "port_meta"]

# Provenance keys that debuggers and exporters read (stack traces, module paths, the
# numeric-debug handle under "custom").
PORTED_META_KEYS = ("stack_trace", "nn_module_stack", "source_fn_stack", "from_node", "custom", "torch_fn")


def port_meta(source: Node, *targets: Node) -> None:
    for target in targets:
        for key in PORTED_META_KEYS:
            if key in source.meta and key not in target.meta:
                # a shallow copy: editing one node's metadata must not edit its siblings'
                target.meta[key] = copy.copy(source.meta[key])
