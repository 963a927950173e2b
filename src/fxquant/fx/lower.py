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
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.backend_config.clamp_output import CLAMP_OPS
from fxquant.eager.mappings import (
    get_default_static_quant_module_mappings,
    get_default_static_quant_reference_module_mappings,
)
from fxquant.engine.duplicate_dq import duplicate_dequantize_per_user
from fxquant.fx.annotate import QUANT_MODE_META_KEY, QuantMode, node_op
from fxquant.fx.lower_functional import lower_functional_weighted
from fxquant.fx.quantized_tensor_ops import (
    IDENTITY_OPS,
    RELU_TARGETS,
    fixed_output_qparams,
    runs_on_quantized_tensor,
)
from fxquant.nn.intrinsic import _FusedModule
from fxquant.nn.quantized.reference import ReferenceQuantizedModule
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["lower_to_quantized_modules"]

_STORAGE_TO_QDTYPE = {torch.uint8: torch.quint8, torch.int8: torch.qint8, torch.int32: torch.qint32}
_QDTYPE_TO_STORAGE = {v: k for k, v in _STORAGE_TO_QDTYPE.items()}
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


@functools.cache
def _reference_to_dynamic() -> dict[type, Any]:
    """Reference (or fused) module class → dynamically quantized module class."""
    import fxquant.nn.intrinsic as nni
    import fxquant.nn.intrinsic.quantized.dynamic as nniqd
    import fxquant.nn.quantized.dynamic as nnqd
    import fxquant.nn.quantized.reference as nnqr

    return {
        nnqr.Linear: nnqd.Linear, nni.LinearReLU: nniqd.LinearReLU, nnqr.LSTM: nnqd.LSTM,
        nnqr.GRU: nnqd.GRU, nnqr.LSTMCell: nnqd.LSTMCell, nnqr.GRUCell: nnqd.GRUCell,
        nnqr.RNNCell: nnqd.RNNCell,
    }


@functools.cache
def _reference_to_weight_only() -> dict[type, Any]:
    """Reference module class → weight-only quantized module class."""
    import fxquant.nn.quantized as nnq
    import fxquant.nn.quantized.reference as nnqr

    return {nnqr.Embedding: nnq.Embedding, nnqr.EmbeddingBag: nnq.EmbeddingBag}


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


_LOWERED_QPARAMS_KEY = "fxquant_lowered_qparams"


def _replace_output(gm: GraphModule, q: Node, new: Node) -> None:
    """``new`` now produces the quantized tensor ``q`` produced; it remembers ``q``'s
    parameters so that later rules can check what its consumers read."""
    new.meta[_LOWERED_QPARAMS_KEY] = _qparams(q)
    q.replace_all_uses_with(new)
    gm.graph.erase_node(q)


def _bypass_dequantize(node: Node, dq: Node) -> None:
    node.replace_input_with(dq, dq.args[0])  # type: ignore[arg-type]  # dq reads one node


def _is_reference(module: nn.Module) -> bool:
    inner = module[0] if isinstance(module, _FusedModule) else module
    return isinstance(inner, ReferenceQuantizedModule)


# during lowering: module name -> (reference module, output qparams it was lowered with)
_LOWERED_META_KEY = "fxquant_fx_lowered_modules"


def _swap_in(gm: GraphModule, node: Node, quantized_class: Any, qparams: tuple[float, int]) -> None:
    """Give ``node`` the quantized module for its reference module and ``qparams``. A module
    called more than once is lowered once per distinct output quantization (each call
    keeps its own parameters)."""
    lowered: dict[str, tuple[nn.Module, tuple[float, int]]] = gm.meta.setdefault(_LOWERED_META_KEY, {})
    target = str(node.target)
    if target not in lowered:
        lowered[target] = (gm.get_submodule(target), qparams)
        gm.add_submodule(target, quantized_class.from_reference(lowered[target][0], *qparams))
        return
    reference, first = lowered[target]
    if first == qparams:
        return  # the quantized module made for an earlier call fits this one
    i = 1
    while hasattr(gm, f"{target.replace('.', '_')}_call{i}"):
        i += 1
    name = f"{target.replace('.', '_')}_call{i}"
    gm.add_submodule(name, quantized_class.from_reference(reference, *qparams))
    lowered[name] = (reference, qparams)
    node.target = name


def _reference_of(gm: GraphModule, node: Node) -> nn.Module:
    """The reference module behind ``node`` (also after an earlier call lowered it)."""
    lowered = gm.meta.get(_LOWERED_META_KEY, {})
    entry = lowered.get(str(node.target))
    return entry[0] if entry is not None else gm.get_submodule(str(node.target))


def _lower_module(gm: GraphModule, node: Node, table: dict[type, Any]) -> bool:
    module = _reference_of(gm, node)
    q, dq = _output_quantize(node), node.args[0] if node.args else None
    if q is None or not _is_dq(dq):
        return False
    quantized_class = table.get(type(module))
    if quantized_class is None:
        return False
    extra = [a for a in node.args[1:] if isinstance(a, Node)]  # conv + add: the added tensor
    if not all(_is_dq(a) for a in extra):
        return False
    _swap_in(gm, node, quantized_class, _qparams(q))
    assert isinstance(dq, Node)
    for d in dict.fromkeys([dq, *extra]):
        _bypass_dequantize(node, d)
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


def _input_qparams(dq: Node) -> tuple[float, int] | None:
    """The quantization parameters of the tensor ``dq`` dequantizes, if known: from its
    quantize node, or from the already-lowered node producing it."""
    source = dq.args[0]
    assert isinstance(source, Node)
    return _qparams(source) if _is_q(source) else source.meta.get(_LOWERED_QPARAMS_KEY)


def _dequantized_inputs(node: Node) -> list[Node] | None:
    """The dequantize nodes feeding ``node``'s first argument (a node or a list of nodes,
    as for ``cat``), or None if it is not fed by dequantize."""
    first = node.args[0] if node.args else None
    items = list(first) if isinstance(first, (list, tuple)) else [first]
    if not items or not all(_is_dq(x) for x in items):
        return None
    return items  # type: ignore[return-value]  # checked by _is_dq


def _lower_passthrough(gm: GraphModule, node: Node, op: Any) -> bool:
    """``dq → op → q`` → ``op`` on the quantized tensor, when the kernel's output has the
    parameters ``q`` asks for (the input's, or the fixed ones of sigmoid/tanh)."""
    dqs, q = _dequantized_inputs(node), _output_quantize(node)
    if q is None or dqs is None:
        return False
    out = _qparams(q)
    if op in IDENTITY_OPS:
        pass  # the output keeps the input's parameters, as upstream's lowering leaves it
    elif runs_on_quantized_tensor(op):
        # every input is a quantized tensor whose parameters the output keeps
        # lowered only when every input's parameters are known to equal the output's
        if any(_input_qparams(dq) != out for dq in dqs):
            return False
    else:
        fixed = fixed_output_qparams(op, q.args[3])  # type: ignore[arg-type]  # a dtype
        if fixed is None or (float(fixed[0]), int(fixed[1])) != out or len(dqs) != 1:
            return False
    for dq in dqs:
        _bypass_dequantize(node, dq)
    _replace_output(gm, q, node)
    return True


def _clamp_bounds(gm: GraphModule, node: Node | None) -> tuple[float, float] | None:
    """(min, max) of a ReLU6 / hardtanh node, or None for other nodes."""
    if node is None or node_op(gm, node) not in CLAMP_OPS:
        return None
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return float(module.min_val), float(module.max_val)  # type: ignore[arg-type]  # Hardtanh attrs
    if node.target is F.relu6:
        return 0.0, 6.0
    params: dict[str, Any] = dict(zip(("min_val", "max_val"), node.args[1:3]))
    params.update({k: v for k, v in node.kwargs.items() if k in ("min_val", "max_val")})
    return float(params.get("min_val", -1.0)), float(params.get("max_val", 1.0))


def _lower_clamped_module(gm: GraphModule, node: Node, table: dict[type, Any]) -> bool:
    """``dq → reference conv/linear → relu6/hardtanh → q`` (observed after the clamp): the
    quantized module with ``q``'s parameters; the clamp is dropped when those cannot
    represent anything outside its interval, else it runs on the quantized output."""
    clamp = _sole_user(node)
    bounds = _clamp_bounds(gm, clamp)
    dq = node.args[0] if node.args else None
    if bounds is None or clamp is None or clamp.args[:1] != (node,) or not _is_dq(dq):
        return False
    q = _output_quantize(clamp)
    quantized_class = table.get(type(_reference_of(gm, node)))
    if q is None or quantized_class is None:
        return False
    scale, zero_point = _qparams(q)
    info = torch.iinfo(_QDTYPE_TO_STORAGE[q.args[3]])  # type: ignore[index]  # a dtype
    low, high = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    _swap_in(gm, node, quantized_class, (scale, zero_point))
    assert isinstance(dq, Node)
    _bypass_dequantize(node, dq)
    if bounds[0] <= low and high <= bounds[1]:
        _replace_output(gm, q, node)
    else:
        with gm.graph.inserting_before(q):
            kept = gm.graph.call_function(F.hardtanh, (node, *bounds))
        kept.meta.update(q.meta)
        _replace_output(gm, q, kept)
    gm.graph.erase_node(clamp)
    return True


def _lower_unobserved_module(gm: GraphModule, node: Node, mode: str) -> bool:
    """A dynamically or weight-only quantized reference module → its quantized module; the
    run-time choose_qparams → quantize → dequantize of a dynamic input is dropped (the
    dynamic kernel does it)."""
    table = _reference_to_dynamic() if mode == QuantMode.DYNAMIC else _reference_to_weight_only()
    module = gm.get_submodule(str(node.target))
    quantized_class = table.get(type(module))
    if quantized_class is None:
        return False
    gm.add_submodule(str(node.target), quantized_class.from_reference(module))
    dq = node.args[0] if node.args else None
    if isinstance(dq, Node) and dq.op == "call_function" and dq.target == qd.dequantize_per_tensor.tensor:
        q = dq.args[0]
        assert isinstance(q, Node)
        node.replace_input_with(dq, q.args[0])  # type: ignore[arg-type]  # q reads one node
    return True


def _lower_node(gm: GraphModule, node: Node) -> bool:
    mode = node.meta.get(QUANT_MODE_META_KEY)
    if mode in (QuantMode.DYNAMIC, QuantMode.WEIGHT_ONLY):
        return _lower_unobserved_module(gm, node, mode)
    if node.op == "call_module":
        module = _reference_of(gm, node)
        if _is_reference(module):
            table = _reference_to_quantized()
            return _lower_module(gm, node, table) or _lower_clamped_module(gm, node, table)
        if type(module) in _special_modules():
            return _lower_module(gm, node, _special_modules())
    if node.op not in ("call_function", "call_method", "call_module"):
        return False
    op = node_op(gm, node)
    if node.op == "call_function" and any(node.target is k[0] for k in _BINARY):
        return _lower_binary(gm, node)
    return _lower_passthrough(gm, node, op)


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
    lower_functional_weighted(gm, _is_q, _is_dq)
    for node in list(gm.graph.nodes):
        if node.graph is gm.graph:
            _lower_node(gm, node)
    gm.meta.pop(_LOWERED_META_KEY, None)
    _keep_outputs_quantized(gm, output_quantized_indexes or [])
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
