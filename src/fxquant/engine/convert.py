"""convert: every observer node becomes a quantize/dequantize pair of the standard
``torch.ops.quantized_decomposed`` ops (the reference model), with the parameters the
observer computed."""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

from fxquant.engine.meta import port_meta
from fxquant.engine.observer_kinds import (
    QuantizeDecision,
    checked_qparams,
    decide,
    is_observer_module,
)
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["convert_observers_to_qdq"]

_EPS = torch.finfo(torch.float32).eps


def convert_observers_to_qdq(gm: GraphModule) -> GraphModule:
    """Replace each observer call with q/dq (or nothing, for float observers) and drop the
    observer modules. Raises ``NotCalibratedError`` naming the node if one has no data."""
    converted: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not is_observer_module(gm.get_submodule(str(node.target))):
            continue
        module = gm.get_submodule(str(node.target))
        if hasattr(module, "convert"):  # affine observers emit their own ops
            module.convert(gm, node)  # type: ignore[operator]  # AffineQuantizedObserverBase.convert
        else:
            _replace(gm, node, module, decide(module))
        converted.add(str(node.target))
    for name in converted:
        if hasattr(gm, name):
            delattr(gm, name)
    gm.graph.lint()
    gm.recompile()
    return gm


def _replace(gm: GraphModule, node: Node, module: torch.nn.Module, d: QuantizeDecision) -> None:
    x = node.args[0]
    assert isinstance(x, Node)
    graph = gm.graph
    with graph.inserting_before(node):
        if d.kind == "identity":
            new = x
        elif d.kind == "cast":
            low = graph.call_function(torch.ops.aten._to_copy.default, (x,), {"dtype": d.dtype})
            new = graph.call_function(torch.ops.aten._to_copy.default, (low,), {"dtype": torch.float32})
            port_meta(x, low, new)
        elif d.kind == "dynamic":
            new = _dynamic_qdq(gm, x, d)
        else:
            new = _static_qdq(gm, node, x, module, d)
    if "val" in x.meta and new is not x:
        new.meta.setdefault("val", x.meta["val"])
    node.replace_all_uses_with(new)
    graph.erase_node(node)


def _static_qdq(gm: GraphModule, node: Node, x: Node, module: torch.nn.Module, d: QuantizeDecision) -> Node:
    graph = gm.graph
    users = ", ".join(u.name for u in node.users)
    scale, zero_point = checked_qparams(module, f"{node.target} (observing {x.name}, read by {users})")
    tail = (d.quant_min, d.quant_max, d.dtype)
    if d.kind == "per_channel":
        s = _constant(gm, f"{node.target}_scale", scale.float())
        z = _constant(gm, f"{node.target}_zero_point", zero_point)
        qparams: tuple = (s, z, d.ch_axis)
        q_op, dq_op = qd.quantize_per_channel.default, qd.dequantize_per_channel.default
    else:
        qparams = (float(scale), int(zero_point))
        q_op, dq_op = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
    q = graph.call_function(q_op, (x, *qparams, *tail))
    dq = graph.call_function(dq_op, (q, *qparams, *tail), _out_dtype_kwargs(x))
    port_meta(x, q, dq)
    return dq


def _dynamic_qdq(gm: GraphModule, x: Node, d: QuantizeDecision) -> Node:
    graph = gm.graph
    symmetric = d.qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
    choose = qd.choose_qparams_symmetric.tensor if symmetric else qd.choose_qparams.tensor
    qparams = graph.call_function(choose, (x, d.quant_min, d.quant_max, _EPS, d.dtype))
    scale = graph.call_function(operator.getitem, (qparams, 0))
    zero_point = graph.call_function(operator.getitem, (qparams, 1))
    tail = (d.quant_min, d.quant_max, d.dtype)
    q = graph.call_function(qd.quantize_per_tensor.tensor, (x, scale, zero_point, *tail))
    dq = graph.call_function(qd.dequantize_per_tensor.tensor, (q, scale, zero_point, *tail), _out_dtype_kwargs(x))
    port_meta(x, qparams, scale, zero_point, q, dq)
    return dq


def _out_dtype_kwargs(x: Node) -> dict:
    val = x.meta.get("val")
    if isinstance(val, torch.Tensor) and val.dtype != torch.float32:
        return {"out_dtype": val.dtype}
    return {}


def _constant(gm: GraphModule, prefix: str, value: torch.Tensor) -> Node:
    name = prefix.replace(".", "_")
    i = 0
    while hasattr(gm, f"{name}{i}"):
        i += 1
    gm.register_buffer(f"{name}{i}", value.detach().clone())
    return gm.graph.get_attr(f"{name}{i}")
