"""Rules lowering FX graphs' module calls to ``fxquant.nn`` quantized modules (``convert_fx``).

* ``fx_module``: ``q(reference_module(dq x[, dq y]))`` → the quantized module
  (``fxquant.nn.quantized.Conv2d``, ``fxquant.nn.intrinsic.quantized.ConvReLU2d``, ...) made
  with ``from_reference(module, scale, zero_point)`` of ``q``; the float modules with a
  quantized counterpart (LayerNorm, Hardswish, batch norm, ...) likewise;
* ``fx_module_clamp``: ``q(relu6|hardtanh(reference_module(dq x)))`` (observed after the
  clamp) → the quantized module with ``q``'s parameters; the clamp is dropped when those
  cannot represent anything outside its interval, else it runs on the quantized output;
* ``fx_dynamic_module`` / ``fx_weight_only_module``: dynamically / weight-only quantized
  reference modules → their quantized modules; the run-time ``choose_qparams → quantize →
  dequantize`` of a dynamic input is dropped (the dynamic kernel does it).

A module called more than once is lowered once per distinct output quantization; the rules
remember what they lowered in the graph module's meta until :func:`forget_lowered_modules`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

import fxquant.nn.intrinsic as nni
import fxquant.nn.intrinsic.quantized as nniq
import fxquant.nn.intrinsic.quantized.dynamic as nniqd
import fxquant.nn.quantized as nnq
import fxquant.nn.quantized.dynamic as nnqd
import fxquant.nn.quantized.reference as nnqr
from fxquant.backend_config.clamp_output import CLAMP_OPS
from fxquant.eager.mappings import (
    get_default_static_quant_module_mappings,
    get_default_static_quant_reference_module_mappings,
)
from fxquant.fx.annotate import QUANT_MODE_META_KEY, QuantMode, node_op
from fxquant.lowering.graph import QTensorMeta, qmeta, set_qmeta
from fxquant.lowering.rule import (
    FX,
    LoweringRule,
    Match,
    dequantized_input,
    quint8_activations,
    sole_producer,
)
from fxquant.nn.intrinsic import _FusedModule
from fxquant.nn.quantized.reference import ReferenceQuantizedModule
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["FX_MODULE_RULES", "forget_lowered_modules"]

# float modules lowered with QuantizedClass.from_reference(module, scale, zero_point)
_SPECIAL_MODULES: dict[type, Any] = {
    nn.LayerNorm: nnq.LayerNorm, nn.Hardswish: nnq.Hardswish, nn.ELU: nnq.ELU,
    nn.LeakyReLU: nnq.LeakyReLU, nn.Softmax: nnq.Softmax, nn.BatchNorm2d: nnq.BatchNorm2d,
    nn.BatchNorm3d: nnq.BatchNorm3d, nn.InstanceNorm1d: nnq.InstanceNorm1d,
    nn.InstanceNorm2d: nnq.InstanceNorm2d, nn.InstanceNorm3d: nnq.InstanceNorm3d,
    nni.BNReLU2d: nniq.BNReLU2d, nni.BNReLU3d: nniq.BNReLU3d,
}
# reference (or fused) module class -> dynamically quantized module class
_DYNAMIC_MODULES: dict[type, Any] = {
    nnqr.Linear: nnqd.Linear, nni.LinearReLU: nniqd.LinearReLU, nnqr.LSTM: nnqd.LSTM,
    nnqr.GRU: nnqd.GRU, nnqr.LSTMCell: nnqd.LSTMCell, nnqr.GRUCell: nnqd.GRUCell,
    nnqr.RNNCell: nnqd.RNNCell,
}
# reference module class -> weight-only quantized module class
_WEIGHT_ONLY_MODULES: dict[type, Any] = {nnqr.Embedding: nnq.Embedding, nnqr.EmbeddingBag: nnq.EmbeddingBag}

_QUANTIZE = frozenset({torch.quantize_per_tensor})
# during lowering: module name -> (reference module, output qparams it was lowered with)
_LOWERED_META_KEY = "fxquant_fx_lowered_modules"


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


def forget_lowered_modules(gm: GraphModule) -> None:
    """Drop the record of lowered modules (their reference modules) once lowering is done."""
    gm.meta.pop(_LOWERED_META_KEY, None)


def _is_reference(module: nn.Module) -> bool:
    inner = module[0] if isinstance(module, _FusedModule) else module
    return isinstance(inner, ReferenceQuantizedModule)


def _reference_of(gm: GraphModule, node: Node) -> nn.Module:
    """The reference module behind ``node`` (also after an earlier call lowered it)."""
    entry = gm.meta.get(_LOWERED_META_KEY, {}).get(str(node.target))
    return entry[0] if entry is not None else gm.get_submodule(str(node.target))


def _static_module(gm: GraphModule, node: Node | None, *, reference_only: bool) -> Any:
    """The quantized class a statically quantized module call ``node`` lowers to, or None."""
    if node is None or node.op != "call_module" or node.meta.get(QUANT_MODE_META_KEY) in (
        QuantMode.DYNAMIC, QuantMode.WEIGHT_ONLY
    ):
        return None
    module = _reference_of(gm, node)
    if _is_reference(module):
        return _reference_to_quantized().get(type(module))
    return None if reference_only else _SPECIAL_MODULES.get(type(module))


def _swap_in(gm: GraphModule, node: Node, quantized_class: Any, meta: QTensorMeta) -> None:
    """Give ``node`` the quantized module for its reference module and ``meta``'s output
    parameters. A module called more than once is lowered once per distinct output
    quantization (each call keeps its own parameters)."""
    qparams = (meta.scale, meta.zero_point)
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


def _bypass_dequantize(node: Node, dqs: list[Node]) -> None:
    for dq in dict.fromkeys(dqs):
        node.replace_input_with(dq, dq.args[0])  # type: ignore[arg-type]  # dq reads one node


def _match_module(q: Node, gm: GraphModule) -> Match | None:
    node = sole_producer(q)
    quantized_class = _static_module(gm, node, reference_only=False)
    if node is None or quantized_class is None or not node.args:
        return None
    dqs = [node.args[0], *(a for a in node.args[1:] if isinstance(a, Node))]  # conv + add: the added tensor
    if any(dequantized_input(d) is None for d in dqs) or not quint8_activations(q, dqs):
        return None
    return {"node": node, "class": quantized_class, "dqs": dqs}


def _rewrite_module(q: Node, m: Match, gm: GraphModule) -> Node:
    meta = qmeta(q)
    assert meta is not None  # anchors are tensorized quantize nodes
    node: Node = m["node"]
    _swap_in(gm, node, m["class"], meta)
    _bypass_dequantize(node, m["dqs"])
    return set_qmeta(node, meta)


def _clamp_bounds(gm: GraphModule, node: Node) -> tuple[float, float] | None:
    """(min, max) of a ReLU6 / hardtanh node, or None for other nodes."""
    if node_op(gm, node) not in CLAMP_OPS:
        return None
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return float(module.min_val), float(module.max_val)  # type: ignore[arg-type]  # Hardtanh attrs
    if node.target is F.relu6:
        return 0.0, 6.0
    params: dict[str, Any] = dict(zip(("min_val", "max_val"), node.args[1:3]))
    params.update({k: v for k, v in node.kwargs.items() if k in ("min_val", "max_val")})
    return float(params.get("min_val", -1.0)), float(params.get("max_val", 1.0))


def _match_clamped_module(q: Node, gm: GraphModule) -> Match | None:
    clamp = sole_producer(q)
    bounds = None if clamp is None else _clamp_bounds(gm, clamp)
    if clamp is None or bounds is None:
        return None
    node = sole_producer(clamp)
    quantized_class = _static_module(gm, node, reference_only=True)
    if node is None or quantized_class is None or clamp.args[:1] != (node,) or dequantized_input(node.args[0]) is None:
        return None
    if not quint8_activations(q, [node.args[0]]):
        return None
    return {"node": node, "clamp": clamp, "bounds": bounds, "class": quantized_class}


def _rewrite_clamped_module(q: Node, m: Match, gm: GraphModule) -> Node:
    meta = qmeta(q)
    assert meta is not None
    node: Node = m["node"]
    _swap_in(gm, node, m["class"], meta)
    _bypass_dequantize(node, [node.args[0]])  # type: ignore[list-item]  # a dequantize Node, matched
    # the clamp is a no-op when q's range [low, high] lies inside it
    low, high = (meta.qmin - meta.zero_point) * meta.scale, (meta.qmax - meta.zero_point) * meta.scale
    bounds: tuple[float, float] = m["bounds"]
    q.replace_input_with(m["clamp"], node)
    gm.graph.erase_node(m["clamp"])
    if bounds[0] <= low and high <= bounds[1]:
        return set_qmeta(node, meta)
    kept = gm.graph.call_function(F.hardtanh, (node, *bounds))
    kept.meta.update(q.meta)
    return set_qmeta(kept, meta)


def _unobserved(mode: str, table: dict[type, Any]) -> Any:
    def match(node: Node, gm: GraphModule) -> Match | None:
        if node.meta.get(QUANT_MODE_META_KEY) != mode:
            return None
        return {"class": table[type(gm.get_submodule(str(node.target)))]}

    return match


def _rewrite_unobserved(node: Node, m: Match, gm: GraphModule) -> Node:
    target = str(node.target)
    gm.add_submodule(target, m["class"].from_reference(gm.get_submodule(target)))
    dq = node.args[0] if node.args else None
    if isinstance(dq, Node) and dq.op == "call_function" and dq.target == qd.dequantize_per_tensor.tensor:
        q = dq.args[0]
        assert isinstance(q, Node)
        node.replace_input_with(dq, q.args[0])  # type: ignore[arg-type]  # q reads one node
    return node


FX_MODULE_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="fx_module", anchors=_QUANTIZE, match=_match_module, rewrite=_rewrite_module,
                 exact=False, dialects=FX,
                 doc="q(ref_module(dq x[, dq y])) -> quantized module (from_reference)"),
    LoweringRule(name="fx_module_clamp", anchors=_QUANTIZE, match=_match_clamped_module,
                 rewrite=_rewrite_clamped_module, exact=False, dialects=FX,
                 doc="q(relu6|hardtanh(ref_module(dq x))) -> quantized module [+ hardtanh]"),
    LoweringRule(name="fx_dynamic_module", anchors=frozenset(_DYNAMIC_MODULES), dialects=FX, exact=False,
                 match=_unobserved(QuantMode.DYNAMIC, _DYNAMIC_MODULES), rewrite=_rewrite_unobserved,
                 doc="dynamic ref_module(dq(q(x, choose_qparams))) -> dynamic quantized module(x)"),
    LoweringRule(name="fx_weight_only_module", anchors=frozenset(_WEIGHT_ONLY_MODULES), dialects=FX,
                 match=_unobserved(QuantMode.WEIGHT_ONLY, _WEIGHT_ONLY_MODULES),
                 rewrite=_rewrite_unobserved, doc="weight-only ref_module -> quantized module"),
)
