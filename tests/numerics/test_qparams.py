"""choose_qparams against hand-derived values and upstream's range arithmetic."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxquant.numerics import InvalidRangeError, choose_qparams
from fxquant.numerics.qparams import choose_qparams_per_tensor

T = torch.tensor


def test_affine_hand_derived():
    # range [-1, 3] over [0, 255]: scale = 4/255, zero_point = 0 - round(-1 / (4/255)) = 64
    scale, zp = choose_qparams(T(-1.0), T(3.0), quant_min=0, quant_max=255)
    assert torch.equal(scale, T([4.0 / 255]))
    assert zp.tolist() == [64]


def test_affine_range_is_widened_to_contain_zero():
    # [2, 6] -> [0, 6]: scale 6/255, zero point 0
    scale, zp = choose_qparams(T(2.0), T(6.0), quant_min=0, quant_max=255)
    assert torch.allclose(scale, T([6.0 / 255])) and zp.tolist() == [0]
    scale, zp = choose_qparams(T(-6.0), T(-2.0), quant_min=0, quant_max=255)
    assert zp.tolist() == [255]


@pytest.mark.parametrize(
    "dtype,qmin,qmax,custom,expected_zp",
    [
        (torch.qint8, -128, 127, False, 0),
        (torch.quint8, 0, 255, False, 128),
        (torch.quint8, 0, 127, True, 63),  # rounded-down midpoint of a custom range
        (torch.uint16, 0, 2**16 - 1, False, 2**15),
        (torch.int16, -(2**15), 2**15 - 1, False, 0),
    ],
    ids=["qint8", "quint8", "quint8-custom", "uint16", "int16"],
)
def test_symmetric_zero_point_truth_table(dtype, qmin, qmax, custom, expected_zp):
    scale, zp = choose_qparams(
        T(-2.0), T(1.0), quant_min=qmin, quant_max=qmax, dtype=dtype,
        qscheme=torch.per_tensor_symmetric, has_customized_qrange=custom,
    )
    # symmetric: amax = 2 over half the span
    assert torch.allclose(scale, T([2.0 / ((qmax - qmin) / 2)]))
    assert zp.tolist() == [expected_zp]


def test_constant_and_zero_ranges_get_eps_scale():
    eps = torch.finfo(torch.float32).eps
    scale, zp = choose_qparams(T(0.0), T(0.0), quant_min=0, quant_max=255)
    assert scale.tolist() == [eps] and zp.tolist() == [0]
    scale, _ = choose_qparams(T(5.0), T(5.0), quant_min=0, quant_max=255)
    assert torch.isfinite(scale).all() and scale.item() == pytest.approx(5.0 / 255)


def test_per_channel_shapes_and_values():
    mins, maxs = T([-1.0, 0.0, -4.0]), T([1.0, 2.0, 0.0])
    scale, zp = choose_qparams(
        mins, maxs, quant_min=-128, quant_max=127, dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
    )
    assert scale.shape == (3,) and zp.shape == (3,)
    assert torch.allclose(scale, T([1.0, 2.0, 4.0]) / 127.5)


def test_float_qparams_zero_point_is_float_offset():
    mins, maxs = T([-1.0, 2.0]), T([1.0, 2.0])
    scale, zp = choose_qparams(
        mins, maxs, quant_min=0, quant_max=255, qscheme=torch.per_channel_affine_float_qparams
    )
    # second row is constant: scale falls back to 1.0
    assert torch.allclose(scale, T([2.0 / 255, 1.0]))
    assert zp.dtype == torch.float32 and torch.allclose(zp, T([1.0 / (2.0 / 255), -2.0]))


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.float16])
def test_float_dtype_maps_amax_to_dtype_max(dtype):
    scale, zp = choose_qparams(T(-3.0), T(2.0), quant_min=0, quant_max=255, dtype=dtype)
    assert torch.allclose(scale, T([3.0 / torch.finfo(dtype).max]))
    assert zp.tolist() == [0]


@pytest.mark.parametrize(
    "lo,hi,match",
    [
        (float("nan"), 1.0, "non-finite"),
        (0.0, float("inf"), "non-finite"),
        (2.0, 1.0, "greater than"),
    ],
    ids=["nan", "inf", "min>max"],
)
def test_invalid_ranges_raise(lo, hi, match):
    with pytest.raises(InvalidRangeError, match=match):
        choose_qparams(T(lo), T(hi), quant_min=0, quant_max=255)


def test_unknown_qscheme_rejected():
    with pytest.raises(ValueError, match="unsupported qscheme"):
        choose_qparams(T(0.0), T(1.0), quant_min=0, quant_max=255, qscheme="bogus")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# the scalar per-tensor path: bit-exact with the tensor path

SCALAR_CONFIGS = [
    pytest.param({"quant_min": 0, "quant_max": 255}, id="quint8-affine"),
    pytest.param({"quant_min": 0, "quant_max": 127}, id="quint8-7-bit"),
    pytest.param({"quant_min": -128, "quant_max": 127, "dtype": torch.qint8}, id="qint8-affine"),
    pytest.param({"quant_min": 0, "quant_max": 15}, id="4-bit"),
    pytest.param(
        {"quant_min": -(2**31), "quant_max": 2**31 - 1, "dtype": torch.qint32}, id="qint32"
    ),
    pytest.param(
        {"quant_min": -128, "quant_max": 127, "dtype": torch.qint8,
         "qscheme": torch.per_tensor_symmetric},
        id="qint8-symmetric",
    ),
    pytest.param(
        {"quant_min": 0, "quant_max": 255, "qscheme": torch.per_tensor_symmetric},
        id="quint8-symmetric",
    ),
    pytest.param(
        {"quant_min": 0, "quant_max": 127, "qscheme": torch.per_tensor_symmetric,
         "has_customized_qrange": True},
        id="quint8-symmetric-custom",
    ),
    pytest.param({"quant_min": 0, "quant_max": 255, "eps": 1e-3}, id="large-eps"),
]

_F32 = {"width": 32, "allow_nan": False, "allow_infinity": False, "allow_subnormal": False}


def _assert_same_qparams(lo: float, hi: float, config: dict) -> None:
    expected = choose_qparams(T(lo), T(hi), **config)
    got = choose_qparams_per_tensor(lo, hi, **config)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.shape == e.shape
        assert torch.equal(g, e), (lo, hi, got, expected)


@pytest.mark.parametrize("config", SCALAR_CONFIGS)
@settings(max_examples=200, deadline=None)
@given(a=st.floats(**_F32), b=st.floats(**_F32))
def test_scalar_path_is_bit_exact_with_the_tensor_path(config, a, b):
    _assert_same_qparams(min(a, b), max(a, b), config)


@pytest.mark.parametrize("config", SCALAR_CONFIGS)
@settings(max_examples=120, deadline=None)
@given(
    lo=st.floats(-1024.0, 0.0, **_F32),
    hi=st.floats(0.0, 1024.0, **_F32),
    step=st.floats(2.0**-20, 1.0, **_F32),
    z=st.integers(0, 255),
)
def test_scalar_path_is_bit_exact_on_grid_ranges(config, lo, hi, step, z):
    # ranges built in float64 from a step and an offset, as HistogramObserver builds them:
    # min / scale lands next to an integer, where its last bit decides the zero point
    _assert_same_qparams(-z * step, (255 - z) * step, config)
    _assert_same_qparams(lo, hi, config)


@pytest.mark.parametrize(
    "lo,hi",
    [(-3e38, 3e38), (0.0, 0.0), (5.0, 5.0), (-1e-45, 1e-45), (-0.0, 0.0)],
    ids=["overflowing-span", "zero", "constant", "subnormal", "signed-zero"],
)
@pytest.mark.parametrize("config", SCALAR_CONFIGS)
def test_scalar_path_edge_ranges(lo, hi, config):
    _assert_same_qparams(lo, hi, config)


@pytest.mark.parametrize(
    "lo,hi,match",
    [(float("nan"), 1.0, "non-finite"), (0.0, float("inf"), "non-finite"), (2.0, 1.0, "greater")],
    ids=["nan", "inf", "min>max"],
)
def test_scalar_path_raises_like_the_tensor_path(lo, hi, match):
    with pytest.raises(InvalidRangeError, match=match):
        choose_qparams_per_tensor(lo, hi, quant_min=0, quant_max=255)


def test_scalar_path_delegates_float_qparams_and_float_dtypes():
    _assert_same_qparams(-3.0, 2.0, {"quant_min": 0, "quant_max": 255, "dtype": torch.float16})
