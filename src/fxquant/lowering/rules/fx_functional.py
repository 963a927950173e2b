"""The rule lowering FX graphs' functional conv / linear calls whose weight is a model constant.

In ``convert_fx``'s reference graph they read ``dequantize(quantize(weight))`` (the weight
observed at prepare, per tensor or per channel) and a dequantized input, and are followed
(optionally through a ReLU) by a per-tensor quantize. Lowered (``fx_functional``), the weight
is quantized and pre-packed once, now, and the call becomes
``torch.ops.quantized.conv{1,2,3}d[_relu]`` / ``linear[_relu]`` on the quantized input with the
output's scale and zero point -- the kernels upstream's lowering uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import add_constant, constant_value, qmeta, set_qmeta
from fxquant.lowering.rule import (
    FX,
    LoweringRule,
    Match,
    dequantized_input,
    quint8_activations,
    sole_producer,
)
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["FX_FUNCTIONAL_RULES"]

_STORAGE_TO_QDTYPE = {torch.uint8: torch.quint8, torch.int8: torch.qint8}
_CONV_ARG_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_LINEAR_ARG_NAMES = ("input", "weight", "bias")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_CONV_DIMS: dict[Any, int] = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def _conv_ops(dim: int) -> tuple[Callable[..., Any], Any, Any]:
    ops = torch.ops.quantized
    return {
        1: (ops.conv1d_prepack, ops.conv1d, ops.conv1d_relu),
        2: (ops.conv2d_prepack, ops.conv2d, ops.conv2d_relu),
        3: (ops.conv3d_prepack, ops.conv3d, ops.conv3d_relu),
    }[dim]


def _call_args(node: Node, names: tuple[str, ...]) -> dict[str, Any]:
    args = dict(zip(names, node.args))
    args.update(node.kwargs)
    return args


def _as_list(value: Any, dim: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * dim


def _is_functional_relu(node: Node) -> bool:
    return (node.op == "call_function" and node.target in (F.relu, torch.relu)) or (
        node.op == "call_method" and node.target in ("relu", "relu_")
    )


def _quantized_weight(gm: GraphModule, dq: Any) -> torch.Tensor | None:
    """The quantized weight tensor that ``dq`` (a dequantize of a quantize of a constant)
    stands for, or None."""
    if not isinstance(dq, Node):
        return None
    q = dequantized_input(dq)  # per tensor: a quantized-tensor boundary since stage 0
    if q is not None:
        weight, meta = constant_value(gm, q.args[0]), qmeta(q)
        if weight is None or meta is None:
            return None
        return torch.quantize_per_tensor(weight.detach(), meta.scale, meta.zero_point, meta.dtype)
    per_channel = dq.args[0] if dq.args else None
    if dq.target != qd.dequantize_per_channel.default or not isinstance(per_channel, Node) \
            or per_channel.target != qd.quantize_per_channel.default:
        return None
    weight, scale, zero_point = (constant_value(gm, a) for a in per_channel.args[:3])
    axis, dtype = per_channel.args[3], per_channel.args[6]
    if weight is None or scale is None or zero_point is None or not isinstance(axis, int) \
            or not isinstance(dtype, torch.dtype) or dtype not in _STORAGE_TO_QDTYPE:
        return None
    return torch.quantize_per_channel(weight.detach(), scale, zero_point, axis, _STORAGE_TO_QDTYPE[dtype])


def _match(q: Node, gm: GraphModule) -> Match | None:
    node = sole_producer(q)
    relu = node is not None and _is_functional_relu(node)
    if relu:
        assert node is not None
        node = sole_producer(node)
    if node is None or node.op != "call_function" or not (node.target in _CONV_DIMS or node.target is F.linear):
        return None
    dim = _CONV_DIMS.get(node.target)
    args = _call_args(node, _CONV_ARG_NAMES if dim else _LINEAR_ARG_NAMES)
    x, weight = dequantized_input(args.get("input")), _quantized_weight(gm, args.get("weight"))
    bias = args.get("bias")
    bias_value = None if bias is None else constant_value(gm, bias)
    if x is None or weight is None or (bias is not None and bias_value is None):
        return None
    if not quint8_activations(q, [args.get("input")]):
        return None
    return {"x": x, "weight": weight, "bias": bias_value, "relu": relu, "dim": dim, "args": args}


def _rewrite(q: Node, m: Match, gm: GraphModule) -> Node:
    bias = None if m["bias"] is None else m["bias"].detach()
    dim = m["dim"]
    if dim:
        prepack, op, op_relu = _conv_ops(dim)
        full = {**_CONV_DEFAULTS, **m["args"]}
        packed = prepack(m["weight"], bias, _as_list(full["stride"], dim), _as_list(full["padding"], dim),
                         _as_list(full["dilation"], dim), int(full["groups"]))
    else:
        packed = torch.ops.quantized.linear_prepack(m["weight"], bias)
        op, op_relu = torch.ops.quantized.linear, torch.ops.quantized.linear_relu
    meta = qmeta(q)
    assert meta is not None  # anchors are tensorized quantize nodes
    packed_node = add_constant(gm, "_packed_weight_", packed, q, upstream_name=True)
    new = gm.graph.call_function(op_relu if m["relu"] else op, (m["x"], packed_node, meta.scale, meta.zero_point))
    new.meta.update(q.meta)
    return set_qmeta(new, meta)


FX_FUNCTIONAL_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="fx_functional", anchors=frozenset({torch.quantize_per_tensor}), dialects=FX,
                 match=_match, rewrite=_rewrite, exact=False,
                 doc="q(relu?(F.conv*/F.linear(dq x, dq(q w), b))) -> quantized.conv*d/linear[_relu]"),
)
