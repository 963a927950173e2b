"""Choosing scale and zero point from a range ``[min_val, max_val]``.

This is the one place that turns statistics into quantization parameters; every observer
calls :func:`choose_qparams` with the range it measured. Shapes follow the range: scalars for
per-tensor, one entry per channel (or per block) otherwise.

Affine (asymmetric) scheme, with the range first widened to contain 0::

    scale      = (max(max_val, 0) - min(min_val, 0)) / (quant_max - quant_min)
    zero_point = clamp(quant_min - round(min(min_val, 0) / scale), quant_min, quant_max)

Symmetric scheme::

    scale      = max(-min(min_val, 0), max(max_val, 0)) / ((quant_max - quant_min) / 2)
    zero_point = 0 for signed dtypes; the range's midpoint for unsigned ones

Float-qparams scheme (embedding tables; the zero point is a float offset)::

    scale      = (max_val - min_val) / (quant_max - quant_min)   (1.0 where <= eps)
    zero_point = -min_val / scale

``scale`` is never below ``eps``, so a constant tensor still gets a usable, finite scale.
Float8/float16 targets have no integer grid: ``scale = amax / finfo(dtype).max``, zero point 0.
"""

from __future__ import annotations

import math
import struct

import torch

from fxquant.numerics.dtypes import is_float_qdtype

__all__ = [
    "AFFINE_QSCHEMES",
    "PER_CHANNEL_QSCHEMES",
    "SYMMETRIC_QSCHEMES",
    "InvalidRangeError",
    "check_finite_range",
    "choose_qparams",
    "choose_qparams_per_tensor",
    "symmetric_zero_point",
]

SYMMETRIC_QSCHEMES = frozenset({torch.per_tensor_symmetric, torch.per_channel_symmetric})
PER_CHANNEL_QSCHEMES = frozenset(
    {torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams}
)
AFFINE_QSCHEMES = frozenset(
    {
        torch.per_tensor_affine,
        torch.per_tensor_symmetric,
        torch.per_channel_affine,
        torch.per_channel_symmetric,
        torch.per_channel_affine_float_qparams,
    }
)

_FLOAT32_EPS = torch.finfo(torch.float32).eps
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class InvalidRangeError(ValueError):
    """A measured range that cannot give quantization parameters (min > max, NaN, Inf)."""


def check_finite_range(min_val: torch.Tensor, max_val: torch.Tensor) -> None:
    """Raise if the range has NaN/Inf entries or any ``min_val > max_val``."""
    if not (torch.isfinite(min_val).all() and torch.isfinite(max_val).all()):
        raise InvalidRangeError(
            f"range has non-finite entries (min={min_val.tolist()}, max={max_val.tolist()}); "
            "the observed data contained NaN or Inf: clean the calibration data"
        )
    if bool((min_val > max_val).any()):
        raise InvalidRangeError(
            f"min_val {min_val.tolist()} is greater than max_val {max_val.tolist()}"
        )


def symmetric_zero_point(dtype: torch.dtype, quant_min: int, quant_max: int, custom: bool) -> int:
    """The zero point of symmetric quantization to ``dtype`` over ``[quant_min, quant_max]``."""
    # Truth table (upstream semantics):
    #   signed dtypes            -> 0
    #   uint8/quint8, default    -> 128
    #   uint8/quint8, custom     -> (quant_min + quant_max) // 2   (rounded down midpoint)
    #   uint16                   -> 2**15
    if dtype in (torch.quint8, torch.uint8):
        return (quant_min + quant_max) // 2 if custom else 128
    if dtype == torch.uint16:
        return 2**15
    return 0


def choose_qparams(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    *,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype = torch.quint8,
    qscheme: torch.qscheme = torch.per_tensor_affine,
    eps: float | torch.Tensor = _FLOAT32_EPS,
    has_customized_qrange: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int64; float32 for float-qparams) for the range.

    >>> choose_qparams(torch.tensor(-1.0), torch.tensor(3.0), quant_min=0, quant_max=255)
    (tensor([0.0157]), tensor([64]))
    """
    if qscheme not in AFFINE_QSCHEMES:
        raise ValueError(f"unsupported qscheme {qscheme}; use one of {sorted(map(str, AFFINE_QSCHEMES))}")
    check_finite_range(min_val, max_val)
    eps_t = torch.as_tensor(eps, dtype=torch.float32, device=min_val.device)
    if is_float_qdtype(dtype):
        return _float_dtype_qparams(min_val, max_val, dtype, eps_t)
    min_val_neg = torch.minimum(min_val, torch.zeros_like(min_val))
    max_val_pos = torch.maximum(max_val, torch.zeros_like(max_val))
    span = float(quant_max - quant_min)
    if qscheme in SYMMETRIC_QSCHEMES:
        amax = torch.maximum(-min_val_neg, max_val_pos)
        scale = torch.maximum(amax / (span / 2), eps_t)
        zp = symmetric_zero_point(dtype, quant_min, quant_max, has_customized_qrange)
        zero_point = torch.full_like(scale, zp, dtype=torch.int64)
    elif qscheme == torch.per_channel_affine_float_qparams:
        scale = (max_val - min_val) / span
        scale = torch.where(scale > eps_t, scale, torch.ones_like(scale))
        zero_point = -1 * min_val / scale
    else:
        scale = torch.maximum((max_val_pos - min_val_neg) / span, eps_t)
        zero_point = quant_min - torch.round(min_val_neg / scale).to(torch.int)
        zero_point = torch.clamp(zero_point, quant_min, quant_max)
    return _as_1d(scale.to(torch.float32)), _as_1d(zero_point)


def choose_qparams_per_tensor(
    min_val: float,
    max_val: float,
    *,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype = torch.quint8,
    qscheme: torch.qscheme = torch.per_tensor_affine,
    eps: float = _FLOAT32_EPS,
    has_customized_qrange: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`choose_qparams` for a per-tensor range given as Python floats: the same scale
    and zero point, bit for bit, with the scalar arithmetic done in Python.

    The range is first rounded to float32 (as ``torch.tensor(min_val)`` would be) and every
    step is rounded to float32 like torch's float32 kernels round it: a float32 sum,
    difference or quotient computed in double and rounded once to float32 is the correctly
    rounded float32 result, since double has more than twice float32's precision. Ranges
    this path does not cover (non-finite values, float or per-channel schemes, overflow) go
    through :func:`choose_qparams`, which also raises its errors.

    >>> choose_qparams_per_tensor(-1.0, 3.0, quant_min=0, quant_max=255)
    (tensor([0.0157]), tensor([64], dtype=torch.int32))
    """
    simple = (
        qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric)
        and not is_float_qdtype(dtype)
        and math.isfinite(min_val)
        and math.isfinite(max_val)
        and min_val <= max_val
    )
    if simple:
        try:
            scale, zero_point = _scalar_qparams(
                min_val, max_val, quant_min, quant_max, dtype, qscheme, eps, has_customized_qrange
            )
        except OverflowError:  # beyond float32: the tensor path gives torch's inf/nan
            simple = False
    if not simple:
        return choose_qparams(
            torch.tensor(min_val, device=device),
            torch.tensor(max_val, device=device),
            quant_min=quant_min,
            quant_max=quant_max,
            dtype=dtype,
            qscheme=qscheme,
            eps=eps,
            has_customized_qrange=has_customized_qrange,
        )
    zp_dtype = torch.int64 if qscheme in SYMMETRIC_QSCHEMES else torch.int32
    return (
        torch.tensor([scale], dtype=torch.float32, device=device),
        torch.tensor([zero_point], dtype=zp_dtype, device=device),
    )


def _f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (ties to even); OverflowError beyond it."""
    rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    return rounded


def _scalar_qparams(
    min_val: float,
    max_val: float,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    qscheme: torch.qscheme,
    eps: float,
    custom: bool,
) -> tuple[float, int]:
    # the float32 operations of choose_qparams, one rounding each
    min_neg = min(_f32(min_val), 0.0)
    max_pos = max(_f32(max_val), 0.0)
    span = float(quant_max - quant_min)
    eps32 = _f32(eps)
    if qscheme in SYMMETRIC_QSCHEMES:
        amax = max(-min_neg, max_pos)
        scale = max(_f32(amax / _f32(span / 2)), eps32)
        return scale, symmetric_zero_point(dtype, quant_min, quant_max, custom)
    scale = max(_f32(_f32(max_pos - min_neg) / _f32(span)), eps32)
    steps = round(_f32(min_neg / scale))  # round: half to even, as torch
    zero_point = quant_min - steps
    if not (_INT32_MIN <= steps <= _INT32_MAX and _INT32_MIN <= zero_point <= _INT32_MAX):
        # torch computes this in int32 and would overflow: leave that to the tensor path
        raise OverflowError("zero point beyond int32")
    return scale, min(max(zero_point, quant_min), quant_max)


def _float_dtype_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, dtype: torch.dtype, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # Cast quantization: x_q = saturate(x / scale) in the float dtype; map amax to its max.
    amax = torch.maximum(min_val.abs(), max_val.abs())
    scale = torch.maximum(amax / torch.finfo(dtype).max, eps)
    return _as_1d(scale.to(torch.float32)), _as_1d(torch.zeros_like(scale, dtype=torch.int64))


def _as_1d(t: torch.Tensor) -> torch.Tensor:
    # Per-tensor qparams are shape [1], as FakeQuantize buffers and upstream observers expect.
    return t.reshape(1) if t.dim() == 0 else t
