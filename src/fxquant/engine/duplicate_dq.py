"""Give every consumer its own dequantize, so that each op's q/dq pattern is
self-contained for pattern-matching lowerings (Inductor, ExecuTorch, fxquant's own)."""

from __future__ import annotations

from torch.fx import GraphModule

from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["DEQUANTIZE_OPS", "duplicate_dequantize_per_user"]

DEQUANTIZE_OPS = (
    qd.dequantize_per_tensor.default,
    qd.dequantize_per_tensor.tensor,
    qd.dequantize_per_channel.default,
)


def duplicate_dequantize_per_user(gm: GraphModule) -> GraphModule:
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in DEQUANTIZE_OPS:
            continue
        for user in list(node.users)[1:]:
            with gm.graph.inserting_before(user):
                copy = gm.graph.node_copy(node)
            user.replace_input_with(node, copy)
    gm.graph.lint()
    gm.recompile()
    return gm
