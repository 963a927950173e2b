"""Affine quantize/dequantize/fake-quantize against torch's own kernels (bit for bit)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxquant.numerics import (
    block_size_for,
    dequantize_affine,
    dequantize_per_channel,
    dequantize_per_tensor,
    fake_quantize_affine,
    fake_quantize_per_channel,
    fake_quantize_per_tensor,
    quantize_affine,
    quantize_per_channel,
    quantize_per_tensor,
)
from fxquant.numerics.ops import quantized_decomposed

QPARAMS = [(0.0123, 17), (0.1, 0), (1e-3, 128), (0.05, 255), (3.7e-5, 3)]
QDTYPES = [(torch.quint8, torch.uint8, 0), (torch.qint8, torch.int8, 128)]


def _data(n: int = 100_003) -> torch.Tensor:
    # a heavy-ish tail, exact ties and values far outside any range
    x = torch.randn(n) * 3
    ties = torch.arange(-300, 300, dtype=torch.float32) * 0.5
    return torch.cat([x, ties, torch.tensor([1e6, -1e6, 0.0, -0.0])])


@pytest.mark.parametrize("scale,zp", QPARAMS, ids=[f"s{s}-z{z}" for s, z in QPARAMS])
@pytest.mark.parametrize("qdtype,dtype,zp_shift", QDTYPES, ids=["quint8", "qint8"])
def test_quantize_per_tensor_matches_torch_kernel(scale, zp, qdtype, dtype, zp_shift):
    x = _data()
    zp = zp - zp_shift if dtype == torch.int8 else zp
    ref = torch.quantize_per_tensor(x, scale, zp, qdtype)
    q = quantize_per_tensor(x, scale, zp, dtype=dtype)
    assert q.dtype == dtype
    assert torch.equal(q, ref.int_repr())
    assert torch.equal(dequantize_per_tensor(q, scale, zp), ref.dequantize())


def test_quantize_per_tensor_qint32():
    x = _data() * 1000
    ref = torch.quantize_per_tensor(x, 0.5, 3, torch.qint32)
    assert torch.equal(quantize_per_tensor(x, 0.5, 3, dtype=torch.qint32), ref.int_repr())


@pytest.mark.parametrize("scale,zp", QPARAMS, ids=[f"s{s}-z{z}" for s, z in QPARAMS])
def test_quantize_affine_matches_decomposed_graph_op(scale, zp):
    x = _data()
    ref = quantized_decomposed.quantize_per_tensor(x, scale, zp, 0, 255, torch.uint8)
    assert torch.equal(quantize_affine(x, x.shape, torch.tensor(scale), torch.tensor(zp), torch.uint8), ref)
    deq_ref = quantized_decomposed.dequantize_per_tensor(ref, scale, zp, 0, 255, torch.uint8)
    assert torch.equal(dequantize_affine(ref, ref.shape, torch.tensor(scale), torch.tensor(zp)), deq_ref)


def test_fused_and_product_forms_differ_only_at_near_ties():
    # torch's two kernels disagree on a few values; each of our forms matches its kernel
    x = torch.randn(1_000_000) * 3
    fused = quantize_per_tensor(x, 0.0123, 17, dtype=torch.uint8).int()
    product = quantize_affine(x, x.shape, torch.tensor(0.0123), torch.tensor(17), torch.uint8).int()
    diff = (fused - product).abs()
    assert diff.max() <= 1
    assert 0 < int((diff > 0).sum()) < 50


@pytest.mark.parametrize("scale,zp", QPARAMS, ids=[f"s{s}-z{z}" for s, z in QPARAMS])
@pytest.mark.parametrize("qmin,qmax", [(0, 255), (0, 127), (-128, 127), (0, 15)])
def test_fake_quantize_per_tensor_matches_torch_kernel(scale, zp, qmin, qmax):
    x = _data()
    zp = min(max(zp, qmin), qmax)
    ref = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
    assert torch.equal(fake_quantize_per_tensor(x, scale, zp, qmin, qmax), ref)


@pytest.mark.parametrize("axis", [0, 1, -1], ids=["axis0", "axis1", "axis-1"])
@pytest.mark.parametrize("qdtype,dtype,zp_shift", QDTYPES, ids=["quint8", "qint8"])
def test_quantize_per_channel_matches_torch_kernel(axis, qdtype, dtype, zp_shift):
    w = torch.randn(16, 8, 3, 3) * 0.2
    n = w.shape[axis]
    scales = torch.rand(n, dtype=torch.float64) * 0.01 + 1e-4
    zps = torch.randint(0, 20, (n,)) + 100 - zp_shift
    ref = torch.quantize_per_channel(w, scales, zps, axis % w.dim(), qdtype)
    q = quantize_per_channel(w, scales, zps, axis, dtype=dtype)
    assert torch.equal(q, ref.int_repr())
    assert torch.equal(dequantize_per_channel(q, scales, zps, axis), ref.dequantize())


@pytest.mark.parametrize("axis", [0, 1], ids=["axis0", "axis1"])
def test_fake_quantize_per_channel_matches_torch_kernel(axis):
    w = torch.randn(32, 16, 5) * 0.3
    n = w.shape[axis]
    scales = torch.rand(n) * 0.01 + 1e-4
    zps = torch.randint(-10, 10, (n,), dtype=torch.int32)
    ref = torch.fake_quantize_per_channel_affine(w, scales, zps, axis, -128, 127)
    assert torch.equal(fake_quantize_per_channel(w, scales, zps, axis, -128, 127), ref)


def test_round_half_to_even_and_clamp():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 300.0, -300.0])
    q = quantize_affine(x, x.shape, torch.tensor(1.0), torch.tensor(10), torch.uint8)
    # 0.5->0, 1.5->2, 2.5->2, -0.5->-0, -1.5->-2, -2.5->-2 ; then +10 ; then clamp to [0, 255]
    assert q.tolist() == [10, 12, 12, 10, 8, 8, 255, 0]


def test_reduced_range_clamps_to_given_bounds():
    x = torch.linspace(-10, 10, 101)
    q = quantize_affine(x, x.shape, torch.tensor(0.01), torch.tensor(0), torch.int8, -64, 63)
    assert int(q.min()) == -64 and int(q.max()) == 63


@settings(max_examples=60, deadline=None)
@given(
    scale=st.floats(1e-4, 10.0),
    zero_point=st.integers(0, 255),
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=64),
)
def test_round_trip_error_within_half_step_inside_range(scale, zero_point, values):
    x = torch.tensor(values, dtype=torch.float32)
    s, z = torch.tensor(scale, dtype=torch.float32), torch.tensor(zero_point)
    x_hat = fake_quantize_affine(x, x.shape, s, z, torch.uint8)
    lo, hi = (0 - zero_point) * float(s), (255 - zero_point) * float(s)
    inside = (x >= lo) & (x <= hi)
    # half a step, plus float32 rounding of the products
    tol = float(s) / 2 * (1 + 1e-5) + 1e-6 * x.abs()
    assert torch.all((x_hat - x).abs()[inside] <= tol[inside])
    # outside the range values clamp to the nearest end
    assert torch.all(x_hat[x > hi] == torch.tensor(hi, dtype=torch.float32))
    assert torch.all(x_hat[x < lo] == torch.tensor(lo, dtype=torch.float32))


@pytest.mark.parametrize(
    "block,expect",
    [
        ({}, (4, 6, 8)),
        ({"axis": 1}, (4, 1, 8)),
        ({"axis": -1}, (4, 6, 1)),
        ({"group_size": 4}, (1, 1, 4)),
        ({"per_token": True}, (1, 1, 8)),
    ],
    ids=["tensor", "channel1", "channel-1", "group4", "token"],
)
def test_block_size_for(block, expect):
    assert block_size_for((4, 6, 8), **block) == expect


def test_per_group_fake_quant_equals_per_group_reference():
    w = torch.randn(8, 64)
    block = block_size_for(w.shape, group_size=16)
    g = w.reshape(8, 4, 16)
    amax = g.abs().amax(-1)
    scale = amax / 7.5
    zp = torch.full_like(scale, 8)
    out = fake_quantize_affine(w, block, scale, zp, torch.uint4)
    ref = ((torch.clamp(torch.round(g * (1.0 / scale[..., None])) + 8, 0, 15) - 8) * scale[..., None])
    assert torch.equal(out, ref.reshape(8, 64))


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.float16])
def test_float_targets_are_saturating_scaled_casts(dtype):
    x = torch.randn(1000) * 50
    scale = torch.tensor(0.5)
    q = quantize_affine(x, x.shape, scale, None, dtype)
    assert q.dtype == dtype
    fmax = torch.finfo(dtype).max
    assert torch.equal(q, torch.clamp(x / 0.5, -fmax, fmax).to(dtype))
    deq = dequantize_affine(q, q.shape, scale, None, dtype)
    assert torch.equal(deq, q.float() * 0.5)
    big = torch.tensor([1e30, -1e30])
    qb = quantize_affine(big, big.shape, torch.tensor(1.0), None, dtype)
    assert torch.isfinite(qb.float()).all() and qb.float().abs().max() == fmax


def test_fake_quantize_float8_keeps_input_dtype():
    x = torch.randn(64, dtype=torch.bfloat16)
    out = fake_quantize_affine(x, x.shape, torch.tensor(0.01), None, torch.float8_e4m3fn)
    assert out.dtype == torch.bfloat16


def test_errors_name_the_problem():
    x = torch.randn(4, 6)
    with pytest.raises(IndexError, match="channel axis 3 is out of range"):
        quantize_per_channel(x, torch.ones(4), torch.zeros(4), 3)
    with pytest.raises(ValueError, match="does not tile"):
        quantize_affine(x, (4, 4), torch.ones(1), torch.zeros(1), torch.uint8)
    with pytest.raises(ValueError, match="has 3 elements but the blocks need 4"):
        quantize_per_channel(x, torch.ones(3), torch.zeros(3), 0)
    with pytest.raises(ValueError, match="not divisible by group_size"):
        block_size_for((4, 6), group_size=4)
    with pytest.raises(TypeError, match="cannot quantize to torch.float32"):
        quantize_affine(x, x.shape, torch.ones(1), torch.zeros(1), torch.float32)
