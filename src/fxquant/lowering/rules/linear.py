"""Rules lowering int8 linears to ``quantized::linear*`` with pre-packed weights.

* ``linear``: ``q(relu?(linear(dq(x), dq(W), b)))`` -> ``quantized::linear[_relu](x, packed)``
  through :func:`fxquant.lowering.kernels.linear` / ``linear_relu`` (the same op, without the
  packed weight's per-call ``__torch_function__`` probe).
* ``linear_gelu_float_out`` / ``linear_add_float_out``: ``gelu(linear(dq(x), dq(W), b))`` and
  ``linear(dq(x), dq(W), b) + y`` in float -> one oneDNN int8 GEMM with the GELU or the add
  applied to its float result (:func:`onednn_linear`, :func:`onednn_linear_add`).
* ``linear_float_out``: ``linear(dq(x), dq(W), b)`` read in float -> the same int8 GEMM
  (oneDNN's ``qlinear_pointwise`` on ``x``'s integers; without oneDNN ``quantized::
  linear_with_input_q_dq_qweight_dq_output_fp32``), float result: what the reference
  computes, without the float weight.
* ``linear_dynamic``: ``linear(dq(q(x, choose_qparams(x))), dq(W), b)`` ->
  ``quantized::linear_dynamic(x, packed)`` (parameters chosen per call inside the kernel),
  through :func:`fxquant.lowering.kernels.linear_dynamic`.
  Followed by GELU, a dynamically quantized linear takes the oneDNN GEMM + GELU instead.

Why oneDNN for the float-output GEMMs: at transformer shapes (128-1024 rows, 384-1536
columns, one thread) ``onednn::qlinear_pointwise`` on a uint8 input plus a separate
``quantize_per_tensor`` takes 55-65% of the time of fbgemm's fp32-output linear (which
quantizes its input inside, slowly for wide inputs), and it applies GELU or a residual add to
the accumulator in the same pass (``benchmarks/minilm_speed.py --kernels`` measures both).
Dynamic linears stay on fbgemm's ``linear_dynamic`` (it quantizes its input faster than a
separate ``quantize_per_tensor_dynamic``), except before a GELU, whose fusion pays for it.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering import kernels
from fxquant.lowering.graph import add_constant, constant_value, qmeta
from fxquant.lowering.rule import (
    LoweringRule,
    Match,
    arg,
    call_packed_kernel,
    dequantized_input,
    sole_user_is,
)
from fxquant.lowering.weights import pack_linear, quantized_weight
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = [
    "HAS_ONEDNN_LINEAR",
    "LINEAR_RULES",
    "OneDNNLinearWeight",
    "onednn_linear",
    "onednn_linear_add",
]

A = torch.ops.aten
Q = torch.ops.quantized
logger = logging.getLogger(__name__)
HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")
# aten.gelu's ``approximate`` -> oneDNN's GELU algorithm
_GELU_ALGORITHMS = {"none": "none", "tanh": "tanh"}


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class OneDNNLinearWeight:
    """An int8 linear weight pre-packed for oneDNN (``onednn::qlinear_prepack``), with its
    per-output-channel scales and float bias. Copies and pickles re-pack from the integers
    (oneDNN's packed tensor has no storage to copy)."""

    weight: torch.Tensor  # int8 [out, in], symmetric (zero points 0)
    scales: torch.Tensor  # float32 [out]
    bias: torch.Tensor | None
    packed: torch.Tensor = dataclasses.field(init=False, repr=False)
    zero_points: torch.Tensor = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "packed", torch.ops.onednn.qlinear_prepack(self.weight, None))
        object.__setattr__(self, "zero_points", torch.zeros(self.weight.shape[0], dtype=torch.long))

    def __deepcopy__(self, memo: dict[int, Any]) -> OneDNNLinearWeight:
        bias = None if self.bias is None else self.bias.clone()
        return OneDNNLinearWeight(weight=self.weight.clone(), scales=self.scales.clone(), bias=bias)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.weight, self.scales, self.bias))


def _rebuild(weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> OneDNNLinearWeight:
    return OneDNNLinearWeight(weight=weight, scales=scales, bias=bias)


def _uint8_view(x: torch.Tensor) -> torch.Tensor:
    """The integers of a quint8 tensor as a uint8 tensor sharing its storage (no copy)."""
    x = x.contiguous()
    return torch.empty(0, dtype=torch.uint8).set_(x.untyped_storage(), x.storage_offset(), x.size(), x.stride())


def onednn_linear(x: torch.Tensor, weight: OneDNNLinearWeight, unary: str = "none",
                  algorithm: str = "") -> torch.Tensor:
    """``unary(linear(x.dequantize(), W, b))`` in float32 for a quint8 ``x``: oneDNN's int8
    GEMM (int32 accumulation) with the scales, bias and ``unary`` ("none" or "gelu" with
    ``algorithm`` "none"/"tanh") applied to the accumulator."""
    return torch.ops.onednn.qlinear_pointwise(
        _uint8_view(x), x.q_scale(), x.q_zero_point(), weight.packed, weight.scales,
        weight.zero_points, weight.bias, 1.0, 0, torch.float32, unary, [], algorithm,
    )


def onednn_linear_add(x: torch.Tensor, weight: OneDNNLinearWeight, other: torch.Tensor) -> torch.Tensor:
    """``linear(x.dequantize(), W, b) + other`` in float32 for a quint8 ``x`` (one oneDNN
    kernel; ``other`` has the output's shape and is not modified)."""
    return torch.ops.onednn.qlinear_pointwise.binary(
        _uint8_view(x), x.q_scale(), x.q_zero_point(), weight.packed, weight.scales,
        weight.zero_points, other.contiguous(), weight.bias, 1.0, 0, torch.float32, 1.0, 0,
        "add", 1.0, "none", [], "",
    )


def _onednn_weight(linear: Node, gm: GraphModule) -> OneDNNLinearWeight | None:
    """The linear's int8 weight and bias for oneDNN, or None (no oneDNN, not an int8
    constant, asymmetric weight)."""
    weight = quantized_weight(gm, arg(linear, 1, "weight")) if HAS_ONEDNN_LINEAR else None
    bias_node = arg(linear, 2, "bias")
    bias = constant_value(gm, bias_node)
    if weight is None or weight.dim() != 2 or (bias_node is not None and bias is None):
        return None
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales, zero_points = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
    else:
        scales = torch.full((weight.shape[0],), weight.q_scale(), dtype=torch.float64)
        zero_points = torch.full((weight.shape[0],), weight.q_zero_point(), dtype=torch.long)
    if bool(zero_points.any()):
        return None
    try:
        return OneDNNLinearWeight(weight=weight.int_repr(), scales=scales.float(),
                                  bias=None if bias is None else bias.float())
    except RuntimeError as e:  # the kernel library refuses this weight
        logger.debug("%s: no oneDNN packing: %s", linear.format_node(), e)
        return None


def _packed_weight(linear: Node, gm: GraphModule) -> object | None:
    weight = quantized_weight(gm, arg(linear, 1, "weight"))
    bias_node = arg(linear, 2, "bias")
    bias = constant_value(gm, bias_node)
    if weight is None or weight.dim() != 2 or (bias_node is not None and bias is None):
        return None
    try:
        return pack_linear(weight, bias)
    except RuntimeError as e:  # the kernel library refuses this weight
        logger.debug("%s stays in float: %s", linear.format_node(), e)
        return None


def _uint8_input(linear: Node) -> Node | None:
    x = dequantized_input(linear.args[0])
    meta = qmeta(x)
    return x if meta is not None and meta.dtype == torch.quint8 else None


def _match_linear(node: Node, gm: GraphModule) -> Match | None:
    y, relu = node.args[0], None
    if qmeta(node) is None or not isinstance(y, Node):
        return None
    if y.target == A.relu.default and sole_user_is(y, node):
        relu, y = y, y.args[0]
    if not isinstance(y, Node) or y.target != A.linear.default:
        return None
    if not sole_user_is(y, node if relu is None else relu):
        return None
    x = _uint8_input(y)
    packed = None if x is None else _packed_weight(y, gm)
    return None if packed is None else {"x": x, "packed": packed, "relu": relu is not None}


def _rewrite_linear(node: Node, m: Match, gm: GraphModule) -> Node:
    kernel = kernels.linear_relu if m["relu"] else kernels.linear
    return call_packed_kernel(node, gm, kernel, m["x"], m["packed"], "packed_linear")


def _float_out_linear(node: object, user: Node, gm: GraphModule, *, dynamic_too: bool) -> Match | None:
    """What the oneDNN rewrite of ``node = linear(dq(x), dq(W), b)``, read by ``user`` only,
    needs: a static quint8 ``x`` (or, if ``dynamic_too``, a dynamically quantized float
    input) and the weight."""
    if not isinstance(node, Node) or node.target != A.linear.default or not sole_user_is(node, user):
        return None
    x = _uint8_input(node)
    dynamic = _dynamic_qparams(node) if x is None and dynamic_too else None
    if x is None and dynamic is None:
        return None
    weight = _onednn_weight(node, gm)
    return None if weight is None else {"x": x, "dynamic": dynamic, "weight": weight}


def _onednn_input(m: Match, gm: GraphModule) -> Node:
    """The quint8 input node of a oneDNN rewrite: the static ``x``, or the float input
    quantized per call by one native op (``quantize_per_tensor_dynamic``: min/max parameters
    on [0, 255], as the graph's ``choose_qparams`` and fbgemm's dynamic linear choose them;
    the decomposed chooser costs ~10 small ops per call)."""
    if m["dynamic"] is None:
        x: Node = m["x"]
        return x
    return gm.graph.call_function(A.quantize_per_tensor_dynamic.default, (m["dynamic"][0], torch.quint8, False))


def _match_linear_gelu(node: Node, gm: GraphModule) -> Match | None:
    approximate = node.kwargs.get("approximate", "none")
    algorithm = _GELU_ALGORITHMS.get(approximate) if isinstance(approximate, str) else None
    if algorithm is None or len(node.args) != 1:
        return None
    m = _float_out_linear(node.args[0], node, gm, dynamic_too=True)
    return None if m is None else {**m, "algorithm": algorithm}


def _rewrite_linear_gelu(node: Node, m: Match, gm: GraphModule) -> Node:
    weight = add_constant(gm, "onednn_linear", m["weight"], node)
    return gm.graph.call_function(onednn_linear, (_onednn_input(m, gm), weight, "gelu", m["algorithm"]))


def _same_shape(a: object, b: object) -> bool:
    va, vb = (n.meta.get("val") if isinstance(n, Node) else None for n in (a, b))
    return (isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and va.shape == vb.shape
            and va.dtype == vb.dtype == torch.float32)


def _match_linear_add(node: Node, gm: GraphModule) -> Match | None:
    if len(node.args) != 2 or node.kwargs:  # alpha
        return None
    for i in (1, 0):
        linear, other = node.args[i], node.args[1 - i]
        m = _float_out_linear(linear, node, gm, dynamic_too=False)
        if m is not None and isinstance(other, Node) and _same_shape(other, node) and _same_shape(linear, node):
            return {**m, "other": other}
    return None


def _rewrite_linear_add(node: Node, m: Match, gm: GraphModule) -> Node:
    weight = add_constant(gm, "onednn_linear", m["weight"], node)
    return gm.graph.call_function(onednn_linear_add, (_onednn_input(m, gm), weight, m["other"]))


def _match_linear_float_out(node: Node, gm: GraphModule) -> Match | None:
    x = _uint8_input(node)
    weight = None if x is None else _onednn_weight(node, gm)
    if weight is not None:
        return {"x": x, "dynamic": None, "weight": weight}
    meta = qmeta(x)
    packed = None if x is None or meta is None else _packed_weight(node, gm)
    if x is None or meta is None or packed is None:
        return None
    # the kernel quantizes a float input itself: give it the float that x quantized, or
    # x dequantized (on x's grid, so quantizing it again gives x's integers back)
    source = x.args[0] if x.target == A.quantize_per_tensor.default else node.args[0]
    return {"x": source, "scale": meta.scale, "zero_point": meta.zero_point, "packed": packed}


def _rewrite_linear_float_out(node: Node, m: Match, gm: GraphModule) -> Node:
    if "weight" in m:
        weight = add_constant(gm, "onednn_linear", m["weight"], node)
        return gm.graph.call_function(onednn_linear, (_onednn_input(m, gm), weight))
    packed = add_constant(gm, "packed_linear", m["packed"], node)
    return gm.graph.call_function(
        Q.linear_with_input_q_dq_qweight_dq_output_fp32.default,
        (m["x"], m["scale"], m["zero_point"], packed),
    )


def _dynamic_qparams(linear: Node) -> tuple[Node, Node, Node] | None:
    """``(x, scale, zero_point)`` of ``dq(q(x, *choose_qparams(x)))`` with uint8 [0, 255]
    (the scale and zero point nodes are the chooser's), else None."""
    dq = linear.args[0]
    if not isinstance(dq, Node) or dq.target != qd.dequantize_per_tensor.tensor:
        return None
    q = dq.args[0]
    if not isinstance(q, Node) or q.target != qd.quantize_per_tensor.tensor or q.args[1:3] != dq.args[1:3]:
        return None
    x, scale, zero_point = q.args[:3]
    if not (isinstance(x, Node) and isinstance(scale, Node) and isinstance(zero_point, Node)):
        return None
    chooser = scale.args[0] if scale.target is operator.getitem else None
    if not isinstance(chooser, Node) or chooser.target != qd.choose_qparams.tensor:
        return None
    if scale.args != (chooser, 0) or zero_point.args != (chooser, 1) or chooser.args[0] is not x:
        return None
    if tuple(q.args[3:6]) != (0, 255, torch.uint8) or tuple(dq.args[3:6]) != (0, 255, torch.uint8):
        return None
    return x, scale, zero_point


def _match_linear_dynamic(node: Node, gm: GraphModule) -> Match | None:
    dynamic = _dynamic_qparams(node)
    if dynamic is None:
        return None
    packed = _packed_weight(node, gm)
    return None if packed is None else {"x": dynamic[0], "packed": packed}


def _rewrite_linear_dynamic(node: Node, m: Match, gm: GraphModule) -> Node:
    packed = add_constant(gm, "packed_linear", m["packed"], node)
    return gm.graph.call_function(kernels.linear_dynamic, (m["x"], packed, False))


LINEAR_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="linear", anchors=frozenset({A.quantize_per_tensor.default}),
                 match=_match_linear, rewrite=_rewrite_linear,
                 doc="q(relu?(linear(dq x, dq W))) -> kernels.linear[_relu] (quantized::linear[_relu])"),
    # stage 1: the linear's only reader is the GELU / add, so no int8-output kernel competes
    LoweringRule(name="linear_gelu_float_out", anchors=frozenset({A.gelu.default}),
                 match=_match_linear_gelu, rewrite=_rewrite_linear_gelu, exact=False,
                 doc="gelu(linear(dq x, dq W)) in float -> oneDNN int8 GEMM + GELU"),
    LoweringRule(name="linear_add_float_out", anchors=frozenset({A.add.Tensor}),
                 match=_match_linear_add, rewrite=_rewrite_linear_add, exact=False,
                 doc="linear(dq x, dq W) + y in float -> oneDNN int8 GEMM + add"),
    LoweringRule(name="linear_float_out", anchors=frozenset({A.linear.default}), stage=2,
                 match=_match_linear_float_out, rewrite=_rewrite_linear_float_out, exact=False,
                 doc="float linear(dq(q x), dq W) -> int8 GEMM with float output"),
    # stage 2 too (a float-output GEMM): after the GELU fusion had its chance
    LoweringRule(name="linear_dynamic", anchors=frozenset({A.linear.default}), stage=2,
                 match=_match_linear_dynamic, rewrite=_rewrite_linear_dynamic, exact=False,
                 doc="linear(dq(q(x, choose_qparams(x))), dq W) -> int8 GEMM, per-call qparams"),
)
