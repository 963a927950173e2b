"""Quantized dtype ranges against upstream's calculate_qmin_qmax."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.ao.quantization.utils import calculate_qmin_qmax as upstream_qmin_qmax

from fxquant.numerics import (
    QuantizationRangeError,
    UnsupportedDTypeError,
    calculate_qmin_qmax,
    default_qrange,
    validate_qmin_qmax,
)
from fxquant.numerics.dtypes import is_signed, storage_dtype

DTYPES = [torch.quint8, torch.qint8, torch.uint8, torch.int8, torch.qint32, torch.int32,
          torch.int16, torch.uint16]


@pytest.mark.parametrize(
    "dtype,reduce_range", list(itertools.product(DTYPES, [False, True])),
    ids=lambda v: str(v),
)
def test_default_ranges_match_upstream(dtype, reduce_range):
    ours = calculate_qmin_qmax(None, None, False, dtype, reduce_range)
    assert ours == upstream_qmin_qmax(None, None, False, dtype, reduce_range)


@pytest.mark.parametrize(
    "qmin,qmax,dtype,reduce_range",
    [(0, 127, torch.quint8, False), (-127, 127, torch.qint8, False), (0, 15, torch.quint8, False),
     (-8, 7, torch.qint8, True), (0, 255, torch.quint8, True), (-(2**31), 2**31 - 1, torch.qint32, False)],
    ids=lambda v: str(v),
)
def test_custom_ranges_match_upstream(qmin, qmax, dtype, reduce_range):
    assert calculate_qmin_qmax(qmin, qmax, True, dtype, reduce_range) == upstream_qmin_qmax(
        qmin, qmax, True, dtype, reduce_range
    )


def test_four_bit_and_storage():
    assert default_qrange(torch.quint4x2).qmax == 15
    assert (default_qrange(torch.int4).qmin, default_qrange(torch.int4).qmax) == (-8, 7)
    assert storage_dtype(torch.qint8) == torch.int8 and storage_dtype(torch.quint4x2) == torch.uint8
    assert is_signed(torch.qint8) and not is_signed(torch.quint8)


def test_bad_ranges_and_dtypes():
    with pytest.raises(QuantizationRangeError, match="must include 0"):
        validate_qmin_qmax(1, 10)
    with pytest.raises(QuantizationRangeError, match="strictly less"):
        validate_qmin_qmax(5, 5)
    with pytest.raises(QuantizationRangeError, match="holds at most 256"):
        calculate_qmin_qmax(-200, 200, True, torch.qint8, False)
    with pytest.raises(UnsupportedDTypeError, match="cannot quantize to torch.float32"):
        default_qrange(torch.float32)
