"""Affine quantize / dequantize / fake-quantize at every granularity.

The math, for each element ``x`` and its block's ``scale`` and ``zero_point``::

    q     = clamp(round_half_even(x * (1 / scale)) + zero_point, quant_min, quant_max)
    x_hat = (q - zero_point) * scale

``1 / scale`` is taken in float32 and multiplied (not divided). torch's kernels then differ
in one detail, and we match each of them bit for bit:

- product form -- ``round(x * inv_scale) + zero_point``: ``torch.fake_quantize_per_*_affine``,
  ``torch.quantize_per_channel`` and the graph ops ``torch.ops.quantized_decomposed.*``
  (what Inductor and ExecuTorch run). :func:`quantize_affine` and the fake-quantizers use it.
- fused form -- ``round(fma(x, inv_scale, zero_point))`` (one rounding to float32 before the
  integer rounding): ``torch.quantize_per_tensor`` (fbgemm's vectorised kernel). Only
  :func:`quantize_per_tensor` uses it. The two forms differ by one step on about 3 in 10**6
  random values, where ``x * inv_scale`` lands within float32 rounding of a .5 tie.

``torch.round`` rounds half to even, like the kernels' ``nearbyint``.

Granularity is expressed one way, by a ``block_size`` tuple (one entry per input dim): each
block of that shape shares one scale and zero point, and ``scale.shape`` is
``x.shape // block_size``. Per tensor, per channel, per group and per token are block sizes
(see :func:`block_size_for`); the named functions are thin conveniences around the same core.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fxquant.numerics.dtypes import (
    calculate_qmin_qmax,
    is_float_qdtype,
    storage_dtype,
)

__all__ = [
    "block_size_for",
    "blocked_view",
    "dequantize_affine",
    "dequantize_per_channel",
    "dequantize_per_tensor",
    "dequantize_per_token",
    "fake_quantize_affine",
    "fake_quantize_per_channel",
    "fake_quantize_per_tensor",
    "quantize_affine",
    "quantize_per_channel",
    "quantize_per_tensor",
    "quantize_per_token",
    "resolve_qrange",
]


def resolve_qrange(
    dtype: torch.dtype, quant_min: int | None, quant_max: int | None
) -> tuple[int, int]:
    """The dtype's full range where the caller gave no explicit bounds."""
    custom = quant_min is not None and quant_max is not None
    return calculate_qmin_qmax(quant_min, quant_max, custom, dtype, reduce_range=False)


def block_size_for(
    shape: Sequence[int],
    *,
    axis: int | None = None,
    group_size: int | None = None,
    per_token: bool = False,
) -> tuple[int, ...]:
    """The block size of a named granularity for a tensor of ``shape``.

    per tensor: the whole shape; per channel along ``axis``: 1 on that axis, full elsewhere;
    per group: ``group_size`` along the last dim, 1 elsewhere; per token: the last dim.
    """
    shape = tuple(int(s) for s in shape)
    if per_token:
        return (1,) * (len(shape) - 1) + (shape[-1],)
    if group_size is not None:
        if shape[-1] % group_size:
            raise ValueError(
                f"last dimension {shape[-1]} is not divisible by group_size {group_size}"
            )
        return (1,) * (len(shape) - 1) + (group_size,)
    if axis is not None:
        axis = _normalize_axis(axis, len(shape))
        return tuple(1 if d == axis else s for d, s in enumerate(shape))
    return shape


def _normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise IndexError(
            f"channel axis {axis} is out of range for a tensor with {ndim} dimensions; "
            f"use an axis in [{-ndim}, {ndim - 1}]"
        )
    return axis % ndim


def blocked_view(x: torch.Tensor, block_size: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """View ``x`` as (n0, b0, n1, b1, ...) so that a (n0, 1, n1, 1, ...) qparam broadcasts."""
    if len(block_size) != x.dim():
        raise ValueError(f"block_size {tuple(block_size)} has {len(block_size)} dims, tensor has {x.dim()}")
    shape: list[int] = []
    qparam_shape: list[int] = []
    for size, block in zip(x.shape, block_size):
        if block <= 0 or size % block:
            raise ValueError(
                f"block_size {tuple(block_size)} does not tile tensor shape {tuple(x.shape)}"
            )
        shape += [size // block, block]
        qparam_shape += [size // block, 1]
    return x.reshape(shape), qparam_shape


def _qparams_for_blocks(
    t: torch.Tensor, qparam_shape: list[int], dtype: torch.dtype
) -> torch.Tensor:
    numel = 1
    for s in qparam_shape:
        numel *= s
    t = torch.as_tensor(t)
    if t.numel() != numel:
        raise ValueError(
            f"quantization parameter has {t.numel()} elements but the blocks need {numel}"
        )
    return t.to(dtype).reshape(qparam_shape)


def _quantize_core(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    quant_min: int,
    quant_max: int,
    *,
    fused: bool = False,
) -> torch.Tensor:
    inv_scale = 1.0 / scale
    if fused:
        # fma(x, inv_scale, zp): the float32*float32 product is exact in float64, so one
        # rounding of (product + zp) to float32 reproduces the fused multiply-add.
        t = (x.double() * inv_scale.double() + zero_point.double()).float()
        return torch.clamp(torch.round(t), quant_min, quant_max)
    # product form: round_half_even(x * inv_scale) + zp
    return torch.clamp(torch.round(x.float() * inv_scale) + zero_point, quant_min, quant_max)


def quantize_affine(
    x: torch.Tensor,
    block_size: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    dtype: torch.dtype,
    quant_min: int | None = None,
    quant_max: int | None = None,
    *,
    fused: bool = False,
) -> torch.Tensor:
    """Quantize ``x`` block-wise (product form; ``fused=True`` for the fused form); returns the integers in the dtype's storage dtype
    (``torch.qint8`` values come back as ``torch.int8`` and so on; 4-bit values unpacked).
    Float targets (float16, float8) are a scaled, saturating cast."""
    if is_float_qdtype(dtype):
        return _quantize_float(x, block_size, scale, dtype)
    quant_min, quant_max = resolve_qrange(dtype, quant_min, quant_max)
    blocked, qshape = blocked_view(x, block_size)
    s = _qparams_for_blocks(scale, qshape, torch.float32)
    zp = (
        torch.zeros_like(s)
        if zero_point is None
        else _qparams_for_blocks(zero_point, qshape, torch.float32)
    )
    q = _quantize_core(blocked, s, zp, quant_min, quant_max, fused=fused)
    return q.reshape(x.shape).to(storage_dtype(dtype))


def dequantize_affine(
    q: torch.Tensor,
    block_size: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    dtype: torch.dtype | None = None,
    *,
    output_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(q - zero_point) * scale`` block-wise, returned as ``output_dtype``.

    Computed in float32, or in float64 when the scales are float64 (as torch's per-channel
    dequantize does with its double scales). ``dtype`` (the quantized dtype) is only needed
    for float targets."""
    blocked, qshape = blocked_view(q, block_size)
    scale = torch.as_tensor(scale)
    compute = torch.promote_types(scale.dtype, torch.float32)
    s = _qparams_for_blocks(scale, qshape, compute)
    if dtype is not None and is_float_qdtype(dtype):
        return (blocked.to(compute) * s).reshape(q.shape).to(output_dtype)
    zp = (
        torch.zeros_like(s)
        if zero_point is None
        else _qparams_for_blocks(zero_point, qshape, compute)
    )
    return ((blocked.to(compute) - zp) * s).reshape(q.shape).to(output_dtype)


def fake_quantize_affine(
    x: torch.Tensor,
    block_size: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    dtype: torch.dtype,
    quant_min: int | None = None,
    quant_max: int | None = None,
) -> torch.Tensor:
    """``dequantize(quantize(x))`` in ``x``'s dtype, without materialising integers."""
    if is_float_qdtype(dtype):
        q = _quantize_float(x, block_size, scale, dtype)
        return dequantize_affine(q, block_size, scale, None, dtype, output_dtype=x.dtype)
    quant_min, quant_max = resolve_qrange(dtype, quant_min, quant_max)
    blocked, qshape = blocked_view(x, block_size)
    s = _qparams_for_blocks(scale, qshape, torch.float32)
    zp = (
        torch.zeros_like(s)
        if zero_point is None
        else _qparams_for_blocks(zero_point, qshape, torch.float32)
    )
    q = _quantize_core(blocked, s, zp, quant_min, quant_max)
    return ((q - zp) * s).reshape(x.shape).to(x.dtype)


def _quantize_float(
    x: torch.Tensor, block_size: Sequence[int], scale: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    # Saturating cast: values beyond the float dtype's max clamp to it instead of becoming inf.
    fmax = torch.finfo(dtype).max
    blocked, qshape = blocked_view(x, block_size)
    s = _qparams_for_blocks(scale, qshape, torch.float32)
    y = torch.clamp(blocked.float() / s, -fmax, fmax)
    return y.reshape(x.shape).to(dtype)


# ---- named granularities ------------------------------------------------------------------


def quantize_per_tensor(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    quant_min: int | None = None,
    quant_max: int | None = None,
    dtype: torch.dtype = torch.uint8,
) -> torch.Tensor:
    """One scale and zero point for the whole tensor; matches ``torch.quantize_per_tensor``
    bit for bit (fused form). Graph passes use :func:`quantize_affine`, which matches
    ``quantized_decomposed.quantize_per_tensor`` instead."""
    return quantize_affine(
        x, x.shape, torch.as_tensor(scale), torch.as_tensor(zero_point), dtype, quant_min,
        quant_max, fused=True,
    )


def dequantize_per_tensor(
    q: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    output_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    return dequantize_affine(
        q, q.shape, torch.as_tensor(scale), torch.as_tensor(zero_point), dtype,
        output_dtype=output_dtype,
    )


def fake_quantize_per_tensor(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype = torch.int32,
) -> torch.Tensor:
    """Matches ``torch.fake_quantize_per_tensor_affine`` (``dtype`` matters only for float
    targets; the integer range comes from ``quant_min``/``quant_max``)."""
    return fake_quantize_affine(
        x, x.shape, torch.as_tensor(scale), torch.as_tensor(zero_point), dtype, quant_min, quant_max
    )


def quantize_per_channel(
    x: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor,
    axis: int,
    quant_min: int | None = None,
    quant_max: int | None = None,
    dtype: torch.dtype = torch.int8,
) -> torch.Tensor:
    """One scale and zero point per slice along ``axis`` (matches ``torch.quantize_per_channel``)."""
    block = block_size_for(x.shape, axis=axis)
    return quantize_affine(x, block, scales, zero_points, dtype, quant_min, quant_max)


def dequantize_per_channel(
    q: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    axis: int,
    *,
    dtype: torch.dtype | None = None,
    output_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    block = block_size_for(q.shape, axis=axis)
    return dequantize_affine(q, block, scales, zero_points, dtype, output_dtype=output_dtype)


def fake_quantize_per_channel(
    x: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor,
    axis: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype = torch.int32,
) -> torch.Tensor:
    """Matches ``torch.fake_quantize_per_channel_affine``."""
    block = block_size_for(x.shape, axis=axis)
    return fake_quantize_affine(x, block, scales, zero_points, dtype, quant_min, quant_max)


def quantize_per_token(
    x: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    quant_min: int | None = None,
    quant_max: int | None = None,
    dtype: torch.dtype = torch.int8,
) -> torch.Tensor:
    """One scale per row of the last dimension (dynamic activation quantization)."""
    block = block_size_for(x.shape, per_token=True)
    return quantize_affine(x, block, scales, zero_points, dtype, quant_min, quant_max)


def dequantize_per_token(
    q: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    *,
    output_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    block = block_size_for(q.shape, per_token=True)
    return dequantize_affine(q, block, scales, zero_points, output_dtype=output_dtype)
