"""The validation helpers name the problem and the remedy."""

from __future__ import annotations

import pytest
import torch

from fxquant.fake_quantize._checks import (
    check_axis_in_range,
    check_channel_axis,
    check_observer_honours_qrange,
    check_qrange_fits_dtype,
    check_qrange_given_together,
)
from fxquant.numerics.dtypes import QuantizationRangeError
from fxquant.observers.minmax import MinMaxObserver


@pytest.mark.parametrize(
    ("qmin", "qmax", "dtype", "ok"),
    [
        (0, 255, torch.quint8, True),
        (-128, 127, torch.qint8, True),
        (0, 15, torch.quint4x2, True),
        (0, 16, torch.quint4x2, False),
        (-1, 255, torch.quint8, False),
        (-129, 127, torch.int8, False),
        (0, 255, torch.float8_e4m3fn, True),  # float targets have no integer grid to check
    ],
    ids=["quint8", "qint8", "quint4x2", "quint4x2-over", "quint8-under", "int8-under", "fp8"],
)
def test_qrange_fits_dtype(qmin, qmax, dtype, ok):
    if ok:
        check_qrange_fits_dtype("X", qmin, qmax, dtype)
    else:
        with pytest.raises(QuantizationRangeError, match=f"X: quant_min={qmin}, quant_max={qmax}"):
            check_qrange_fits_dtype("X", qmin, qmax, dtype)


@pytest.mark.parametrize(("qmin", "qmax"), [(0, None), (None, 5)])
def test_lone_bound(qmin, qmax):
    with pytest.raises(QuantizationRangeError, match="both quant_min and quant_max or neither"):
        check_qrange_given_together("X", qmin, qmax)
    check_qrange_given_together("X", None, None)


def test_reduce_range_halving_is_accepted_other_ranges_are_not():
    with pytest.warns(UserWarning):
        halved = MinMaxObserver(quant_min=0, quant_max=255, reduce_range=True)
    check_observer_honours_qrange("X", halved, 0, 255)
    with pytest.raises(QuantizationRangeError, match=r"X was given .* quantizes to \[0, 127\]"):
        check_observer_honours_qrange("X", MinMaxObserver(quant_min=0, quant_max=127), 0, 255)


def test_axis_and_channel_count():
    x = torch.zeros(2, 3)
    check_channel_axis("X", x, -1, 3)
    with pytest.raises(IndexError, match=r"X: ch_axis=2 .* shape \(2, 3\)"):
        check_axis_in_range("X", x, 2)
    with pytest.raises(ValueError, match="X holds 2 per-channel scales .* 3 channels along axis 1"):
        check_channel_axis("X", x, 1, 2)
