"""Block-wise choice of scale and zero point: one set of parameters per block of a tensor.

``block_size`` has one entry per input dim; every block of that shape shares a scale and a
zero point (per tensor, per axis, per group and per token are all block sizes, see
:func:`fxquant.numerics.affine.block_size_for`). The statistics are each block's min and max.

:func:`choose_qparams_affine` follows torchao's PT2E ``choose_qparams_affine`` (mapping type,
``preserve_zero``, zero-point domain); :func:`choose_qparams_per_token` and
:func:`choose_qparams_per_token_asymmetric` equal the ``torch.ops.quantized_decomposed`` ops of
the same names bit for bit; :func:`choose_qparams_per_group` gives low-bit group-wise weight
parameters for ``quantized_decomposed.quantize_per_channel_group``.

Output layout of :func:`choose_qparams_affine`: one entry per block, with the dims that form a
single whole-dim block (``block == size > 1``) dropped -- torchao's layout. Per tensor gives a
0-d scale, per token on ``(2, 3, 4)`` gives ``(2, 3)``. The q/dq functions of
:mod:`fxquant.numerics.affine` accept any layout with the right number of entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum, auto
from typing import TypeVar

import torch

from fxquant.numerics.affine import blocked_view
from fxquant.numerics.dtypes import (
    INT_DTYPE_RANGES,
    QuantizationRangeError,
    UnsupportedDTypeError,
)

__all__ = [
    "FLOAT8_DTYPES",
    "MappingType",
    "TorchAODType",
    "ZeroPointDomain",
    "affine_qrange",
    "blockwise_minmax",
    "choose_qparams_affine",
    "choose_qparams_affine_with_min_max",
    "choose_qparams_per_group",
    "choose_qparams_per_token",
    "choose_qparams_per_token_asymmetric",
    "group_qrange",
]


class MappingType(Enum):
    """How the float range maps onto the integer range.

    - ``SYMMETRIC``: the range is made symmetric around 0, ``[-amax, amax]``, and mapped onto
      ``[quant_min, quant_max]``; the zero point is the middle of the integer range.
    - ``SYMMETRIC_NO_CLIPPING_ERR``: symmetric, but the negative side is scaled to
      ``quant_min`` and the positive side to ``quant_max`` separately and the larger scale
      wins, so nothing is clipped (e.g. int4 ``[-8, 7]`` uses the ``-8``).
    - ``ASYMMETRIC``: ``[min, max]`` maps onto ``[quant_min, quant_max]`` with a zero point.
    """

    SYMMETRIC = auto()
    SYMMETRIC_NO_CLIPPING_ERR = auto()
    ASYMMETRIC = auto()


class ZeroPointDomain(Enum):
    """Where the zero point lives.

    - ``INT``:   ``q = round(x / scale) + zero_point`` (an integer zero point)
    - ``FLOAT``: ``q = round((x - (zero_point - scale * mid)) / scale)`` with
      ``mid = (quant_min + quant_max + 1) / 2`` (a float zero point; tinygemm's layout)
    - ``NONE``:  ``q = round(x / scale)`` (no zero point)
    """

    INT = auto()
    FLOAT = auto()
    NONE = auto()


class TorchAODType(Enum):
    """Stand-ins for sub-byte signed integer dtypes (``INTn`` holds ``[-2**(n-1), 2**(n-1)-1]``),
    kept for code written before torch had ``torch.int1`` ... ``torch.int7``."""

    INT1 = auto()
    INT2 = auto()
    INT3 = auto()
    INT4 = auto()
    INT5 = auto()
    INT6 = auto()
    INT7 = auto()


FLOAT8_DTYPES: frozenset[torch.dtype] = frozenset(
    getattr(torch, name)
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, name)
)

TargetDType = torch.dtype | TorchAODType


def _signed(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _build_bounds() -> dict[TargetDType, tuple[int, int]]:
    bounds: dict[TargetDType, tuple[int, int]] = {
        dtype: (r.qmin, r.qmax) for dtype, r in INT_DTYPE_RANGES.items()
    }
    for bits in range(1, 8):
        bounds[getattr(torch, f"uint{bits}")] = (0, 2**bits - 1)
        bounds[getattr(torch, f"int{bits}")] = _signed(bits)
        bounds[TorchAODType[f"INT{bits}"]] = _signed(bits)
    return bounds


# Full integer range of every integer target dtype, sub-byte ones included.
_QVALUE_BOUNDS = _build_bounds()


def affine_qrange(
    target_dtype: TargetDType,
    quant_min: float | None = None,
    quant_max: float | None = None,
) -> tuple[int | float, int | float]:
    """The ``(quant_min, quant_max)`` to quantize to: the dtype's full range where a bound is
    not given. Float8 targets use their finite float range.

    >>> affine_qrange(torch.int4)
    (-8, 7)
    """
    if target_dtype in FLOAT8_DTYPES:
        assert isinstance(target_dtype, torch.dtype)
        finfo = torch.finfo(target_dtype)
        lower, upper = finfo.min, finfo.max
    elif target_dtype in _QVALUE_BOUNDS:
        lower, upper = _QVALUE_BOUNDS[target_dtype]
    else:
        raise UnsupportedDTypeError(
            f"cannot choose affine quantization parameters for target dtype {target_dtype}; "
            "use an integer dtype (torch.int8, torch.uint8, torch.int4, torch.uint1..7, "
            "torch.int16, torch.int32, TorchAODType.INTn) or a float8 dtype"
        )
    qmin = lower if quant_min is None else quant_min
    qmax = upper if quant_max is None else quant_max
    if qmin < lower or qmax > upper:
        raise QuantizationRangeError(
            f"quantization range [{qmin}, {qmax}] exceeds {target_dtype}'s range "
            f"[{lower}, {upper}]; narrow quant_min/quant_max or choose a wider dtype"
        )
    if qmin >= qmax:
        raise QuantizationRangeError(f"quant_min ({qmin}) must be less than quant_max ({qmax})")
    return qmin, qmax


def blockwise_minmax(
    x: torch.Tensor, block_size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of every block of ``x`` (torchao's layout, see the module docstring).

    >>> blockwise_minmax(torch.arange(8.0).reshape(2, 4), (1, 2))[1]
    tensor([[1., 3.],
            [5., 7.]])
    """
    # (n0, b0, n1, b1, ...): reduce the b-dims, leaving (n0, n1, ...)
    blocked, _ = blocked_view(x, block_size)
    within = tuple(range(1, blocked.dim(), 2))
    min_val = torch.amin(blocked, dim=within)
    max_val = torch.amax(blocked, dim=within)
    # torchao drops the dims that are one whole block (block == size > 1) and keeps the rest
    kept = [n for size, block, n in zip(x.shape, block_size, min_val.shape)
            if not (block == size and block != 1)]
    return min_val.reshape(kept), max_val.reshape(kept)


_E = TypeVar("_E", bound=Enum)


def _as_enum(value: object, enum: type[_E], what: str) -> _E:
    if isinstance(value, enum):
        return value
    if isinstance(value, str) and value in enum.__members__:
        return enum[value]
    names = ", ".join(enum.__members__)
    raise ValueError(f"unknown {what} {value!r}; use {enum.__name__}.<one of {names}>")


def choose_qparams_affine(
    input: torch.Tensor,
    mapping_type: MappingType | str,
    block_size: Sequence[int],
    target_dtype: TargetDType,
    quant_min: float | None = None,
    quant_max: float | None = None,
    eps: float | None = None,
    scale_dtype: torch.dtype | None = None,
    zero_point_dtype: torch.dtype | None = None,
    preserve_zero: bool = True,
    zero_point_domain: ZeroPointDomain | str | None = ZeroPointDomain.INT,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale and zero point for every block of ``input`` (``block_size`` per dim).

    ``eps`` (the smallest scale), ``scale_dtype`` and ``zero_point_dtype`` default to the input
    dtype's. The zero point is ``None`` for ``ZeroPointDomain.NONE``. ``mapping_type`` and
    ``zero_point_domain`` may also be given by name (``"ASYMMETRIC"``), as graph nodes do.

    >>> x = torch.tensor([[-1.0, 3.0, 0.5, 2.0]])
    >>> choose_qparams_affine(x, MappingType.ASYMMETRIC, (1, 2), torch.uint8)
    (tensor([[0.0157, 0.0078]]), tensor([[64.,  0.]]))
    """
    if len(block_size) != input.dim():
        raise ValueError(
            f"block_size {tuple(block_size)} has {len(block_size)} entries but the input has "
            f"{input.dim()} dims; give one block size per dim"
        )
    min_val, max_val = blockwise_minmax(input, block_size)
    return choose_qparams_affine_with_min_max(
        min_val, max_val, mapping_type, block_size, target_dtype, quant_min, quant_max, eps,
        scale_dtype, zero_point_dtype, preserve_zero, zero_point_domain,
    )


def choose_qparams_affine_with_min_max(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    mapping_type: MappingType | str,
    block_size: Sequence[int],
    target_dtype: TargetDType,
    quant_min: float | None = None,
    quant_max: float | None = None,
    eps: float | None = None,
    scale_dtype: torch.dtype | None = None,
    zero_point_dtype: torch.dtype | None = None,
    preserve_zero: bool = True,
    zero_point_domain: ZeroPointDomain | str | None = ZeroPointDomain.INT,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`choose_qparams_affine` from already-reduced per-block ``min_val``/``max_val``
    (what static observers record). ``block_size`` is accepted for signature compatibility
    and not used: the range is already one entry per block."""
    del block_size
    mapping = _as_enum(mapping_type, MappingType, "mapping_type")
    domain = None if zero_point_domain is None else _as_enum(
        zero_point_domain, ZeroPointDomain, "zero_point_domain"
    )
    if min_val.dtype != max_val.dtype:
        raise TypeError(f"min_val ({min_val.dtype}) and max_val ({max_val.dtype}) differ in dtype")
    qmin, qmax = affine_qrange(target_dtype, quant_min, quant_max)
    if target_dtype in FLOAT8_DTYPES and mapping is not MappingType.SYMMETRIC:
        raise ValueError(f"float8 targets need MappingType.SYMMETRIC, got {mapping}")
    scale_dtype = min_val.dtype if scale_dtype is None else scale_dtype
    zero_point_dtype = min_val.dtype if zero_point_dtype is None else zero_point_dtype
    eps = torch.finfo(min_val.dtype).eps if eps is None else eps

    # preserve_zero widens the range to contain 0, so 0.0 lands exactly on an integer
    if preserve_zero:
        min_val = torch.min(min_val, torch.zeros_like(min_val))
        max_val = torch.max(max_val, torch.zeros_like(max_val))
    if mapping is MappingType.ASYMMETRIC:
        scale, zero_point = _asymmetric(min_val, max_val, qmin, qmax, eps, preserve_zero, domain)
    else:
        scale, zero_point = _symmetric(min_val, max_val, mapping, qmin, qmax, eps,
                                       preserve_zero, domain)
    if zero_point is not None:
        zero_point = zero_point.to(zero_point_dtype)
    return scale.to(scale_dtype), zero_point


def _symmetric(
    min_neg: torch.Tensor,
    max_pos: torch.Tensor,
    mapping: MappingType,
    qmin: float,
    qmax: float,
    eps: float,
    preserve_zero: bool,
    domain: ZeroPointDomain | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    if not preserve_zero:
        raise ValueError("symmetric mapping always preserves zero; pass preserve_zero=True")
    if domain not in (None, ZeroPointDomain.INT):
        raise ValueError(
            f"symmetric mapping needs an integer zero point, got zero_point_domain={domain}; "
            "use ZeroPointDomain.INT or MappingType.ASYMMETRIC"
        )
    if mapping is MappingType.SYMMETRIC:
        # scale = max(-min_neg, max_pos) / ((qmax - qmin) / 2)
        amax = torch.max(-min_neg, max_pos)
        scale = amax / (float(qmax - qmin) / 2)
    else:
        # scale = max(min_neg / qmin, max_pos / qmax): each side fits, the larger one wins
        smin = min_neg / float(qmin)
        smax = max_pos / float(qmax)
        scale = torch.where(smin > smax, smin, smax)
    scale = torch.clamp(scale, min=eps)
    # zero_point = trunc((qmax + qmin + 1) / 2): 0 for int8 [-128, 127] and int4 [-8, 7],
    # 128 for uint8 [0, 255], 8 for uint4; truncation (not floor) for odd negative sums.
    zero_point = torch.full_like(scale, int((qmax + qmin + 1) / 2))
    return scale, zero_point


def _asymmetric(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    qmin: float,
    qmax: float,
    eps: float,
    preserve_zero: bool,
    domain: ZeroPointDomain | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    # scale = (max - min) / (qmax - qmin), at least eps
    scale = torch.clamp((max_val - min_val) / float(qmax - qmin), min=eps)
    if domain is ZeroPointDomain.NONE:
        return scale, None
    if preserve_zero:
        # zero_point = clamp(qmin - round(min / scale), qmin, qmax), kept in float
        zero_point = torch.clamp(qmin - torch.round(min_val / scale), qmin, qmax)
        return scale, zero_point
    if domain is not ZeroPointDomain.FLOAT:
        raise ValueError(
            "preserve_zero=False needs zero_point_domain=ZeroPointDomain.FLOAT (or NONE): an "
            "integer zero point cannot represent a range that need not contain 0"
        )
    # float zero point: the value that maps to the middle of the integer range
    mid = (qmax + qmin + 1) / 2
    return scale, min_val + scale * mid


def choose_qparams_per_token(
    input: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 parameters per token (per row of the last dim); equals
    ``torch.ops.quantized_decomposed.choose_qparams_per_token`` bit for bit.

    ``scale = max(amax(|x|), 1e-5) / 127`` with shape ``(..., 1)`` (float32 for float16
    inputs), and zero zero points of the scale's dtype.
    """
    if dtype != torch.int8:
        raise UnsupportedDTypeError(
            f"choose_qparams_per_token supports dtype torch.int8 only, got {dtype}"
        )
    amax = input.abs().amax(dim=-1, keepdim=True)
    if amax.dtype == torch.float16:
        amax = amax.float()  # float16 overflows where bfloat16 does not
    scale = amax.clamp(min=1e-5).div(2 ** 7 - 1)
    return scale, torch.zeros_like(scale)


def choose_qparams_per_token_asymmetric(
    input: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int8 parameters per token, XNNPACK's rule; equals
    ``torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric`` bit for bit
    (float64 scales, int64 zero points, both of shape ``(..., 1)``).

    With the token's range widened to contain 0, ``[lo, hi]``::

        scale      = max((hi - lo) / 255, float32 eps)
        zero_point = round(clamp(-128 - lo/scale  if (lo + hi)/scale < 1  else 127 - hi/scale))

    i.e. the zero point is derived from whichever end has the smaller rounding error.
    """
    if dtype != torch.int8:
        # torch's op silently uses int8's range for any dtype; refuse instead of guessing
        raise UnsupportedDTypeError(
            f"choose_qparams_per_token_asymmetric supports dtype torch.int8 only, got {dtype}"
        )
    qmin, qmax = -128, 127
    lo = torch.amin(input, dim=-1, keepdim=True)
    hi = torch.amax(input, dim=-1, keepdim=True)
    lo = torch.min(lo, torch.zeros_like(lo))
    hi = torch.max(hi, torch.zeros_like(hi))
    scale = ((hi - lo) / float(qmax - qmin)).clamp(min=torch.finfo(torch.float32).eps)
    lo_q = lo / scale
    hi_q = hi / scale
    # (qmin + lo_q) + (qmax + hi_q) > 0  <=>  the low end fits with less error
    from_min = qmin - lo_q
    from_max = qmax - hi_q
    zero_point = torch.where((qmin + lo_q) + (qmax + hi_q) > 0, from_min, from_max)
    zero_point = torch.clamp(zero_point, qmin, qmax).round()
    return scale.to(torch.float64), zero_point.to(torch.int64)


def group_qrange(n_bit: int, symmetric: bool) -> tuple[int, int]:
    """The integer range of :func:`choose_qparams_per_group`: signed
    ``[-2**(n-1), 2**(n-1) - 1]`` when symmetric (``[-1, 0]`` for 1 bit), unsigned
    ``[0, 2**n - 1]`` otherwise."""
    if not 1 <= n_bit <= 8:
        raise ValueError(f"n_bit must be in [1, 8], got {n_bit}")
    return _signed(n_bit) if symmetric else (0, 2**n_bit - 1)


def choose_qparams_per_group(
    w: torch.Tensor,
    group_size: int,
    n_bit: int = 4,
    symmetric: bool = True,
    *,
    eps: float | None = None,
    scale_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-wise weight-only parameters for a 2-d weight: one scale and zero point per
    ``group_size`` consecutive elements of each row, shaped ``(rows, cols // group_size)``,
    to be used with ``quantized_decomposed.quantize_per_channel_group`` over
    :func:`group_qrange` ``(n_bit, symmetric)``.

    Symmetric (torchao's ``get_group_qparams_symmetric``): zero points are 0 in
    ``scale_dtype``; ``eps`` defaults to the weight dtype's smallest normal. Asymmetric
    (torchao's ``get_groupwise_affine_qparams`` with an integer zero point): int32 zero
    points in ``[0, 2**n_bit - 1]``; ``eps`` defaults to 1e-6. A ``group_size`` larger than a
    row means one group per row.

    >>> s, zp = choose_qparams_per_group(torch.randn(4, 64), group_size=32)
    >>> s.shape, zp.shape
    (torch.Size([4, 2]), torch.Size([4, 2]))
    """
    if w.dim() != 2:
        raise ValueError(f"choose_qparams_per_group needs a 2-d weight, got shape {tuple(w.shape)}")
    group_size = min(group_size, w.shape[-1])
    if group_size <= 1 or w.shape[-1] % group_size:
        raise ValueError(
            f"group_size {group_size} must be > 1 and divide the row length {w.shape[-1]}"
        )
    qmin, qmax = group_qrange(n_bit, symmetric)
    if symmetric:
        eps = torch.finfo(w.dtype).smallest_normal if eps is None else eps
        mapping, target, zp_dtype = MappingType.SYMMETRIC, torch.int8, scale_dtype
    else:
        eps = 1e-6 if eps is None else eps
        mapping, target, zp_dtype = MappingType.ASYMMETRIC, torch.int32, torch.int32
    scale, zero_point = choose_qparams_affine(
        w, mapping, (1, group_size), target, qmin, qmax, eps, scale_dtype, zp_dtype
    )
    assert zero_point is not None
    return scale.reshape(w.shape[0], -1), zero_point.reshape(w.shape[0], -1)
