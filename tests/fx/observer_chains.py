"""Compare where two prepared FX models observe, independently of observer names: every
edge ``producer → consumer`` that runs through observers is described by the producer's name,
the consumer's name and the dtypes of the observers on it, in order."""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

__all__ = ["observer_chains", "outputs"]


def _is_observer(gm: GraphModule, node: object) -> bool:
    return isinstance(node, Node) and node.op == "call_module" \
        and "activation_post_process" in str(node.target)


def _flat(args: object) -> list[object]:
    if isinstance(args, (list, tuple)):
        return [x for a in args for x in _flat(a)]
    if isinstance(args, dict):
        return [x for a in args.values() for x in _flat(a)]
    return [args]


def observer_chains(gm: GraphModule) -> list[tuple[str, str, tuple[str, ...]]]:
    """(producer, consumer, observer kinds) for every observed edge, sorted; an observer's
    kind is its class name, dtype and whether it is dynamic."""
    chains = []
    for node in gm.graph.nodes:
        if _is_observer(gm, node):
            continue
        for arg in _flat((node.args, node.kwargs)):
            kinds: list[str] = []
            while _is_observer(gm, arg):
                assert isinstance(arg, Node)
                module = gm.get_submodule(str(arg.target))
                kinds.append(f"{type(module).__name__}:{getattr(module, 'dtype', None)}"
                             f"{':dynamic' if getattr(module, 'is_dynamic', False) else ''}")
                arg = arg.args[0]
            if kinds and isinstance(arg, Node):
                chains.append((arg.name, node.name, tuple(reversed(kinds))))
    return sorted(chains)


def outputs(model: torch.nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The model's outputs as a tuple of float tensors (quantized ones dequantized)."""
    out = model(*inputs)
    items = out if isinstance(out, (tuple, list)) else (out,)
    return tuple(t.dequantize() if t.is_quantized else t for t in items)
