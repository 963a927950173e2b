"""Run the example inputs through a traced graph and record, on each node, what it
produced: ``node.meta["val"]`` is a shape/dtype-only (``meta`` device) tensor for tensor
outputs. The engine observes only nodes whose ``val`` is a tensor."""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Interpreter, Node

__all__ = ["ExampleInputError", "record_example_values"]


class ExampleInputError(ValueError):
    """The example inputs do not run through the model."""


class _Recorder(Interpreter):
    def run_node(self, n: Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as e:  # re-raised with the node named
            raise ExampleInputError(
                f"running the example inputs failed at node {n.name} ({n.format_node()}): "
                f"{type(e).__name__}: {e}. Check that example_inputs have the shapes and "
                "dtypes the model's forward expects"
            ) from e
        if isinstance(result, torch.Tensor):
            n.meta["val"] = torch.empty(result.shape, dtype=result.dtype, device="meta")
        else:
            n.meta.pop("val", None)
        return result


def record_example_values(gm: GraphModule, example_inputs: tuple[Any, ...]) -> None:
    """Annotate every node of ``gm`` with the meta tensor it produces for ``example_inputs``."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(example_inputs) > len(placeholders):
        raise ExampleInputError(
            f"{len(example_inputs)} example inputs given, but forward takes {len(placeholders)}"
        )
    # eval mode for the run, so batch norm statistics are not updated by the example
    training = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            _Recorder(gm).run(*example_inputs)
    finally:
        for module, mode in training.items():
            module.training = mode
