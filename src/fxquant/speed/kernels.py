"""The kernels a unit runs: its fp32 aten ops as in the graph, and the int8 kernel it would
lower to — what :func:`fxquant.lowering.lower_to_int8` calls: torch's quantized CPU kernels
with weights pre-packed by the lowering's ``pack_conv2d`` (oneDNN), oneDNN's fused
conv+add, ``onednn.qconv_pointwise`` for 1-d and 3-d convs, int8 zero padding. One registry, keyed by the anchor's op overload; every builder
returns a zero-argument closure to time.

Activation scales are arbitrary but realistic (inputs in [-4, 4] on 256 levels): int8 kernel
time does not depend on the values, only on shapes, strides, groups and the fusion.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg

from fxquant.lowering.kernels import (
    HAS_ONEDNN,
    conv2d,
    conv2d_add,
    conv2d_add_relu,
    conv2d_relu,
    onednn_conv,
    onednn_conv_relu,
    pack_conv2d,
    pack_onednn_conv,
    zero_pad,
)
from fxquant.speed.units import OpUnit

__all__ = [
    "Int8Kernel",
    "dequantize_closure",
    "fp32_closure",
    "has_int8_kernel",
    "int8_kernel",
    "materialize",
    "op_of",
    "quantize_closure",
    "register_int8_kernel",
]

aten = torch.ops.aten
Closure = Callable[[], object]
_ACT_SCALE = 8.0 / 255
_ACT_ZERO_POINT = 128
# post-ops that clamp below at zero: folded into the kernel's requantization (relu, relu6)
_RELU_LIKE = frozenset({aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default})
_ADD = frozenset({aten.add.Tensor, aten.add_.Tensor})


@dataclass(frozen=True, kw_only=True)
class Int8Kernel:
    """What a unit runs in int8: ``closure`` to time and ``description`` (e.g.
    ``"quantized.conv2d_relu"``). ``emulated`` is True when no int8 kernel exists for the
    op and the lowering would run dequantize → fp32 op → quantize."""

    closure: Closure
    description: str
    emulated: bool = False


Int8Builder = Callable[[OpUnit, tuple[Any, ...], dict[str, Any]], Int8Kernel]
_INT8_KERNELS: dict[Any, Int8Builder] = {}


def register_int8_kernel(*targets: Any) -> Callable[[Int8Builder], Int8Builder]:
    """Register the int8 kernel builder of the anchors with these op overloads."""

    def register(builder: Int8Builder) -> Int8Builder:
        for target in targets:
            _INT8_KERNELS[target] = builder
        return builder

    return register


def has_int8_kernel(target: Any) -> bool:
    return target in _INT8_KERNELS


def _fetch(gm: GraphModule, target: str) -> Any:
    return functools.reduce(getattr, target.split("."), gm)


def _example(node: Node, gm: GraphModule) -> Any:
    if node.op == "get_attr":
        value = _fetch(gm, str(node.target))
        return value.detach() if isinstance(value, torch.Tensor) else value
    if "val" not in node.meta:
        raise ValueError(
            f"speed planning needs the shape of {node.format_node()}: node.meta['val'] is missing; "
            "capture the model with torch.export (fxquant.pt2e.capture) so every node carries its shape"
        )
    val = node.meta["val"]
    if not isinstance(val, torch.Tensor):
        return val
    if val.dtype.is_floating_point:
        return torch.empty(val.shape, dtype=val.dtype).uniform_(-4, 4)
    return torch.zeros(val.shape, dtype=val.dtype)


def op_of(node: Node) -> Callable[..., Any]:
    """The callable a call_function node runs."""
    if not callable(node.target):
        raise TypeError(f"speed planning times call_function nodes only, got {node.format_node()}")
    return node.target


def materialize(node: Node, gm: GraphModule) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``node``'s arguments with every node replaced by a tensor of its recorded shape and
    dtype (constants by their real value)."""
    args = map_arg(node.args, lambda n: _example(n, gm))
    kwargs = map_arg(node.kwargs, lambda n: _example(n, gm))
    return tuple(args), dict(kwargs)


def fp32_closure(unit_nodes: tuple[Node, ...], gm: GraphModule) -> Closure:
    """Run the unit's aten ops as the graph does, each on inputs of its recorded shapes."""
    calls = [(op_of(n), *materialize(n, gm)) for n in unit_nodes]

    def run() -> None:
        for target, args, kwargs in calls:
            target(*args, **kwargs)

    return run


def _int8_layout(x: torch.Tensor) -> torch.Tensor:
    """Images in int8 regions are channels-last: the oneDNN kernels the lowering calls write
    them so, and read anything else through a reorder (2-6x slower convs at batch 1)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """An int8 activation as the int8 kernels see it inside an int8 region."""
    return _int8_layout(torch.quantize_per_tensor(x, _ACT_SCALE, _ACT_ZERO_POINT, torch.quint8))


def quantize_closure(shape: torch.Size) -> Closure:
    """Quantize a float activation of this shape into the int8 layout (a float → int8
    boundary: the quantize plus the reorder the first int8 kernel would do)."""
    x = torch.empty(shape).uniform_(-4, 4)

    def run() -> torch.Tensor:
        return _int8_layout(torch.quantize_per_tensor(x, _ACT_SCALE, _ACT_ZERO_POINT, torch.quint8))

    return run


def dequantize_closure(shape: torch.Size) -> Closure:
    """Dequantize an int8 activation of this shape (an int8 → float boundary)."""
    qx = _quantize(torch.empty(shape).uniform_(-4, 4))
    return qx.dequantize


def _weight_qint8(weight: torch.Tensor) -> torch.Tensor:
    scale = weight.abs().flatten(1).amax(1).clamp_min(1e-8).double() / 127
    return torch.quantize_per_channel(weight, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)


def _relu_folded(unit: OpUnit) -> bool:
    """The first post-op is relu-like (folded into the anchor kernel)."""
    return bool(unit.post_ops) and unit.post_ops[0].target in _RELU_LIKE


def _with_post_ops(unit: OpUnit, first: Closure, description: str, folded: int) -> Int8Kernel:
    """Chain the post-ops after ``folded`` ones: a residual add → quantized.add(_relu)."""
    rest = list(unit.post_ops[folded:])
    steps: list[Closure] = [first]
    names = [description]
    i = 0
    while i < len(rest):
        node = rest[i]
        shape = node.meta["val"].shape
        qa, qb = _quantize(torch.empty(shape).uniform_(-4, 4)), _quantize(torch.empty(shape).uniform_(-4, 4))
        if node.target in _ADD:
            relu = i + 1 < len(rest) and rest[i + 1].target in _RELU_LIKE
            op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
            steps.append(functools.partial(op, qa, qb, _ACT_SCALE, _ACT_ZERO_POINT))
            names.append("quantized.add_relu" if relu else "quantized.add")
            i += 2 if relu else 1
        elif node.target in _RELU_LIKE:
            steps.append(functools.partial(torch.relu, qa))
            names.append("relu(int8)")
            i += 1
        else:
            raise NotImplementedError(f"no int8 post-op for {node.format_node()}")
    if len(steps) == 1:
        return Int8Kernel(closure=first, description=description)

    def run() -> None:
        for step in steps:
            step()

    return Int8Kernel(closure=run, description=" + ".join(names))


def _list_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: list[int]) -> list[int]:
    value = args[index] if len(args) > index else kwargs.get(name, default)
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * 2


@register_int8_kernel(aten.conv2d.default)
def _conv2d(unit: OpUnit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Int8Kernel:
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    stride = _list_arg(args, kwargs, 3, "stride", [1, 1])
    padding = _list_arg(args, kwargs, 4, "padding", [0, 0])
    dilation = _list_arg(args, kwargs, 5, "dilation", [1, 1])
    groups = int(args[6]) if len(args) > 6 else int(kwargs.get("groups", 1))
    packed = pack_conv2d(_weight_qint8(weight), bias, stride, padding, dilation, groups)
    qx = _quantize(x)
    add = _conv_add(unit, qx, packed)
    if add is not None:
        return add
    relu = _relu_folded(unit)
    op = conv2d_relu if relu else conv2d  # what the lowering calls (see lowering.kernels)
    first = functools.partial(op, qx, packed, _ACT_SCALE, _ACT_ZERO_POINT)
    return _with_post_ops(unit, first, "quantized.conv2d_relu" if relu else "quantized.conv2d", int(relu))


def _conv_add(unit: OpUnit, qx: torch.Tensor, packed: object) -> Int8Kernel | None:
    """conv → add(·, y) [→ relu] as one oneDNN kernel, as the lowering's conv2d_add rule."""
    targets = [n.target for n in unit.post_ops]
    if not HAS_ONEDNN or targets not in ([aten.add.Tensor], [aten.add.Tensor, aten.relu.default]):
        return None
    y = _quantize(torch.empty(unit.post_ops[0].meta["val"].shape).uniform_(-4, 4))
    relu = len(targets) == 2
    kernel = conv2d_add_relu if relu else conv2d_add
    closure = functools.partial(kernel, qx, y, packed, _ACT_SCALE, _ACT_ZERO_POINT)
    return Int8Kernel(closure=closure, description="quantized.conv2d_add_relu" if relu else "quantized.conv2d_add")


@register_int8_kernel(aten.conv1d.default, aten.conv3d.default)
def _conv_nd(unit: OpUnit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Int8Kernel:
    """1-d / 3-d convs: ``onednn.qconv_pointwise`` on the integers, as the lowering's
    ``conv1d_3d`` rule runs them (relu fused in 1-d; in 3-d it runs after, on int8 values)."""
    x, weight = args[0], args[1]
    dims = weight.dim() - 2
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    geometry = (
        _nd_arg(args, kwargs, 3, "stride", dims, 1), _nd_arg(args, kwargs, 4, "padding", dims, 0),
        _nd_arg(args, kwargs, 5, "dilation", dims, 1),
        int(args[6]) if len(args) > 6 else int(kwargs.get("groups", 1)),
    )
    conv = pack_onednn_conv(_weight_qint8(weight), bias, geometry, _ACT_SCALE, _ACT_ZERO_POINT)
    relu = _relu_folded(unit) and dims == 1
    op = onednn_conv_relu if relu else onednn_conv
    first = functools.partial(op, _quantize(x), conv, _ACT_SCALE, _ACT_ZERO_POINT)
    return _with_post_ops(unit, first, "onednn.qconv_pointwise" + ("_relu" if relu else ""), int(relu))


def _nd_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, dims: int, default: int) -> list[int]:
    value = args[index] if len(args) > index else kwargs.get(name, [default] * dims)
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value] * (dims if len(value) == 1 else 1)
    return [int(value)] * dims


@register_int8_kernel(aten.linear.default)
def _linear(unit: OpUnit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Int8Kernel:
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    packed = torch.ops.quantized.linear_prepack(_weight_qint8(weight), bias)
    relu = _relu_folded(unit)
    if unit.dynamic:
        first: Closure = functools.partial(torch.ops.quantized.linear_dynamic, x, packed, relu)
        name = "quantized.linear_relu_dynamic" if relu else "quantized.linear_dynamic"
    else:
        op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
        first = functools.partial(op, _quantize(x), packed, _ACT_SCALE, _ACT_ZERO_POINT)
        name = "quantized.linear_relu" if relu else "quantized.linear"
    return _with_post_ops(unit, first, name, int(relu))


def _binary(op: Any, op_relu: Any, name: str) -> Int8Builder:
    def build(unit: OpUnit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Int8Kernel:
        a, b = args[0], args[1]
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return _emulated(unit, args, kwargs)
        relu = _relu_folded(unit)
        first = functools.partial(op_relu if relu else op, _quantize(a), _quantize(b), _ACT_SCALE, _ACT_ZERO_POINT)
        return _with_post_ops(unit, first, f"{name}_relu" if relu else name, int(relu))

    return build


register_int8_kernel(*_ADD)(_binary(torch.ops.quantized.add, torch.ops.quantized.add_relu, "quantized.add"))
register_int8_kernel(aten.mul.Tensor)(_binary(torch.ops.quantized.mul, torch.ops.quantized.mul_relu, "quantized.mul"))


@register_int8_kernel(
    aten.adaptive_avg_pool2d.default, aten.avg_pool2d.default, aten.max_pool2d.default,
    aten.flatten.using_ints, aten.view.default, aten.reshape.default,
)
def _on_quantized_input(unit: OpUnit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Int8Kernel:
    """Ops whose aten kernels take quantized tensors directly (pools, shape ops)."""
    qx = _quantize(args[0])
    first = functools.partial(op_of(unit.anchor), qx, *args[1:], **kwargs)
    return _with_post_ops(unit, first, f"{unit.anchor.target}(int8)", 0)


@register_int8_kernel(aten.cat.default)
def _cat(unit: OpUnit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Int8Kernel:
    tensors = [_quantize(t) for t in args[0]]
    dim = int(args[1]) if len(args) > 1 else int(kwargs.get("dim", 0))
    first = functools.partial(torch.ops.quantized.cat, tensors, dim, _ACT_SCALE, _ACT_ZERO_POINT)
    return _with_post_ops(unit, first, "quantized.cat", 0)


def _emulated(unit: OpUnit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Int8Kernel:
    """No int8 kernel: the lowering keeps dequantize → fp32 op → quantize."""
    inputs = [_quantize(a) for a in args if isinstance(a, torch.Tensor) and a.dtype.is_floating_point]
    out = unit.output.meta["val"]
    x_out = torch.empty(out.shape).uniform_(-4, 4)
    target = op_of(unit.anchor)

    def run() -> None:
        for q in inputs:
            q.dequantize()
        target(*args, **kwargs)
        _quantize(x_out)

    return Int8Kernel(closure=run, description=f"dequantize → {target} → quantize", emulated=True)


def _passthrough(unit: OpUnit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Int8Kernel:
    """A pass-through op on int8 values: zero pad on the integers, eval dropout gone, the
    rest (pooling, reshapes) by their aten kernels on the quantized tensor."""
    qx = _quantize(args[0])
    target = unit.anchor.target
    if target in (aten.pad.default, aten.constant_pad_nd.default):
        return Int8Kernel(closure=functools.partial(zero_pad, qx, list(args[1])), description="zero_pad(int8)")
    if target == aten.dropout.default:
        return Int8Kernel(closure=lambda: qx, description="identity (eval dropout)")
    return Int8Kernel(closure=functools.partial(op_of(unit.anchor), qx, *args[1:], **kwargs),
                      description=f"{target}(int8)")


def int8_kernel(unit: OpUnit, gm: GraphModule) -> Int8Kernel:
    """The int8 kernel ``unit`` would lower to, ready to time."""
    args, kwargs = materialize(unit.anchor, gm)
    if unit.passthrough:
        return _passthrough(unit, args, kwargs)
    builder = _INT8_KERNELS.get(unit.anchor.target, _emulated)
    try:
        return builder(unit, args, kwargs)
    except NotImplementedError:
        return _emulated(unit, args, kwargs)
