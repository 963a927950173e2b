"""The per-token int8 matmul: token quantization equals the reference ops, and the integer
product equals the float product of the dequantized operands up to float rounding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxquant.nn.quantized.dynamic.per_token_matmul import (
    int8_linear_per_token,
    quantize_per_token_int8,
)
from fxquant.numerics import quantize_per_token
from fxquant.numerics.blockwise import choose_qparams_per_token


def _activations(m: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    x[:, :: max(k // 4, 1)] *= 20.0  # outlier channels, as in transformer activations
    if m > 1:
        x[1] = torch.rand(k, generator=g)  # a one-signed token
    return x


def test_symmetric_token_qparams_equal_quantized_decomposed():
    x = _activations(37, 50)
    xq = quantize_per_token_int8(x, symmetric=True)
    scale, zero_point = choose_qparams_per_token(x, torch.int8)
    assert torch.equal(xq.scale, scale)
    assert xq.zero_point is None
    assert torch.equal(xq.int8, quantize_per_token(x, scale, zero_point, -128, 127, torch.int8))
    ref = torch.ops.quantized_decomposed.quantize_per_token(
        x, scale, zero_point, -128, 127, torch.int8
    )
    assert torch.equal(xq.int8, ref)


def test_asymmetric_tokens_use_the_full_range_and_contain_zero():
    x = _activations(16, 40)
    xq = quantize_per_token_int8(x, symmetric=False)
    assert xq.zero_point is not None
    ints = xq.int8.int()
    assert bool(((ints.amin(1) == -128) | (ints.amax(1) == 127)).all())
    # zero is exactly representable: it quantizes to the zero point
    zero_q = torch.round(torch.zeros(16, 1) / xq.scale) + xq.zero_point
    assert torch.equal(zero_q.int(), xq.zero_point)
    err = (xq.dequantize() - x).abs()
    assert bool((err <= xq.scale / 2 + 1e-6).all())


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "asymmetric"])
@pytest.mark.parametrize(
    "m,k,n", [(1, 8, 8), (3, 5, 7), (16, 33, 17), (17, 384, 384), (64, 96, 40)],
    ids=lambda v: str(v),
)  # fmt: skip
def test_int_path_equals_float_product_of_dequantized(m, k, n, symmetric):
    x = _activations(m, k)
    g = torch.Generator().manual_seed(1)
    w_int8 = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    w_scale = torch.rand(n, generator=g) * 0.01 + 1e-3
    bias = torch.randn(n, generator=g)
    xq = quantize_per_token_int8(x, symmetric=symmetric)
    y = int8_linear_per_token(xq, w_int8, w_scale, bias)
    ref = (
        xq.dequantize().double() @ (w_int8.double() * w_scale.double()[:, None]).T
    ) + bias.double()
    # the integer accumulation is exact; only the final float32 rescale rounds
    torch.testing.assert_close(y.double(), ref, rtol=2e-6, atol=2e-6 * ref.abs().max().item())


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 20), k=st.integers(1, 24), n=st.integers(1, 12),
    symmetric=st.booleans(), scale=st.sampled_from([1e-6, 1e-2, 1.0, 1e3]),
)  # fmt: skip
def test_round_trip_error_is_at_most_half_a_step(m, k, n, symmetric, scale):
    x = torch.randn(m, k) * scale
    xq = quantize_per_token_int8(x, symmetric=symmetric)
    assert bool(((xq.dequantize() - x).abs() <= xq.scale * 0.5 * (1 + 1e-5) + 1e-12).all())


def test_constant_zero_tokens_do_not_produce_nan():
    x = torch.zeros(4, 16)
    for symmetric in (True, False):
        xq = quantize_per_token_int8(x, symmetric=symmetric)
        assert bool(torch.isfinite(xq.scale).all())
        assert bool((xq.dequantize() == 0).all())
