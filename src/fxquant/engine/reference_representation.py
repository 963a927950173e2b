"""Reference representation: each quantized op of a q/dq model spelled out as integer
arithmetic on plain integer tensors.

A converted model reads ``dequantize -> float op -> quantize``; the reference representation
says what an integer kernel computes instead, e.g. for a quantized linear::

    acc   = (x_q - x_zp) @ (w_q - w_zp).T                          int32 accumulation
    acc  += round(bias / (x_scale * w_scale))                      bias in the accumulator's scale
    out_q = clamp(round(acc * x_scale * w_scale / out_scale) + out_zp, qmin, qmax)

The pass is a table of rules (``REFERENCE_RULES``) applied in order by one loop over
``torch.fx.subgraph_rewriter.replace_pattern_with_filters``. A rule names an anchor op, which
of its inputs arrive through a dequantize op, which clamping post-op follows (relu, hardtanh /
relu6) and whether the result is re-quantized. Its pattern graph is built from the op schemas
with *every* non-tensor argument a placeholder (scales, zero points, ranges, dtypes, strides,
...), so one rule matches uint8 and int8, any qparams and any conv geometry. The matched
values then reach the rule's ``emit`` function: graph values as ``fx.Proxy`` and literals as
themselves, so the emitted graph only holds the arithmetic left after folding the literals.

Re-quantization uses a float rescale (``round(acc * multiplier)``, round half to even), as
torchao's reference representation does. Results are within one quantization step of the q/dq
model (float summation order differs), the standalone quantize/dequantize rules are bit-exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import torch
from torch.fx import Graph, GraphModule, Node, Proxy
from torch.fx.passes.utils.matcher_utils import InternalMatch
from torch.fx.proxy import GraphAppendingTracer
from torch.fx.subgraph_rewriter import ReplacedPatterns, replace_pattern_with_filters

from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = [
    "REFERENCE_RULES",
    "Bindings",
    "OutputQParams",
    "QuantizedOperand",
    "ReferenceRule",
    "rewrite_to_reference_representation",
]

logger = logging.getLogger(__name__)

A = torch.ops.aten
OpOverload = torch._ops.OpOverload

Q_PER_TENSOR = qd.quantize_per_tensor.default
Q_PER_TENSOR_DYNAMIC = qd.quantize_per_tensor.tensor
Q_PER_CHANNEL = qd.quantize_per_channel.default
DQ_PER_TENSOR = qd.dequantize_per_tensor.default
DQ_PER_TENSOR_DYNAMIC = qd.dequantize_per_tensor.tensor
DQ_PER_CHANNEL = qd.dequantize_per_channel.default
_DEQUANTIZE_OPS = (DQ_PER_TENSOR, DQ_PER_TENSOR_DYNAMIC, DQ_PER_CHANNEL)

# Metadata a reader of the rewritten graph still wants on the integer nodes (where they came
# from); values such as "val" describe the float op and would be wrong on them.
_PORTED_META = ("stack_trace", "nn_module_stack", "source_fn_stack")


# --------------------------------------------------------------------------------------------
# What an emit function receives
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QuantizedOperand:
    """An input that arrived through a dequantize op: its integers and how to read them.
    ``scale``/``zero_point`` are python numbers (static per-tensor) or proxies (per-channel
    buffers, dynamic qparams); ``axis`` is the channel axis of per-channel parameters."""

    int_repr: Proxy
    scale: Any
    zero_point: Any
    quant_min: int
    quant_max: int
    dtype: torch.dtype
    axis: int | None = None


@dataclass(frozen=True, kw_only=True)
class OutputQParams:
    """Parameters of the quantize op that ends a matched pattern."""

    scale: Any
    zero_point: Any
    quant_min: int
    quant_max: int
    dtype: torch.dtype


@dataclass(frozen=True, kw_only=True)
class Bindings:
    """One match, as seen by a rule's ``emit``: the anchor op's arguments by schema name
    (dequantized inputs as ``QuantizedOperand``), the float interval a clamping post-op limits
    the result to (None without one), the output qparams (None when the result stays float)."""

    op: OpOverload
    args: Mapping[str, Any]
    clip: tuple[float, float] | None
    out: OutputQParams | None

    def operand(self, name: str) -> QuantizedOperand:
        value = self.args[name]
        assert isinstance(value, QuantizedOperand), f"{name} of {self.op} is not dequantized"
        return value

    def call(self, overrides: Mapping[str, Any]) -> Proxy:
        """Call the anchor op with its matched arguments, those in ``overrides`` replaced."""
        values = {**self.args, **overrides}
        return _call_with_schema(self.op, values)


@dataclass(frozen=True, kw_only=True)
class ReferenceRule:
    """``[dequantize ->] op [-> relu | hardtanh] [-> quantize]`` becomes ``emit(bindings)``.

    ``dequantized`` maps schema argument names of ``op`` to the dequantize op they come
    through; ``accept`` sees the raw matched values (by pattern placeholder name) and may
    reject a match the emit function cannot represent."""

    op: OpOverload
    emit: Callable[[Bindings], Proxy]
    dequantized: Mapping[str, OpOverload] = field(default_factory=dict)
    post_op: OpOverload | None = None
    requantized: bool = False
    accept: Callable[[Mapping[str, Any]], bool] = lambda values: True

    def __post_init__(self) -> None:
        names = {a.name for a in self.op._schema.arguments}
        for name, dq in self.dequantized.items():
            if name not in names:
                raise ValueError(f"{self.op} has no argument {name!r} (it has {sorted(names)})")
            if dq not in _DEQUANTIZE_OPS:
                raise ValueError(f"{dq} is not a dequantize op; use one of {_DEQUANTIZE_OPS}")
        if self.post_op is not None and self.post_op not in _CLIP_OF_POST_OP:
            clamps = list(_CLIP_OF_POST_OP)
            raise ValueError(f"{self.post_op} is not a clamping post-op: use one of {clamps}")
        if self.post_op is not None and not self.requantized:
            raise ValueError("a post-op is only folded into a re-quantized output")

    @property
    def name(self) -> str:
        parts = [f"{dq.__name__}({a})" for a, dq in self.dequantized.items()] + [str(self.op)]
        parts += [str(self.post_op)] * (self.post_op is not None) + ["q"] * self.requantized
        return " -> ".join(parts)


# Post-ops that only clamp the float result, each with the interval it clamps to (given its
# matched arguments): quantization being monotonic, they become a narrower integer clamp.
_CLIP_OF_POST_OP: dict[OpOverload, Callable[[Mapping[str, Any]], tuple[float, float]]] = {
    A.relu.default: lambda args: (0.0, math.inf),
    A.hardtanh.default: lambda args: (float(args["min_val"]), float(args["max_val"])),
}
_POST_OPS = (A.relu.default, A.hardtanh.default, None)


# --------------------------------------------------------------------------------------------
# Integer arithmetic helpers (each folds python literals instead of emitting a node)
# --------------------------------------------------------------------------------------------


def _is_proxy(*values: Any) -> bool:
    return any(isinstance(v, Proxy) for v in values)


def _mul(a: Any, b: Any) -> Any:
    return A.mul.Tensor(a, b) if _is_proxy(a, b) else a * b


def _div(a: Any, b: Any) -> Any:
    return A.div.Tensor(a, b) if _is_proxy(a, b) else a / b


def _shift(x: Proxy, offset: Any, op: OpOverload) -> Proxy:
    """``op(x, offset)`` for ``add``/``sub``; nothing to emit for a literal 0."""
    return x if not _is_proxy(offset) and offset == 0 else op(x, offset)


def _cast(x: Any, dtype: torch.dtype) -> Any:
    return A._to_copy.default(x, dtype=dtype) if _is_proxy(x) else x


def _channels_last(x: Proxy, axis: int) -> Proxy:
    """Move ``axis`` to the end (where a ``[C]`` parameter broadcasts); self-inverse."""
    return x if axis == -1 else A.transpose.int(x, axis, -1)


def _centered(x: QuantizedOperand) -> Proxy:
    """``q - zero_point`` in int32 (per-channel zero points along ``x.axis``)."""
    q = A._to_copy.default(x.int_repr, dtype=torch.int32)
    if x.zero_point is None:  # dequantize_per_channel accepts "no zero points"
        return q
    if x.axis is None:
        return _shift(q, _cast(x.zero_point, torch.int32), A.sub.Tensor)
    shifted = _shift(_channels_last(q, x.axis), _cast(x.zero_point, torch.int32), A.sub.Tensor)
    return _channels_last(shifted, x.axis)


def _round_to_int32(x: Any) -> Proxy:
    return A._to_copy.default(A.round.default(x), dtype=torch.int32)


def _requantize(
    acc: Proxy, multiplier: Any, out: OutputQParams, clip: tuple[float, float] | None
) -> Proxy:
    """``clamp(round(acc * multiplier) + out_zp, low, high)``: ``[low, high]`` is the dtype
    range, narrowed to ``[q(lo), q(hi)]`` when a post-op clamped the float result to
    ``[lo, hi]`` (quantization is monotonic, so clamping commutes with it; after a relu
    ``low = out_zp``, the integer that stands for 0.0). ``out`` comes from a static
    ``quantize_per_tensor``: its scale and zero point are python numbers."""
    unit = not _is_proxy(multiplier) and multiplier == 1.0
    rescaled = acc if unit else A.mul.Tensor(acc, multiplier)
    shifted = _shift(A.round.default(rescaled), out.zero_point, A.add.Tensor)
    low, high = _integer_range(out, clip)
    return A._to_copy.default(A.clamp.default(shifted, low, high), dtype=out.dtype)


def _integer_range(out: OutputQParams, clip: tuple[float, float] | None) -> tuple[int, int]:
    if clip is None:
        return out.quant_min, out.quant_max
    low, high = (_quantize_number(v, out) for v in clip)
    return max(out.quant_min, low), min(out.quant_max, high)


def _quantize_number(value: float, out: OutputQParams) -> int:
    """``value`` quantized as the quantize kernel would (float32 product, half to even),
    without the clamp; infinities map past the ends of the range."""
    if math.isinf(value):
        return out.quant_max + 1 if value > 0 else out.quant_min - 1
    product = torch.tensor(value, dtype=torch.float32) * (1.0 / out.scale)
    return int(torch.round(product)) + int(out.zero_point)


# --------------------------------------------------------------------------------------------
# Emit functions: one per family of rules
# --------------------------------------------------------------------------------------------

# Where the output channels of an op are, i.e. where per-output-channel parameters broadcast.
_OUTPUT_CHANNEL_AXIS = {A.linear.default: -1, A.conv1d.default: 1, A.conv2d.default: 1}


def _emit_matmul_like(b: Bindings) -> Proxy:
    """Linear / convolution: integer accumulation, then rescale.

    acc     = op(x_q - x_zp, w_q - w_zp)                    (int32)
    q out:    clamp(round((acc + round(bias / s_acc)) * s_acc / out_scale) + out_zp)
    float out: acc * s_acc + bias                            with s_acc = x_scale * w_scale
    """
    x, w = b.operand("input"), b.operand("weight")
    acc = _accumulate(b, _centered(x), _centered(w))
    # a number, or [C] for per-channel weights; a dynamic scale (float64 from choose_qparams)
    # is applied as float32, as the dequantize kernel does
    acc_scale = _mul(_cast(x.scale, torch.float32), w.scale)
    bias = b.args.get("bias")
    axis = _OUTPUT_CHANNEL_AXIS[b.op]
    acc = _channels_last(acc, axis)
    if b.out is None:
        y = A.mul.Tensor(acc, acc_scale)
        if bias is not None:
            y = A.add.Tensor(y, bias)
        return _channels_last(y, axis)
    if bias is not None:
        acc = A.add.Tensor(acc, _round_to_int32(_div(bias, acc_scale)))
    out = _requantize(acc, _div(acc_scale, b.out.scale), b.out, b.clip)
    return _channels_last(out, axis)


def _accumulate(b: Bindings, x: Proxy, w: Proxy) -> Proxy:
    """The anchor op on centered integers, accumulated in int32. CPU has no int32 kernel for
    dilated convolutions: those accumulate in float64, where every partial sum of int8
    products is exact (|acc| < 2**31 << 2**53), and convert back to int32."""
    dilation = b.args.get("dilation", 1)
    if all(d == 1 for d in ([dilation] if isinstance(dilation, int) else dilation)):
        return b.call({"input": x, "weight": w, "bias": None})
    wide = {"input": _cast(x, torch.float64), "weight": _cast(w, torch.float64), "bias": None}
    return A._to_copy.default(b.call(wide), dtype=torch.int32)


def _emit_add(b: Bindings) -> Proxy:
    """out_q = clamp(round((x_q - x_zp) * x_s / out_s
                         + alpha * (y_q - y_zp) * y_s / out_s) + out_zp)"""
    assert b.out is not None
    x, y = b.operand("self"), b.operand("other")
    x_term = A.mul.Tensor(_centered(x), _div(x.scale, b.out.scale))
    y_term = A.mul.Tensor(_centered(y), _div(_mul(b.args["alpha"], y.scale), b.out.scale))
    return _requantize(A.add.Tensor(x_term, y_term), 1.0, b.out, b.clip)


def _emit_max(b: Bindings) -> Proxy:
    """max is monotonic: pool the centered integers, then rescale to the output's qparams."""
    assert b.out is not None
    x = b.operand("self")
    pooled = b.call({"self": _centered(x)})
    return _requantize(pooled, _div(x.scale, b.out.scale), b.out, b.clip)


def _emit_average(b: Bindings) -> Proxy:
    """Averages of the centered integers (a float, the sum divided by the count), rescaled."""
    assert b.out is not None
    x = b.operand("self")
    averaged = b.call({"self": A._to_copy.default(_centered(x), dtype=torch.float32)})
    return _requantize(averaged, _div(x.scale, b.out.scale), b.out, b.clip)


def _quantize(x: Proxy, inv_scale: Any, args: Mapping[str, Any], zero_point: Any) -> Proxy:
    """q = clamp(round(x * inv_scale) + zero_point, quant_min, quant_max)"""
    q = _shift(A.round.default(A.mul.Tensor(x, inv_scale)), zero_point, A.add.Tensor)
    q = A.clamp.default(q, args["quant_min"], args["quant_max"])
    return A._to_copy.default(q, dtype=args["dtype"])


def _emit_quantize_per_tensor(b: Bindings) -> Proxy:
    """The ``quantized_decomposed`` kernel, bit for bit: it multiplies by ``1 / scale``
    taken in double precision (``scale.item()`` for the tensor overload) and cast to float32."""
    a = b.args
    scale = a["scale"]
    if _is_proxy(scale):
        inv_scale = _cast(A.reciprocal.default(_cast(scale, torch.float64)), torch.float32)
    else:
        inv_scale = 1.0 / scale
    return _quantize(a["input"], inv_scale, a, a["zero_point"])


def _emit_quantize_per_channel(b: Bindings) -> Proxy:
    """Per channel: the same formula with ``[C]`` parameters broadcast along ``axis``."""
    a = b.args
    x = _channels_last(a["input"], a["axis"])
    q = _quantize(x, A.reciprocal.default(a["scales"]), a, a["zero_points"])
    return _channels_last(q, a["axis"])


def _emit_dequantize(b: Bindings) -> Proxy:
    """x = (q - zero_point) * scale, computed on the centered integers (bit-exact)."""
    a = b.args
    per_channel = "axis" in a
    x = QuantizedOperand(
        int_repr=a["input"],
        scale=a["scales"] if per_channel else a["scale"],
        zero_point=a["zero_points"] if per_channel else a["zero_point"],
        quant_min=a["quant_min"],
        quant_max=a["quant_max"],
        dtype=a["dtype"],
        axis=a["axis"] if per_channel else None,
    )
    out_dtype = a["out_dtype"] or torch.float32
    if x.axis is None:  # the kernel multiplies by the scale as a float32 scalar
        centered = A._to_copy.default(_centered(x), dtype=out_dtype)
        return A.mul.Tensor(centered, _cast(x.scale, torch.float32))
    # per channel: the product is taken in the scales' dtype, then cast
    product = A.mul.Tensor(_channels_last(_centered(x), x.axis), x.scale)
    return _channels_last(A._to_copy.default(product, dtype=out_dtype), x.axis)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _weight_axis_is_zero(values: Mapping[str, Any]) -> bool:
    """Per-channel weights must be quantized along the output channels."""
    return values.get("weight__axis", 0) == 0


def _matmul_rules() -> list[ReferenceRule]:
    ops = (A.linear.default, A.conv2d.default, A.conv1d.default)
    weights = (DQ_PER_CHANNEL, DQ_PER_TENSOR)
    # static activations, re-quantized output (with a clamping post-op or without) ...
    requantized = [
        ReferenceRule(op=op, dequantized={"input": DQ_PER_TENSOR, "weight": w}, post_op=post,
                      requantized=True, emit=_emit_matmul_like, accept=_weight_axis_is_zero)
        for op, w, post in product(ops, weights, _POST_OPS)
    ]
    # ... then float output: dynamic activations, or a static op whose output stays float
    float_out = [
        ReferenceRule(op=op, dequantized={"input": x, "weight": w},
                      emit=_emit_matmul_like, accept=_weight_axis_is_zero)
        for op, x, w in product(ops, (DQ_PER_TENSOR_DYNAMIC, DQ_PER_TENSOR), weights)
    ]
    return requantized + float_out


def _same_range_rules() -> list[ReferenceRule]:
    both = {"self": DQ_PER_TENSOR, "other": DQ_PER_TENSOR}
    one = {"self": DQ_PER_TENSOR}
    add = [
        ReferenceRule(op=A.add.Tensor, dequantized=both, post_op=post, requantized=True,
                      emit=_emit_add)
        for post in _POST_OPS
    ]
    pools = [
        ReferenceRule(op=op, dequantized=one, requantized=True, emit=emit)
        for op, emit in (
            (A.max_pool2d.default, _emit_max),
            (A.adaptive_avg_pool2d.default, _emit_average),
            (A.mean.dim, _emit_average),
        )
    ]
    return add + pools


def _qdq_rules() -> list[ReferenceRule]:
    return [
        ReferenceRule(op=Q_PER_TENSOR, emit=_emit_quantize_per_tensor),
        ReferenceRule(op=Q_PER_TENSOR_DYNAMIC, emit=_emit_quantize_per_tensor),
        ReferenceRule(op=Q_PER_CHANNEL, emit=_emit_quantize_per_channel),
        ReferenceRule(op=DQ_PER_TENSOR, emit=_emit_dequantize),
        ReferenceRule(op=DQ_PER_TENSOR_DYNAMIC, emit=_emit_dequantize),
        ReferenceRule(op=DQ_PER_CHANNEL, emit=_emit_dequantize),
    ]


# Order matters: larger patterns first (a requantized conv before the float-output conv,
# which is a sub-pattern of it); leftover quantize/dequantize ops last.
REFERENCE_RULES: tuple[ReferenceRule, ...] = (*_matmul_rules(), *_same_range_rules(), *_qdq_rules())


# --------------------------------------------------------------------------------------------
# Patterns, replacements and the loop
# --------------------------------------------------------------------------------------------


def _positional(op: OpOverload) -> list[torch._C.Argument]:
    return [a for a in op._schema.arguments if not a.kwarg_only]


def _call_with_schema(op: OpOverload, values: Mapping[str, Any]) -> Any:
    args = tuple(values[a.name] for a in op._schema.arguments if not a.kwarg_only)
    kwargs = {a.name: values[a.name] for a in op._schema.arguments if a.kwarg_only}
    return op(*args, **kwargs)


def _pattern(rule: ReferenceRule) -> tuple[Graph, list[str]]:
    """The rule's pattern graph, and its placeholder names in graph order. Every argument that
    is not a dequantized input is a placeholder, so it matches any value."""
    graph = Graph()
    names: list[str] = []

    def placeholder(name: str) -> Node:
        names.append(name)
        return graph.placeholder(name.replace("__", "_"))

    values: dict[str, Any] = {}
    for arg in rule.op._schema.arguments:
        dq = rule.dequantized.get(arg.name)
        if dq is None:
            values[arg.name] = placeholder(arg.name)
        else:
            dq_args = tuple(placeholder(f"{arg.name}__{a.name}") for a in _positional(dq))
            values[arg.name] = graph.call_function(dq, dq_args)
    args = tuple(values[a.name] for a in rule.op._schema.arguments if not a.kwarg_only)
    kwargs = {a.name: values[a.name] for a in rule.op._schema.arguments if a.kwarg_only}
    y = graph.call_function(rule.op, args, kwargs)
    if rule.post_op is not None:
        post_args = tuple(placeholder(f"post__{a.name}") for a in _positional(rule.post_op)[1:])
        y = graph.call_function(rule.post_op, (y, *post_args))
    if rule.requantized:
        q_args = tuple(placeholder(f"out__{a.name}") for a in _positional(Q_PER_TENSOR)[1:])
        y = graph.call_function(Q_PER_TENSOR, (y, *q_args))
    graph.output(y)
    graph.lint()
    return graph, names


_OPERAND_FIELDS = {"input": "int_repr", "scales": "scale", "zero_points": "zero_point"}


def _bindings(rule: ReferenceRule, values: Mapping[str, Any]) -> Bindings:
    """Regroup placeholder values (``input__scale``, ``out__dtype``, ``stride``) into the
    anchor's arguments, quantized operands and output qparams."""
    args: dict[str, Any] = {}
    for arg in rule.op._schema.arguments:
        dq = rule.dequantized.get(arg.name)
        if dq is None:
            args[arg.name] = values[arg.name]
            continue
        fields = {_OPERAND_FIELDS.get(a.name, a.name): values[f"{arg.name}__{a.name}"]
                  for a in _positional(dq)}
        args[arg.name] = QuantizedOperand(**fields)
    out = None
    if rule.requantized:
        q_args = _positional(Q_PER_TENSOR)[1:]
        out = OutputQParams(**{a.name: values[f"out__{a.name}"] for a in q_args})
    clip = None
    if rule.post_op is not None:
        post_args = {a.name: values[f"post__{a.name}"] for a in _positional(rule.post_op)[1:]}
        clip = _CLIP_OF_POST_OP[rule.post_op](post_args)
    return Bindings(op=rule.op, args=args, clip=clip, out=out)


def _matched_values(names: list[str], match: InternalMatch) -> dict[str, Any]:
    return dict(zip(names, match.placeholder_nodes, strict=True))


def _replacement(rule: ReferenceRule, names: list[str], match: InternalMatch) -> Graph:
    """Trace ``rule.emit`` for one match: graph values become placeholders (wrapped as
    proxies), literals are passed as themselves and folded by the emit helpers. The graph has
    one placeholder per pattern placeholder, in the same order, as the rewriter requires."""
    graph = Graph()
    tracer = GraphAppendingTracer(graph)
    values: dict[str, Any] = {}
    for name, matched in _matched_values(names, match).items():
        node = graph.placeholder(name.replace("__", "_"))
        values[name] = Proxy(node, tracer) if isinstance(matched, Node) else matched
    result = rule.emit(_bindings(rule, values))
    graph.output(result.node)
    return graph


def _port_meta(rule: ReferenceRule, replaced: ReplacedPatterns) -> None:
    """Copy where-it-came-from metadata of the matched anchor op onto the integer nodes."""
    source = next(graph_node for pattern_node, graph_node in replaced.nodes_map.items()
                  if pattern_node.op == "call_function" and pattern_node.target == rule.op)
    for node in replaced.replacements:
        for key in _PORTED_META:
            if key in source.meta:
                node.meta.setdefault(key, source.meta[key])


def _apply(gm: GraphModule, rule: ReferenceRule) -> int:
    pattern, names = _pattern(rule)

    def accept(match: InternalMatch, original: Graph, pattern_graph: Graph) -> bool:
        return rule.accept(_matched_values(names, match))

    def replacement(match: InternalMatch, original: Graph, pattern_graph: Graph) -> Graph:
        return _replacement(rule, names, match)

    replaced = replace_pattern_with_filters(
        gm, pattern, match_filters=[accept], replacement_callback=replacement,
    )
    for r in replaced:
        _port_meta(rule, r)
    return len(replaced)


def rewrite_to_reference_representation(gm: GraphModule) -> GraphModule:
    """Rewrite a converted (q/dq) model into its reference representation: quantized
    linear/conv (with a relu or relu6/hardtanh), add (likewise), max-pool, average pools and
    every remaining quantize/dequantize become integer arithmetic on int8/uint8/int32 tensors.

        >>> m = convert_pt2e(prepared, use_reference_representation=True)
        >>> # equivalently: rewrite_to_reference_representation(convert_pt2e(prepared))

    Mutates and returns ``gm``. Patterns no rule covers keep their float op between the
    (spelled-out) dequantize and quantize arithmetic, so the model stays correct."""
    for rule in REFERENCE_RULES:
        count = _apply(gm, rule)
        if count:
            logger.debug("reference representation: %d x %s", count, rule.name)
    gm.graph.lint()
    gm.recompile()
    return gm
