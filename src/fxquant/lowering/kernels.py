"""Quantized CPU kernels that the lowered graphs call, where torch's operator alone does not
fit: oneDNN weight packing, oneDNN's fused conv+add (+relu), oneDNN convolutions of any rank
on the integers, and zero padding.

torch's ``quantized::conv2d_prepack`` packs for the *current* quantized engine. Under the
default ``x86`` engine depthwise convolutions with many groups get fbgemm's packing, whose
depthwise path falls back to a slow generic loop when the padding is not symmetric (as after
TF-style ``pad(x, [0, 1, 0, 1])``): 10-40 ms instead of 0.05-0.2 ms per layer at batch 1.
oneDNN's packed weights are fast for all of them and run under any engine, so convolutions
are packed for oneDNN. ``quantized::conv2d_add[_relu]`` (conv and residual add in one
kernel, exact to the reference) only dispatches while the engine is ``onednn``; the
wrappers below select it for the duration of the call. The quantized engine is a process
global: a thread running other quantized ops concurrently could observe the switch.

1-d and 3-d convolutions run ``onednn.qconv_pointwise`` (Inductor's int8 conv op) on the
integers of the quantized tensors: :func:`int_view` and :func:`quantized_view` convert
between a quantized tensor and its ``uint8``/``int8`` integers without a copy, and
:class:`OnednnConv` holds the weight packed for one input quantization. For 2-d convolutions
``quantized::conv2d`` is kept: its packed weight caches the oneDNN primitive, while
``qconv_pointwise`` rebuilds the primitive descriptor on every call (6-15 us more per call
in isolation, more inside a model; see :mod:`fxquant.lowering.rules.conv`).

Every kernel taking a packed weight is called through a wrapper here (:func:`conv2d`,
:func:`conv2d_relu`, :func:`conv2d_add`, :func:`linear`, :func:`linear_dynamic`, ...), not as
the bare op: the bare call probes the packed weight (a ``torch.ScriptObject``) for a
``__torch_function__`` override, about 7 us per call, as much as a small convolution's own
work (see :mod:`fxquant.nn.packed_call`, shared with the quantized modules of
:mod:`fxquant.nn`). On EfficientNet-Lite0 at batch 1 (49 packed-weight calls) this is
0.6-0.7 ms of 4.2 ms.

``torch.nn.functional.pad`` of a quantized tensor goes through a float fill and copy (about
20x slower than needed): :func:`zero_pad` fills a channels-last buffer with the zero point
and copies the integers into its interior.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from fxquant.nn.engine import HAS_ONEDNN, onednn_engine
from fxquant.nn.packed_call import native_op, no_subclass_probe

__all__ = [
    "HAS_ONEDNN",
    "OnednnConv",
    "conv2d",
    "conv2d_add",
    "conv2d_add_relu",
    "conv2d_relu",
    "int_view",
    "linear",
    "linear_dynamic",
    "linear_relu",
    "onednn_conv",
    "onednn_conv_relu",
    "onednn_engine",
    "pack_conv2d",
    "pack_onednn_conv",
    "quantized_view",
    "zero_pad",
]

Q = torch.ops.quantized
_NO_SUBCLASS_PROBE = no_subclass_probe  # see the module docstring
# the C++ operators behind the overloads (``OpOverload.__call__`` is one more Python frame
# around them, ~1.4 us a call)
_CONV2D = native_op(Q.conv2d.new)
_CONV2D_RELU = native_op(Q.conv2d_relu.new)
_CONV2D_ADD = native_op(Q.conv2d_add.default)
_CONV2D_ADD_RELU = native_op(Q.conv2d_add_relu.default)
_LINEAR = native_op(Q.linear.default)
_LINEAR_RELU = native_op(Q.linear_relu.default)
_LINEAR_DYNAMIC = native_op(Q.linear_dynamic.default)
_INTS = {torch.quint8: torch.uint8, torch.qint8: torch.int8}
_QTYPES = {torch.uint8: torch.quint8, torch.int8: torch.qint8}


def pack_conv2d(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> object:
    """Pre-pack a qint8 conv weight (and float bias) for ``quantized::conv2d``; for oneDNN
    when available (see the module docstring), else for the current engine."""
    args = (weight, bias, list(stride), list(padding), list(dilation), groups)
    if not HAS_ONEDNN:
        return Q.conv2d_prepack(*args)
    with onednn_engine():
        return Q.conv2d_prepack(*args)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class OnednnConv:
    """A convolution (1-d, 2-d or 3-d) pre-packed for oneDNN's int8 kernels
    (``onednn.qconv_prepack``) for one input quantization: the packed weight and everything a
    call passes besides the activations. oneDNN folds the input zero point into the packed
    weight's compensation once, here, instead of on every call."""

    weight: torch.Tensor  # packed by oneDNN (opaque blocked layout)
    weight_scales: torch.Tensor  # float32, one per output channel
    weight_zero_points: torch.Tensor  # int64 zeros: oneDNN weights are symmetric
    bias: torch.Tensor | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    x_scale: float
    x_zero_point: int


def pack_onednn_conv(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv: tuple[Sequence[int], Sequence[int], Sequence[int], int],
    x_scale: float,
    x_zero_point: int,
    x_shape: Sequence[int] | None = None,
) -> OnednnConv:
    """Pre-pack a ``torch.qint8`` conv weight (per output channel or per tensor, zero points
    0) for inputs quantized with ``x_scale`` / ``x_zero_point``; ``conv`` is
    ``(stride, padding, dilation, groups)``. ``x_shape`` (the input shape, when static) lets
    oneDNN pick the weight layout for it. Raises ValueError for asymmetric weights."""
    stride, padding, dilation, groups = conv
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if weight.q_per_channel_axis() != 0:
            raise ValueError("oneDNN int8 convolutions need weights quantized along axis 0")
        scales = weight.q_per_channel_scales().float()
        zero_points = weight.q_per_channel_zero_points()
    else:
        scales = torch.full((weight.shape[0],), weight.q_scale(), dtype=torch.float32)
        zero_points = torch.full((weight.shape[0],), weight.q_zero_point(), dtype=torch.long)
    if bool(zero_points.ne(0).any()):
        raise ValueError("oneDNN int8 convolutions need symmetric weights (zero points 0)")
    packed = torch.ops.onednn.qconv_prepack(
        weight.int_repr(), scales, float(x_scale), int(x_zero_point), list(stride), list(padding),
        list(dilation), int(groups), None if x_shape is None else list(x_shape),
    )
    return OnednnConv(
        weight=packed, weight_scales=scales, weight_zero_points=torch.zeros_like(zero_points),
        bias=None if bias is None else bias.float(), stride=tuple(stride), padding=tuple(padding),
        dilation=tuple(dilation), groups=int(groups), x_scale=float(x_scale), x_zero_point=int(x_zero_point),
    )


def int_view(x: torch.Tensor) -> torch.Tensor:
    """The integers of a per-tensor quantized tensor as a ``uint8``/``int8`` tensor sharing its
    memory (``Tensor.int_repr`` copies)."""
    ints = torch.empty(0, dtype=_INTS[x.dtype])
    return ints.set_(x.untyped_storage(), x.storage_offset(), x.size(), x.stride())


def quantized_view(ints: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """A per-tensor quantized tensor over the memory of a ``uint8``/``int8`` tensor (no copy)."""
    out = torch._empty_affine_quantized(
        [0], scale=scale, zero_point=zero_point, dtype=_QTYPES[ints.dtype]
    )
    return out.set_(ints.untyped_storage(), ints.storage_offset(), ints.size(), ints.stride())


def onednn_conv(x: torch.Tensor, conv: OnednnConv, scale: float, zero_point: int) -> torch.Tensor:
    """``quantize(conv(x))`` by oneDNN for a ``torch.quint8`` ``x`` quantized as ``conv`` was
    packed for; the result is ``torch.quint8`` with ``scale`` / ``zero_point``."""
    return _qconv(x, conv, scale, zero_point, "none")


def onednn_conv_relu(x: torch.Tensor, conv: OnednnConv, scale: float, zero_point: int) -> torch.Tensor:
    """``quantize(relu(conv(x)))`` by oneDNN (see :func:`onednn_conv`)."""
    return _qconv(x, conv, scale, zero_point, "relu")


def _qconv(x: torch.Tensor, conv: OnednnConv, scale: float, zero_point: int, attr: str) -> torch.Tensor:
    out = torch.ops.onednn.qconv_pointwise(
        int_view(x), conv.x_scale, conv.x_zero_point, conv.weight, conv.weight_scales,
        conv.weight_zero_points, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups,
        scale, zero_point, torch.uint8, attr, [], "",
    )
    return quantized_view(out, scale, zero_point)


def conv2d(x: torch.Tensor, packed: object, scale: float, zero_point: int) -> torch.Tensor:
    """``quantized::conv2d``: ``quantize(conv2d(x))`` with weights packed by
    :func:`pack_conv2d`, without the per-call ``__torch_function__`` probe of the packed weight
    (see the module docstring). Same kernel, same numbers."""
    with _NO_SUBCLASS_PROBE():
        return _CONV2D(x, packed, scale, zero_point)


def conv2d_relu(x: torch.Tensor, packed: object, scale: float, zero_point: int) -> torch.Tensor:
    """``quantized::conv2d_relu``: ``quantize(relu(conv2d(x)))`` (see :func:`conv2d`)."""
    with _NO_SUBCLASS_PROBE():
        return _CONV2D_RELU(x, packed, scale, zero_point)


def linear(x: torch.Tensor, packed: object, scale: float, zero_point: int) -> torch.Tensor:
    """``quantized::linear``: ``quantize(linear(x))`` with weights packed by
    ``quantized::linear_prepack``, without the packed weight's probe (see :func:`conv2d`)."""
    with _NO_SUBCLASS_PROBE():
        return _LINEAR(x, packed, scale, zero_point)


def linear_relu(x: torch.Tensor, packed: object, scale: float, zero_point: int) -> torch.Tensor:
    """``quantized::linear_relu``: ``quantize(relu(linear(x)))`` (see :func:`linear`)."""
    with _NO_SUBCLASS_PROBE():
        return _LINEAR_RELU(x, packed, scale, zero_point)


def linear_dynamic(x: torch.Tensor, packed: object, reduce_range: bool = False) -> torch.Tensor:
    """``quantized::linear_dynamic``: float ``x`` quantized per call (min/max parameters),
    int8 GEMM with the packed weight, float result (see :func:`linear`)."""
    with _NO_SUBCLASS_PROBE():
        return _LINEAR_DYNAMIC(x, packed, reduce_range)


def conv2d_add(
    x: torch.Tensor, y: torch.Tensor, packed: object, scale: float, zero_point: int
) -> torch.Tensor:
    """``quantize(conv2d(x) + y)`` in one oneDNN kernel (weights packed by :func:`pack_conv2d`).
    A channels-last ``y`` is overwritten with the result (oneDNN's in-place sum)."""
    with onednn_engine(), _NO_SUBCLASS_PROBE():
        return _CONV2D_ADD(x, y, packed, scale, zero_point)


def conv2d_add_relu(
    x: torch.Tensor, y: torch.Tensor, packed: object, scale: float, zero_point: int
) -> torch.Tensor:
    """``quantize(relu(conv2d(x) + y))`` in one oneDNN kernel."""
    with onednn_engine(), _NO_SUBCLASS_PROBE():
        return _CONV2D_ADD_RELU(x, y, packed, scale, zero_point)


def zero_pad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """``pad(x, pad)`` with real value 0 for a per-tensor quantized ``x``: the integers are
    padded with the zero point (exactly ``quantize(pad(dequantize(x)))``). A 4-d ``x`` padded
    in its last two dims gets a channels-last result (what the int8 convolutions read)."""
    scale, zero_point = x.q_scale(), x.q_zero_point()
    if x.dim() == 4 and len(pad) == 4 and min(pad) >= 0:
        left, right, top, bottom = pad
        n, c, h, w = x.shape
        ints = torch.full((n, h + top + bottom, w + left + right, c), zero_point, dtype=_INTS[x.dtype])
        out = quantized_view(ints.permute(0, 3, 1, 2), scale, zero_point)
        out[:, :, top:top + h, left:left + w].copy_(x)  # same parameters: copies integers
        return out
    ints = torch.nn.functional.pad(x.int_repr(), list(pad), value=zero_point)
    return quantized_view(ints, scale, zero_point)
