"""Lowering of functional conv / linear calls whose weight is a parameter of the model.

In the reference model they read ``dequantize(quantize(weight))`` (the weight observed at
prepare, per tensor or per channel) and a dequantized input, and are followed (optionally
through a ReLU) by a per-tensor quantize. Lowered, the weight is quantized and pre-packed
once, now, and the call becomes ``torch.ops.quantized.conv{1,2,3}d[_relu]`` /
``linear[_relu]`` on the quantized input with the output's scale and zero point — the
kernels upstream's lowering uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["lower_functional_weighted"]

_STORAGE_TO_QDTYPE = {torch.uint8: torch.quint8, torch.int8: torch.qint8}
_CONV_ARG_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_LINEAR_ARG_NAMES = ("input", "weight", "bias")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _conv_ops(dim: int) -> tuple[Callable[..., Any], Any, Any]:
    ops = torch.ops.quantized
    return {
        1: (ops.conv1d_prepack, ops.conv1d, ops.conv1d_relu),
        2: (ops.conv2d_prepack, ops.conv2d, ops.conv2d_relu),
        3: (ops.conv3d_prepack, ops.conv3d, ops.conv3d_relu),
    }[dim]


_CONV_DIMS: dict[Any, int] = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def _call_args(node: Node, names: tuple[str, ...]) -> dict[str, Any]:
    args = dict(zip(names, node.args))
    args.update(node.kwargs)
    return args


def _as_list(value: Any, dim: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * dim


def _is_relu(node: Node | None) -> bool:
    return node is not None and ((node.op == "call_function" and node.target in (F.relu, torch.relu))
                                 or (node.op == "call_method" and node.target in ("relu", "relu_")))


def _sole_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _attr(gm: GraphModule, node: Any) -> Any:
    """The value of a get_attr node (other arguments as they are)."""
    if isinstance(node, Node) and node.op == "get_attr":
        return _fetch(gm, str(node.target))
    return node


def _fetch(gm: GraphModule, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def _quantized_weight(gm: GraphModule, dq: Any) -> torch.Tensor | None:
    """The quantized weight tensor that ``dq`` (a decomposed dequantize of a quantize of a
    get_attr) stands for, or None."""
    if not isinstance(dq, Node) or dq.op not in ("call_function", "call_method"):
        return None
    q = dq.args[0]
    if not isinstance(q, Node) or q.op != "call_function":
        return None
    weight = _attr(gm, q.args[0])
    if not isinstance(weight, torch.Tensor) or not isinstance(q.args[0], Node):
        return None
    if dq.target == qd.dequantize_per_channel.default and q.target == qd.quantize_per_channel.default:
        _, scale, zero_point, axis, _, _, dtype = q.args
        return torch.quantize_per_channel(weight.detach(), _attr(gm, scale), _attr(gm, zero_point),
                                          int(axis), _STORAGE_TO_QDTYPE[dtype])  # type: ignore[arg-type, index]  # graph constants
    if dq.target == "dequantize" and q.target == torch.quantize_per_tensor:
        # a per-tensor weight: already a quantized-tensor op after the first lowering step
        _, scale, zero_point, qdtype = q.args
        return torch.quantize_per_tensor(weight.detach(), float(scale), int(zero_point), qdtype)  # type: ignore[arg-type]  # graph constants
    return None


def _register(gm: GraphModule, prefix: str, value: Any) -> str:
    i = 0
    while hasattr(gm, f"{prefix}{i}"):
        i += 1
    setattr(gm, f"{prefix}{i}", value)
    return f"{prefix}{i}"


def _lower_one(gm: GraphModule, node: Node, is_q: Callable[[Any], bool], is_dq: Callable[[Any], bool]) -> bool:
    dim = _CONV_DIMS.get(node.target)
    args = _call_args(node, _CONV_ARG_NAMES if dim else _LINEAR_ARG_NAMES)
    x = args.get("input")
    weight = _quantized_weight(gm, args.get("weight"))
    if weight is None or not is_dq(x):
        return False
    relu = _sole_user(node) if _is_relu(_sole_user(node)) else None
    q = _sole_user(relu if relu is not None else node)
    if not is_q(q):
        return False
    assert isinstance(q, Node) and isinstance(x, Node)
    bias = _attr(gm, args.get("bias"))
    if bias is not None and not isinstance(bias, torch.Tensor):
        return False
    bias = bias.detach() if bias is not None else None
    if dim:
        prepack, op, op_relu = _conv_ops(dim)
        full = {**_CONV_DEFAULTS, **args}
        packed = prepack(weight, bias, _as_list(full["stride"], dim), _as_list(full["padding"], dim),
                         _as_list(full["dilation"], dim), int(full["groups"]))
    else:
        packed = torch.ops.quantized.linear_prepack(weight, bias)
        op, op_relu = torch.ops.quantized.linear, torch.ops.quantized.linear_relu
    name = _register(gm, "_packed_weight_", packed)
    with gm.graph.inserting_before(q):
        packed_node = gm.graph.get_attr(name)
        new = gm.graph.call_function(op_relu if relu is not None else op,
                                     (x.args[0], packed_node, q.args[1], q.args[2]))
    new.meta.update(q.meta)
    q.replace_all_uses_with(new)
    gm.graph.erase_node(q)
    return True


def lower_functional_weighted(gm: GraphModule, is_q: Callable[[Any], bool], is_dq: Callable[[Any], bool]) -> None:
    """Lower every ``dq → F.conv*/F.linear(dq(q(weight))) → [relu] → q`` in ``gm`` (after
    quantize/dequantize became quantized-tensor ops; ``is_q``/``is_dq`` recognise them)."""
    for node in list(gm.graph.nodes):
        if node.graph is gm.graph and node.op == "call_function" and \
                (node.target in _CONV_DIMS or node.target is F.linear):
            _lower_one(gm, node, is_q, is_dq)
