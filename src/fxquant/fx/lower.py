"""convert, second half: lower the reference model to torch's quantized CPU kernels.

1. Every ``quantized_decomposed`` per-tensor quantize becomes ``torch.quantize_per_tensor``
   (a quantized tensor) and every dequantize becomes ``Tensor.dequantize``.
2. Patterns ``dequantize → op → quantize`` become one op on quantized tensors:

   * reference conv/linear modules (fused with ReLU or not) → ``fxquant.nn.quantized`` /
     ``fxquant.nn.intrinsic.quantized`` modules with pre-packed weights;
   * ``add``/``mul`` (with a following ReLU) → ``torch.ops.quantized.add[_relu]`` /
     ``mul[_relu]``;
   * ops that keep their input's quantization, and fixed-qparams ops whose output
     parameters are what the kernel produces → the same op on the quantized tensor.

Whatever matches no pattern keeps running in float between dequantize and quantize.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.eager.mappings import (
    get_default_static_quant_module_mappings,
    get_default_static_quant_reference_module_mappings,
)
from fxquant.engine.duplicate_dq import duplicate_dequantize_per_user
from fxquant.fx.annotate import node_op
from fxquant.fx.op_table import RELU_TARGETS, OpKind, fixed_qparams_for, op_kind
from fxquant.nn.intrinsic import _FusedModule
from fxquant.nn.quantized.reference import ReferenceQuantizedModule
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["lower_to_quantized_modules"]

_STORAGE_TO_QDTYPE = {torch.uint8: torch.quint8, torch.int8: torch.qint8, torch.int32: torch.qint32}
_BINARY: dict[tuple[Any, bool], Any] = {
    (operator.add, False): torch.ops.quantized.add, (torch.add, False): torch.ops.quantized.add,
    (operator.add, True): torch.ops.quantized.add_relu, (torch.add, True): torch.ops.quantized.add_relu,
    (operator.mul, False): torch.ops.quantized.mul, (torch.mul, False): torch.ops.quantized.mul,
    (operator.mul, True): torch.ops.quantized.mul_relu, (torch.mul, True): torch.ops.quantized.mul_relu,
    (torch.matmul, False): torch.ops.quantized.matmul,
}
_SCALAR_BINARY = (operator.add, torch.add, operator.mul, torch.mul)


@functools.cache
def _reference_to_quantized() -> dict[type, Any]:
    """Reference (or fused float) module class → quantized module class."""
    static = get_default_static_quant_module_mappings()
    table: dict[type, Any] = {
        ref: static[flt]
        for flt, ref in get_default_static_quant_reference_module_mappings().items()
        if flt in static and isinstance(ref, type)
    }
    table.update({k: v for k, v in static.items() if isinstance(k, type) and issubclass(k, _FusedModule)})
    return table


@functools.cache
def _special_modules() -> dict[type, Any]:
    """Float modules lowered with ``QuantizedClass.from_reference(module, scale, zero_point)``
    when they sit between dequantize and quantize."""
    import fxquant.nn.intrinsic as nni
    import fxquant.nn.intrinsic.quantized as nniq
    import fxquant.nn.quantized as nnq

    return {
        nn.LayerNorm: nnq.LayerNorm, nn.Hardswish: nnq.Hardswish, nn.ELU: nnq.ELU,
        nn.LeakyReLU: nnq.LeakyReLU, nn.Softmax: nnq.Softmax, nn.BatchNorm2d: nnq.BatchNorm2d,
        nn.BatchNorm3d: nnq.BatchNorm3d, nn.InstanceNorm1d: nnq.InstanceNorm1d,
        nn.InstanceNorm2d: nnq.InstanceNorm2d, nn.InstanceNorm3d: nnq.InstanceNorm3d,
        nni.BNReLU2d: nniq.BNReLU2d, nni.BNReLU3d: nniq.BNReLU3d,
    }


def _is_q(node: Any) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target == torch.quantize_per_tensor


def _is_dq(node: Any) -> bool:
    return isinstance(node, Node) and node.op == "call_method" and node.target == "dequantize"


def _qparams(q: Node) -> tuple[float, int]:
    return float(q.args[1]), int(q.args[2])  # type: ignore[arg-type]  # constants set by _to_quantized_tensors


def _to_quantized_tensors(gm: GraphModule) -> None:
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target == qd.quantize_per_tensor.default:
            x, scale, zero_point, _, _, dtype = node.args
            with graph.inserting_before(node):
                new = graph.call_function(
                    torch.quantize_per_tensor, (x, float(scale), int(zero_point), _STORAGE_TO_QDTYPE[dtype])
                )
        elif node.target == qd.dequantize_per_tensor.default and _is_q(node.args[0]):
            with graph.inserting_before(node):
                new = graph.call_method("dequantize", (node.args[0],))
        else:
            continue
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)


def _sole_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _output_quantize(node: Node) -> Node | None:
    user = _sole_user(node)
    return user if _is_q(user) else None


def _replace_output(gm: GraphModule, q: Node, new: Node) -> None:
    q.replace_all_uses_with(new)
    gm.graph.erase_node(q)


def _bypass_dequantize(node: Node, dq: Node) -> None:
    node.replace_input_with(dq, dq.args[0])  # type: ignore[arg-type]  # dq reads one node


def _is_reference(module: nn.Module) -> bool:
    inner = module[0] if isinstance(module, _FusedModule) else module
    return isinstance(inner, ReferenceQuantizedModule)


def _lower_module(gm: GraphModule, node: Node, table: dict[type, Any]) -> bool:
    module = gm.get_submodule(str(node.target))
    q, dq = _output_quantize(node), node.args[0] if node.args else None
    if q is None or not _is_dq(dq):
        return False
    quantized_class = table.get(type(module))
    if quantized_class is None:
        return False
    gm.add_submodule(str(node.target), quantized_class.from_reference(module, *_qparams(q)))
    assert isinstance(dq, Node)
    _bypass_dequantize(node, dq)
    _replace_output(gm, q, node)
    return True


def _is_relu(gm: GraphModule, node: Node | None) -> bool:
    if node is None:
        return False
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))) is nn.ReLU
    return (node.op == "call_function" and node.target in RELU_TARGETS) or (
        node.op == "call_method" and node.target in ("relu", "relu_")
    )


def _lower_binary(gm: GraphModule, node: Node) -> bool:
    a, b = (node.args + (None, None))[:2]
    if node.kwargs:
        return False
    if _is_dq(a) != _is_dq(b):
        return _lower_binary_scalar(gm, node, a, b)
    if not (_is_dq(a) and _is_dq(b)):
        return False
    relu = _sole_user(node) if _is_relu(gm, _sole_user(node)) else None
    q = _output_quantize(relu if relu is not None else node)
    op = _BINARY.get((node.target, relu is not None))
    if q is None or op is None:
        return False
    assert isinstance(a, Node) and isinstance(b, Node)
    with gm.graph.inserting_before(q):
        new = gm.graph.call_function(op, (a.args[0], b.args[0], *_qparams(q)))
    new.meta.update(q.meta)
    _replace_output(gm, q, new)
    return True


def _lower_binary_scalar(gm: GraphModule, node: Node, a: Any, b: Any) -> bool:
    """``dq(x) op scalar → q`` (output sharing x's parameters) → the kernel's scalar form,
    which picks the output parameters itself, as upstream's lowering does."""
    dq, scalar = (a, b) if _is_dq(a) else (b, a)
    q = _output_quantize(node)
    if q is None or not isinstance(scalar, (int, float)) or isinstance(scalar, bool):
        return False
    if node.target not in _SCALAR_BINARY:
        return False
    with gm.graph.inserting_before(q):
        new = gm.graph.call_function(_BINARY[(node.target, False)], (dq.args[0], scalar))
    new.meta.update(q.meta)
    _replace_output(gm, q, new)
    return True


def _input_qparams(dq: Node) -> tuple[float, int]:
    source = dq.args[0]
    assert isinstance(source, Node)
    return _qparams(source) if _is_q(source) else (float("nan"), 0)


def _lower_passthrough(gm: GraphModule, node: Node, kind: OpKind) -> bool:
    dq, q = node.args[0] if node.args else None, _output_quantize(node)
    if q is None or not _is_dq(dq):
        return False
    assert isinstance(dq, Node)
    out = _qparams(q)
    if kind is OpKind.SHARED:
        source = dq.args[0]
        # the input is a quantized tensor whose parameters the output keeps
        if _is_q(source) and _input_qparams(dq) != out:
            return False
    else:
        qdtype = q.args[3]
        fixed = fixed_qparams_for(node_op(gm, node), qdtype)  # type: ignore[arg-type]  # a dtype
        if fixed is None or (float(fixed[0]), int(fixed[1])) != out:
            return False
    _bypass_dequantize(node, dq)
    _replace_output(gm, q, node)
    return True


def _lower_node(gm: GraphModule, node: Node) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if _is_reference(module):
            return _lower_module(gm, node, _reference_to_quantized())
        if type(module) in _special_modules():
            return _lower_module(gm, node, _special_modules())
    kind = op_kind(node_op(gm, node)) if node.op in ("call_function", "call_method", "call_module") else None
    if kind is OpKind.BINARY:
        return _lower_binary(gm, node)
    if kind in (OpKind.SHARED, OpKind.FIXED):
        return _lower_passthrough(gm, node, kind)
    return False


def _keep_outputs_quantized(gm: GraphModule, indexes: list[int]) -> None:
    """Return the quantized tensor itself for the outputs at ``indexes``."""
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    value = output.args[0]
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    for i in indexes:
        if _is_dq(values[i]):
            values[i] = values[i].args[0]
    new = type(value)(values) if isinstance(value, (tuple, list)) else values[0]
    output.args = (new,)


def lower_to_quantized_modules(gm: GraphModule, output_quantized_indexes: list[int] | None = None) -> GraphModule:
    """Lower the reference model ``gm`` in place; returns it recompiled. The outputs at
    ``output_quantized_indexes`` are returned as quantized tensors."""
    duplicate_dequantize_per_user(gm)
    _to_quantized_tensors(gm)
    for node in list(gm.graph.nodes):
        if node.graph is gm.graph:
            _lower_node(gm, node)
    _keep_outputs_quantized(gm, output_quantized_indexes or [])
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
