"""Quantize constant weights ahead of time: ``get_attr(w) -> quantize -> dequantize``
becomes ``get_attr(w_int) -> dequantize``, and the float weight is dropped from the model."""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from fxquant.engine.constants import NotConstantError, constant_of, drop_dead_constants
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["fold_constant_quantize"]

_FOLDABLE = (qd.quantize_per_tensor.default, qd.quantize_per_channel.default)


def fold_constant_quantize(gm: GraphModule) -> GraphModule:
    """Evaluate every quantize op whose inputs are all constants and store its integers as a
    buffer ``_frozen_param<i>``."""
    counter = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _FOLDABLE:
            continue
        try:
            args = [constant_of(gm, a) for a in node.args]
        except NotConstantError:
            continue
        with torch.no_grad():
            q = node.target(*args)
        while hasattr(gm, f"_frozen_param{counter}"):
            counter += 1
        name = f"_frozen_param{counter}"
        gm.register_buffer(name, q)
        with gm.graph.inserting_before(node):
            frozen = gm.graph.get_attr(name)
        frozen.meta.update({k: v for k, v in node.meta.items() if k != "val"})
        node.replace_all_uses_with(frozen)
        gm.graph.erase_node(node)
    drop_dead_constants(gm)
    gm.graph.lint()
    gm.recompile()
    return gm
