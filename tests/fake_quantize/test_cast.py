"""Fake quantization to float targets (no torch kernel, no upstream equivalent): checked
against an independent elementwise reference and for its straight-through gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxquant.fake_quantize import FakeQuantize
from fxquant.fake_quantize.cast import fake_quantize_float_cast
from fxquant.observers.minmax import MinMaxObserver, PerChannelMinMaxObserver

FLOAT_DTYPES = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float16, torch.bfloat16]


def _reference(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    fmax = torch.finfo(dtype).max
    return (x / scale).clamp(-fmax, fmax).to(dtype).to(torch.float32) * scale


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_per_tensor_matches_reference(dtype):
    x = torch.randn(64) * 30
    scale = torch.tensor([0.05])
    assert torch.equal(fake_quantize_float_cast(x, scale, dtype), _reference(x, scale, dtype))


@pytest.mark.parametrize("ch_axis", [0, 1, -1])
def test_per_channel_matches_reference(ch_axis):
    x = torch.randn(3, 4, 5) * 100
    dtype = torch.float8_e4m3fn
    scale = torch.rand(x.shape[ch_axis]) + 0.01
    shape = [1] * x.dim()
    shape[ch_axis] = -1
    expected = _reference(x, scale.reshape(shape), dtype)
    assert torch.equal(fake_quantize_float_cast(x, scale, dtype, ch_axis), expected)


def test_gradient_is_straight_through_inside_and_zero_when_saturated():
    dtype = torch.float8_e4m3fn
    scale = torch.tensor([0.1])
    fmax = torch.finfo(dtype).max
    x = torch.tensor([0.0123, -3.0, 44.0, 44.9, 45.0, -60.0], requires_grad=True)
    fake_quantize_float_cast(x, scale, dtype).backward(torch.arange(1.0, 7.0))
    inside = (x.detach() / scale).abs() <= fmax
    assert inside.tolist() == [True, True, True, False, False, False]
    # exactly the upstream gradient, not rounded to the float8 grid
    assert torch.equal(x.grad, torch.where(inside, torch.arange(1.0, 7.0), 0.0))


def test_no_graph_without_requires_grad():
    y = fake_quantize_float_cast(torch.randn(4), torch.tensor([0.1]), torch.float8_e5m2)
    assert y.grad_fn is None


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=32))
def test_property_fake_quantize_module_float8_roundtrip(values):
    fq = FakeQuantize(MinMaxObserver, dtype=torch.float8_e4m3fn)
    x = torch.tensor(values)
    y = fq(x)
    assert torch.equal(y, _reference(x, fq.scale, torch.float8_e4m3fn))
    # the scale maps the largest magnitude onto float8's max, so nothing saturates, and in
    # float8's normal range (|x / scale| >= 2**-6) the relative error is at most half an ulp
    big = x.abs() >= 2**-6 * fq.scale
    assert bool(((y - x).abs() <= x.abs() * 2**-4 + 1e-30)[big].all())


def test_per_channel_module_float8():
    fq = FakeQuantize(PerChannelMinMaxObserver, dtype=torch.float8_e4m3fn,
                      qscheme=torch.per_channel_symmetric, ch_axis=1)
    x = torch.randn(4, 3) * torch.tensor([1.0, 100.0, 0.01])
    y = fq(x)
    assert fq.scale.shape == (3,)
    assert torch.equal(y, _reference(x, fq.scale.reshape(1, 3), torch.float8_e4m3fn))
