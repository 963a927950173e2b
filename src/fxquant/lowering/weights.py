"""Int8 weights of the converted graph as torch quantized tensors, and their pre-packing.

In a converted PT2E graph a weight is an int8 constant read through
``dequantize_per_channel`` (or ``dequantize_per_tensor``); the quantized CPU kernels take the
same integers and scales as a ``torch.qint8`` tensor, packed once for the kernel
(``quantized::linear_prepack`` here; convolutions in :mod:`fxquant.lowering.kernels`).
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import constant_value
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["float_weight", "pack_linear", "quantized_weight"]

_INT8_RANGE = (-128, 127)


def quantized_weight(gm: GraphModule, node: object) -> torch.Tensor | None:
    """The ``torch.qint8`` tensor that a weight ``dequantize`` node computes the float value
    of, or None if ``node`` is not the dequantize of an int8 constant along axis 0."""
    if not isinstance(node, Node) or node.op != "call_function":
        return None
    w = constant_value(gm, node.args[0])
    if w is None or w.dtype != torch.int8 or node.kwargs:
        return None
    if node.target == qd.dequantize_per_channel.default:
        scales, zero_points = constant_value(gm, node.args[1]), constant_value(gm, node.args[2])
        axis, qmin, qmax = node.args[3:6]
        if scales is None or zero_points is None or axis != 0:
            return None
        if not isinstance(qmin, int) or not isinstance(qmax, int):
            return None
        if (qmin, qmax) != _INT8_RANGE and not _within(w, qmin, qmax):
            return None
        return torch._make_per_channel_quantized_tensor(w, scales.double(), zero_points.long(), 0)
    if node.target == qd.dequantize_per_tensor.default:
        scale, zero_point, qmin, qmax = node.args[1:5]
        if not isinstance(scale, float) or not isinstance(zero_point, int):
            return None
        if not isinstance(qmin, int) or not isinstance(qmax, int):
            return None
        if (qmin, qmax) != _INT8_RANGE and not _within(w, qmin, qmax):
            return None
        return torch._make_per_tensor_quantized_tensor(w, scale, zero_point)
    return None


def float_weight(gm: GraphModule, node: Node) -> torch.Tensor | None:
    """The float value of a weight ``dequantize`` node, computed once (None if it is not one)."""
    w = quantized_weight(gm, node)
    return None if w is None else w.dequantize()


def pack_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> object:
    """Pre-pack a qint8 linear weight (and float bias) for ``quantized::linear``."""
    return torch.ops.quantized.linear_prepack(weight, bias)


def _within(w: torch.Tensor, qmin: int, qmax: int) -> bool:
    # a restricted range (e.g. [-127, 127]) only constrains the stored integers
    return bool(w.numel() == 0 or (int(w.min()) >= qmin and int(w.max()) <= qmax))
