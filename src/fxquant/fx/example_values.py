"""Record, on each node of a traced graph, what it produces for the example inputs:
``node.meta["val"]`` is a shape/dtype-only (``meta`` device) tensor for tensor outputs and
absent otherwise. The engine observes only nodes whose ``val`` is a tensor.

Two ways to get there, with identical results:

* **inference** (the fast path): each node's output shape and dtype are computed from its
  inputs' by a shape rule (conv, linear, batch norm, layer norm, pooling, padding,
  activations, broadcasting arithmetic, ``matmul``, ``softmax``, ``cat``, ``mean``; fused
  ``Sequential`` modules part by part), by running a metadata-only op (``view``,
  ``flatten``, ``size``, indexing, ...) on meta tensors, or, for nodes whose inputs are all
  real values (example inputs, attributes, Python numbers: an embedding of the input ids),
  by running the node. The model's convolutions and matrix products are not computed.
* **the float forward**: as soon as a node has no rule, or a rule finds inputs that do not
  fit (wrong channel count, mixed dtypes, ...), the example inputs run through the whole
  graph in eval mode; a failing node raises :class:`ExampleInputError` naming it and the
  original error.

Rules only accept what they can decide exactly, and decline everything else; that keeps
inferred values equal to the forward's, and errors the forward's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.fx import GraphModule, Interpreter, Node
from torch.fx.node import map_arg

from fxquant.fx.shape_rules import Undecided, infer_node, meta_tensor

__all__ = ["ExampleInputError", "record_example_values"]


class ExampleInputError(ValueError):
    """The example inputs do not run through the model."""


def _placeholder_values(gm: GraphModule, example_inputs: tuple[Any, ...]) -> Iterator[tuple[Node, Any]]:
    remaining = list(example_inputs)
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        if str(node.target).startswith("*"):
            raise Undecided
        if remaining:
            yield node, remaining.pop(0)
        elif node.args:
            yield node, node.args[0]
        else:
            raise Undecided


def _infer(gm: GraphModule, example_inputs: tuple[Any, ...]) -> dict[Node, Any]:
    """Every node's output (meta tensors where a rule decided), or ``Undecided``."""
    env: dict[Node, Any] = dict(_placeholder_values(gm, example_inputs))
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        args, kwargs = map_arg((node.args, node.kwargs), env.__getitem__)
        if node.op == "output":
            env[node] = args[0]
            continue
        env[node] = infer_node(gm, node, args, kwargs)
    return env



class _Recorder(Interpreter):
    """Runs the graph, keeping each node's output as a meta tensor (or ``None``)."""

    def __init__(self, gm: GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[Node, Any] = {}
        # our error names the node already; torch's extra traceback also logs the whole
        # graph through torch._logging, whose first use imports for seconds
        self.extra_traceback = False

    def run_node(self, n: Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as e:  # re-raised with the node named
            raise ExampleInputError(
                f"running the example inputs failed at node {n.name} ({n.format_node()}): "
                f"{type(e).__name__}: {e}. Check that example_inputs have the shapes and "
                "dtypes the model's forward expects"
            ) from e
        self.values[n] = meta_tensor(result.shape, result.dtype) if isinstance(result, torch.Tensor) else None
        return result


def _run_forward(gm: GraphModule, example_inputs: tuple[Any, ...]) -> dict[Node, Any]:
    recorder = _Recorder(gm)
    recorder.run(*example_inputs)
    return recorder.values


def record_example_values(gm: GraphModule, example_inputs: tuple[Any, ...]) -> bool:
    """Annotate every node of ``gm`` with the meta tensor it produces for ``example_inputs``
    (``node.meta["val"]``; removed on nodes whose output is not a tensor).

    Returns ``True`` if shape inference decided every node, ``False`` if the example inputs
    had to run through the model. Raises :class:`ExampleInputError` if there are more
    example inputs than ``forward`` takes, or if they fail to run through it.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(example_inputs) > len(placeholders):
        raise ExampleInputError(
            f"{len(example_inputs)} example inputs given, but forward takes {len(placeholders)}"
        )
    # eval mode and no autograd for whatever runs, so batch norm statistics are not updated
    training = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            try:
                values, inferred = _infer(gm, example_inputs), True
            except Undecided:
                values, inferred = _run_forward(gm, example_inputs), False
    finally:
        for module, mode in training.items():
            module.training = mode
    for node in gm.graph.nodes:
        value = values.get(node)
        if isinstance(value, torch.Tensor):
            node.meta["val"] = meta_tensor(value.shape, value.dtype)
        else:
            node.meta.pop("val", None)
    return inferred
