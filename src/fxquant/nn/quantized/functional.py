"""Functional forms of the quantized ops (``torch.ao.nn.quantized.functional``'s names).

Quantized tensors in, quantized tensors out. Ops that keep the input's qparams (pooling,
interpolation, clamp, hardtanh, ...) are torch's own functions, which dispatch to the
quantized kernels for quantized inputs; ops with new output qparams (``elu``, ``hardswish``,
``celu``, the convolutions, ``linear``) take ``scale`` / ``zero_point``. Convolution and linear
pack their weight on every call: fine for experiments, use the modules for speed.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair, _single, _triple

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.conv import prepack_conv

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "avg_pool2d",
    "avg_pool3d",
    "celu",
    "clamp",
    "conv1d",
    "conv2d",
    "conv3d",
    "elu",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "interpolate",
    "leaky_relu",
    "linear",
    "max_pool1d",
    "max_pool2d",
    "threshold",
    "upsample",
    "upsample_bilinear",
    "upsample_nearest",
]

_LINEAR = packed_kernel(torch.ops.quantized.linear.default)
_CONV1D = packed_kernel(torch.ops.quantized.conv1d.default)
_CONV2D = packed_kernel(torch.ops.quantized.conv2d.new)
_CONV3D = packed_kernel(torch.ops.quantized.conv3d.new)


def _quantized(op: str, x: Tensor) -> None:
    check_quantized_input(f"quantized.functional.{op}", x)


# ---- ops that keep the input's qparams ----------------------------------------------------


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """2-d average pooling of a quantized tensor."""
    _quantized("avg_pool2d", input)
    return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override)


def avg_pool3d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """3-d average pooling of a quantized tensor."""
    _quantized("avg_pool3d", input)
    return F.avg_pool3d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override)


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """2-d adaptive average pooling of a quantized tensor."""
    _quantized("adaptive_avg_pool2d", input)
    return F.adaptive_avg_pool2d(input, output_size)


def adaptive_avg_pool3d(input: Tensor, output_size: Any) -> Tensor:
    """3-d adaptive average pooling of a quantized tensor."""
    _quantized("adaptive_avg_pool3d", input)
    return F.adaptive_avg_pool3d(input, output_size)


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """1-d max pooling of a quantized tensor (no indices)."""
    if return_indices:
        raise NotImplementedError("quantized max_pool1d cannot return indices")
    return F.max_pool1d(input, kernel_size, stride if stride is not None else [], padding,
                        dilation, ceil_mode=ceil_mode)


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """2-d max pooling of a quantized tensor (no indices)."""
    if return_indices:
        raise NotImplementedError("quantized max_pool2d cannot return indices")
    return F.max_pool2d(input, kernel_size, stride if stride is not None else [], padding,
                        dilation, ceil_mode=ceil_mode)


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,
                mode: str = "nearest", align_corners: bool | None = None) -> Tensor:
    """Resize a quantized tensor (nearest, bilinear; as ``F.interpolate``)."""
    _quantized("interpolate", input)
    return F.interpolate(input, size, scale_factor, mode, align_corners)


def upsample(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
             align_corners: bool | None = None) -> Tensor:
    """Deprecated alias of :func:`interpolate`."""
    warnings.warn("quantized upsample is deprecated; use interpolate", FutureWarning, stacklevel=2)
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_bilinear(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:
    """Deprecated: :func:`interpolate` with ``mode="bilinear", align_corners=True``."""
    warnings.warn("quantized upsample_bilinear is deprecated; use interpolate", FutureWarning,
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


def upsample_nearest(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:
    """Deprecated: :func:`interpolate` with ``mode="nearest"``."""
    warnings.warn("quantized upsample_nearest is deprecated; use interpolate", FutureWarning,
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode="nearest")


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0,
             inplace: bool = False) -> Tensor:
    """Clamp a quantized tensor to ``[min_val, max_val]``."""
    _quantized("hardtanh", input)
    if inplace:
        return torch._C._nn.hardtanh_(input, min_val, max_val)
    return torch._C._nn.hardtanh(input, min_val, max_val)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """Hard sigmoid of a quantized tensor."""
    _quantized("hardsigmoid", input)
    if inplace:
        return torch._C._nn.hardsigmoid_(input)
    return torch._C._nn.hardsigmoid(input)


def clamp(input: Tensor, min_: float, max_: float) -> Tensor:
    """``torch.clamp`` of a quantized tensor."""
    _quantized("clamp", input)
    return torch.clamp(input, min_, max_)


def threshold(input: Tensor, threshold: float, value: float) -> Tensor:
    """``value`` where ``input <= threshold``, else ``input``."""
    _quantized("threshold", input)
    return torch.ops.quantized.threshold(input, threshold, value)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False,
               scale: float | None = None, zero_point: int | None = None) -> Tensor:
    """Leaky ReLU; with ``scale`` and ``zero_point`` the output is requantized to them."""
    if scale is not None and zero_point is not None:
        if inplace:
            raise ValueError("leaky_relu cannot requantize to a new scale in place")
        out = torch._empty_affine_quantized(
            input.shape, scale=scale, zero_point=int(zero_point), dtype=input.dtype
        )
        torch._C._nn.leaky_relu(input, negative_slope, out=out)
        return out
    if inplace:
        return torch._C._nn.leaky_relu_(input, negative_slope)
    return torch._C._nn.leaky_relu(input, negative_slope)


# ---- ops with new output qparams ------------------------------------------------------------


def elu(input: Tensor, scale: float, zero_point: int, alpha: float = 1.0) -> Tensor:
    """ELU with output ``scale`` / ``zero_point``."""
    _quantized("elu", input)
    return torch.ops.quantized.elu(input, scale, zero_point, alpha)


def celu(input: Tensor, scale: float, zero_point: int, alpha: float = 1.0) -> Tensor:
    """CELU with output ``scale`` / ``zero_point``."""
    _quantized("celu", input)
    return torch.ops.quantized.celu(input, scale, zero_point, alpha)


def hardswish(input: Tensor, scale: float, zero_point: int) -> Tensor:
    """Hardswish with output ``scale`` / ``zero_point``."""
    _quantized("hardswish", input)
    return torch.ops.quantized.hardswish(input, scale, zero_point)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None,
           scale: float | None = None, zero_point: int | None = None) -> Tensor:
    """Quantized linear; output qparams default to the input's."""
    _quantized("linear", input)
    scale = input.q_scale() if scale is None else scale
    zero_point = input.q_zero_point() if zero_point is None else zero_point
    packed = torch.ops.quantized.linear_prepack(weight, bias)
    return _LINEAR(input, packed, scale, zero_point)


def _check_conv(op: str, input: Tensor, weight: Tensor, padding_mode: str, ndim: int) -> None:
    _quantized(op, input)
    if padding_mode != "zeros":
        raise NotImplementedError(f"quantized.functional.{op} supports only zero padding")
    if input.dtype != torch.quint8 or weight.dtype != torch.qint8:
        raise NotImplementedError(
            f"quantized.functional.{op} needs a torch.quint8 input and a torch.qint8 weight, "
            f"got {input.dtype} and {weight.dtype}"
        )
    if input.dim() != ndim + 2:
        raise ValueError(
            f"quantized.functional.{op} expects a {ndim + 2}-d input, got {input.dim()}-d"
        )


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros", scale: float = 1.0,
           zero_point: int = 0, dtype: torch.dtype = torch.quint8) -> Tensor:
    """Quantized 1-d convolution with output ``scale`` / ``zero_point``."""
    _check_conv("conv1d", input, weight, padding_mode, 1)
    packed = torch.ops.quantized.conv1d_prepack(
        weight, bias, _single(stride), _single(padding), _single(dilation), groups
    )
    return _CONV1D(input, packed, scale, zero_point)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros", scale: float = 1.0,
           zero_point: int = 0, dtype: torch.dtype = torch.quint8) -> Tensor:
    """Quantized 2-d convolution with output ``scale`` / ``zero_point``."""
    _check_conv("conv2d", input, weight, padding_mode, 2)
    # depthwise under x86: packed for oneDNN, as the Conv2d module does
    packed = prepack_conv(
        torch.ops.quantized.conv2d_prepack, weight, bias, (_pair(stride), _pair(padding), _pair(dilation), groups), 2
    )
    return _CONV2D(input, packed, scale, zero_point)


def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros", scale: float = 1.0,
           zero_point: int = 0, dtype: torch.dtype = torch.quint8) -> Tensor:
    """Quantized 3-d convolution with output ``scale`` / ``zero_point``."""
    _check_conv("conv3d", input, weight, padding_mode, 3)
    packed = torch.ops.quantized.conv3d_prepack(
        weight, bias, _triple(stride), _triple(padding), _triple(dilation), groups
    )
    return _CONV3D(input, packed, scale, zero_point)
