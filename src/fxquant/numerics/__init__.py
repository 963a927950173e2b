"""Quantization numerics: dtypes and ranges, scale/zero-point selection, quantize /
dequantize / fake-quantize at every granularity, sub-byte packing, and the registered graph
ops. Nothing here observes data; calibration lives in :mod:`fxquant.observers`."""

from fxquant.numerics.affine import (
    block_size_for,
    dequantize_affine,
    dequantize_per_channel,
    dequantize_per_tensor,
    dequantize_per_token,
    fake_quantize_affine,
    fake_quantize_per_channel,
    fake_quantize_per_tensor,
    quantize_affine,
    quantize_per_channel,
    quantize_per_tensor,
    quantize_per_token,
)
from fxquant.numerics.dtypes import (
    INT_DTYPE_RANGES,
    IntRange,
    QuantizationRangeError,
    UnsupportedDTypeError,
    calculate_qmin_qmax,
    default_qrange,
    is_float_qdtype,
    validate_qmin_qmax,
)
from fxquant.numerics.packing import pack_int2, pack_int4, unpack_int2, unpack_int4
from fxquant.numerics.qparams import InvalidRangeError, choose_qparams, choose_qparams_per_tensor

__all__ = [
    "INT_DTYPE_RANGES",
    "IntRange",
    "InvalidRangeError",
    "QuantizationRangeError",
    "UnsupportedDTypeError",
    "block_size_for",
    "calculate_qmin_qmax",
    "choose_qparams",
    "choose_qparams_per_tensor",
    "default_qrange",
    "dequantize_affine",
    "dequantize_per_channel",
    "dequantize_per_tensor",
    "dequantize_per_token",
    "fake_quantize_affine",
    "fake_quantize_per_channel",
    "fake_quantize_per_tensor",
    "is_float_qdtype",
    "pack_int2",
    "pack_int4",
    "quantize_affine",
    "quantize_per_channel",
    "quantize_per_tensor",
    "quantize_per_token",
    "unpack_int2",
    "unpack_int4",
    "validate_qmin_qmax",
]
