"""Quantized dtypes: their integer ranges, and how a user's quant_min/quant_max and
``reduce_range`` narrow them.

Everything here is pure data and arithmetic on Python ints; it depends on nothing else in
fxquant, so every other module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "FLOAT_QDTYPES",
    "INT_DTYPE_RANGES",
    "SUPPORTED_QDTYPES",
    "IntRange",
    "QuantizationRangeError",
    "UnsupportedDTypeError",
    "calculate_qmin_qmax",
    "check_ordered_range",
    "default_qrange",
    "is_float_qdtype",
    "is_signed",
    "storage_dtype",
    "validate_qmin_qmax",
]


class QuantizationRangeError(ValueError):
    """A quant_min/quant_max pair that no quantized dtype can represent."""


class UnsupportedDTypeError(TypeError):
    """A dtype that fxquant cannot quantize to."""


@dataclass(frozen=True, kw_only=True)
class IntRange:
    """The representable integers of a quantized dtype: ``qmin <= q <= qmax``."""

    qmin: int
    qmax: int

    def __post_init__(self) -> None:
        if self.qmin >= self.qmax:
            raise QuantizationRangeError(f"qmin ({self.qmin}) must be < qmax ({self.qmax})")

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin + 1


# torch's type stubs do not list the sub-byte dtypes, which exist at run time (torch >= 2.3).
UINT4: torch.dtype = torch.uint4  # type: ignore[attr-defined]  # missing from torch's stubs
INT4: torch.dtype = torch.int4  # type: ignore[attr-defined]  # missing from torch's stubs


def _r(qmin: int, qmax: int) -> IntRange:
    return IntRange(qmin=qmin, qmax=qmax)


# Full (not reduced) integer range of each integer quantized dtype. The torch.q* dtypes are
# the "quantized tensor" dtypes of torch's kernels; plain int dtypes are what the q/dq graph
# ops of torch.ops.quantized_decomposed produce. 4-bit dtypes are stored packed two per byte.
INT_DTYPE_RANGES: dict[torch.dtype, IntRange] = {
    torch.quint8: _r(0, 255),
    torch.uint8: _r(0, 255),
    torch.qint8: _r(-128, 127),
    torch.int8: _r(-128, 127),
    torch.int16: _r(-(2**15), 2**15 - 1),
    torch.uint16: _r(0, 2**16 - 1),
    torch.qint32: _r(-(2**31), 2**31 - 1),
    torch.int32: _r(-(2**31), 2**31 - 1),
    torch.quint4x2: _r(0, 15),
    torch.quint2x4: _r(0, 3),
    UINT4: _r(0, 15),
    INT4: _r(-8, 7),
}

# Floating-point "quantized" dtypes: quantization is a scaled, saturating cast.
FLOAT_QDTYPES: frozenset[torch.dtype] = frozenset(
    {torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2}
)

SUPPORTED_QDTYPES: frozenset[torch.dtype] = frozenset(INT_DTYPE_RANGES) | FLOAT_QDTYPES

# The plain integer dtype that holds the values of a torch.q* dtype (for the q/dq graph ops).
_STORAGE = {
    torch.quint8: torch.uint8,
    torch.qint8: torch.int8,
    torch.qint32: torch.int32,
    torch.quint4x2: torch.uint8,
    torch.quint2x4: torch.uint8,
    UINT4: torch.uint8,
    INT4: torch.int8,
}


def _check_supported(dtype: torch.dtype) -> None:
    if dtype not in SUPPORTED_QDTYPES:
        names = ", ".join(sorted(str(d) for d in SUPPORTED_QDTYPES))
        raise UnsupportedDTypeError(
            f"cannot quantize to {dtype}; supported quantized dtypes are: {names}"
        )


def is_float_qdtype(dtype: torch.dtype) -> bool:
    """True for float16/bfloat16/float8 targets (cast quantization, no integer grid)."""
    return dtype in FLOAT_QDTYPES


def is_signed(dtype: torch.dtype) -> bool:
    _check_supported(dtype)
    if dtype in FLOAT_QDTYPES:
        return True
    return INT_DTYPE_RANGES[dtype].qmin < 0


def storage_dtype(dtype: torch.dtype) -> torch.dtype:
    """The plain torch dtype that holds quantized values of ``dtype`` unpacked."""
    _check_supported(dtype)
    return _STORAGE.get(dtype, dtype)


def default_qrange(dtype: torch.dtype, reduce_range: bool = False) -> IntRange:
    """The integer range of ``dtype``; ``reduce_range`` drops one bit (8-bit dtypes only),
    as x86/fbgemm kernels without VNNI need to avoid overflow in their 16-bit accumulation.
    """
    _check_supported(dtype)
    if dtype in FLOAT_QDTYPES:
        raise UnsupportedDTypeError(f"{dtype} is a floating-point dtype and has no integer range")
    full = INT_DTYPE_RANGES[dtype]
    if reduce_range and full.levels == 256:
        # int8: [-128, 127] -> [-64, 63]; uint8: [0, 255] -> [0, 127]
        return _r(full.qmin // 2, full.qmax // 2)
    return full


def check_ordered_range(quant_min: int, quant_max: int, owner: str | None = None) -> None:
    """Raise :class:`QuantizationRangeError` (prefixed with ``owner``) unless
    ``quant_min < quant_max``."""
    if quant_min >= quant_max:
        prefix = f"{owner}: " if owner else ""
        raise QuantizationRangeError(
            f"{prefix}quant_min ({quant_min}) must be strictly less than quant_max ({quant_max})"
        )


def validate_qmin_qmax(quant_min: int, quant_max: int) -> None:
    """A user range must contain 0 (so that 0.0 is exactly representable) and be non-empty."""
    check_ordered_range(quant_min, quant_max)
    if not quant_min <= 0 <= quant_max:
        raise QuantizationRangeError(
            f"the quantization range [{quant_min}, {quant_max}] must include 0 so that zero "
            "is exactly representable; shift it to contain 0"
        )


def calculate_qmin_qmax(
    quant_min: int | None,
    quant_max: int | None,
    has_customized_qrange: bool,
    dtype: torch.dtype,
    reduce_range: bool,
) -> tuple[int, int]:
    """The (quant_min, quant_max) an observer quantizes to.

    With a customized range the user's bounds are taken as given; they must fit in the dtype
    (an 8-bit dtype holds at most 256 levels, a 32-bit one 2**32), and ``reduce_range`` halves
    both bounds (floor division, as upstream). Without one, the dtype's default range applies.
    """
    _check_supported(dtype)
    if dtype in FLOAT_QDTYPES:
        # Float targets keep their own range; observers still report an integer range for
        # compatibility and the cast quantizer ignores it.
        return (0, 255) if quant_min is None or quant_max is None else (quant_min, quant_max)
    if has_customized_qrange:
        assert quant_min is not None and quant_max is not None
        levels = quant_max - quant_min + 1
        max_levels = INT_DTYPE_RANGES[dtype].levels
        if not 0 < levels <= max_levels:
            raise QuantizationRangeError(
                f"quantization range [{quant_min}, {quant_max}] has {levels} levels but {dtype} "
                f"holds at most {max_levels}; narrow the range or choose a wider dtype"
            )
        if reduce_range:
            return quant_min // 2, quant_max // 2
        return quant_min, quant_max
    rng = default_qrange(dtype, reduce_range)
    return rng.qmin, rng.qmax
