"""Block-wise qparam selection and block-wise q/dq against torch's quantized_decomposed ops
and upstream observers (bit for bit), plus round-trip properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization import PerChannelMinMaxObserver as UpstreamPerChannelMinMax

from fxquant.numerics.affine import block_size_for, dequantize_affine, quantize_affine
from fxquant.numerics.blockwise import (
    MappingType,
    ZeroPointDomain,
    affine_qrange,
    blockwise_minmax,
    choose_qparams_affine,
    choose_qparams_affine_with_min_max,
    choose_qparams_per_group,
    choose_qparams_per_token,
    choose_qparams_per_token_asymmetric,
    group_qrange,
)
from fxquant.numerics.dtypes import QuantizationRangeError, UnsupportedDTypeError
from fxquant.numerics.ops import quantized_decomposed as qd

TOKEN_SHAPES = [(4, 16), (2, 3, 8), (1, 5), (7, 1)]
FLOAT_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _tokens(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # random rows plus the awkward ones: all zero, all positive, all negative, one huge value
    x = torch.randn(shape) * 4
    rows = x.reshape(-1, shape[-1])
    rows[0] = 0.0
    if rows.shape[0] > 3:
        rows[1] = rows[1].abs()
        rows[2] = -rows[2].abs()
        rows[3, 0] = 3e4
    return x.to(dtype)


# ---- per token --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", TOKEN_SHAPES, ids=str)
def test_choose_qparams_per_token_asymmetric_matches_decomposed(shape, dtype):
    x = _tokens(shape, dtype)
    scale, zp = choose_qparams_per_token_asymmetric(x, torch.int8)
    ref_scale, ref_zp = qd.choose_qparams_per_token_asymmetric(x, torch.int8)
    assert scale.dtype == ref_scale.dtype == torch.float64 and zp.dtype == ref_zp.dtype
    assert torch.equal(scale, ref_scale)
    assert torch.equal(zp, ref_zp)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", TOKEN_SHAPES, ids=str)
def test_choose_qparams_per_token_matches_decomposed(shape, dtype):
    x = _tokens(shape, dtype)
    scale, zp = choose_qparams_per_token(x, torch.int8)
    ref_scale, ref_zp = qd.choose_qparams_per_token(x, torch.int8)
    assert scale.dtype == ref_scale.dtype and zp.dtype == ref_zp.dtype
    assert torch.equal(scale, ref_scale)
    assert torch.equal(zp, ref_zp)


@pytest.mark.parametrize(
    "fn", [choose_qparams_per_token, choose_qparams_per_token_asymmetric], ids=lambda f: f.__name__
)
def test_per_token_choice_rejects_other_dtypes(fn):
    with pytest.raises(UnsupportedDTypeError, match="torch.int8 only"):
        fn(torch.randn(2, 4), torch.uint8)


@pytest.mark.parametrize("shape", TOKEN_SHAPES, ids=str)
def test_per_token_quantize_dequantize_match_decomposed(shape):
    x = _tokens(shape)
    scale, zp = choose_qparams_per_token_asymmetric(x, torch.int8)
    # torch's op takes float64 scales into float64 arithmetic; fxquant computes in float32,
    # so the bit-exact comparison feeds it the float32 scales observers store
    scale = scale.float()
    block = block_size_for(x.shape, per_token=True)
    ref_q = qd.quantize_per_token(x, scale, zp, -128, 127, torch.int8)
    q = quantize_affine(x, block, scale, zp, torch.int8, -128, 127)
    assert q.dtype == torch.int8
    assert torch.equal(q, ref_q)
    ref_dq = qd.dequantize_per_token(ref_q, scale, zp, -128, 127, torch.int8, torch.float32)
    assert torch.equal(dequantize_affine(ref_q, block, scale, zp), ref_dq)


def test_per_token_dequantize_matches_decomposed_with_float64_scales():
    # (q - zp) * scale is exact in float64, so one rounding to float32 equals float32 math
    x = _tokens((64, 32))
    scale, zp = choose_qparams_per_token_asymmetric(x, torch.int8)
    q = qd.quantize_per_token(x, scale, zp, -128, 127, torch.int8)
    ref = qd.dequantize_per_token(q, scale, zp, -128, 127, torch.int8, torch.float32)
    out = dequantize_affine(q, block_size_for(x.shape, per_token=True), scale, zp)
    assert torch.equal(out, ref)


# ---- per group --------------------------------------------------------------------------

GROUP_CASES = [(4, True), (4, False), (8, True), (2, False)]


@pytest.mark.parametrize("group_size", [2, 16, 32], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("n_bit,symmetric", GROUP_CASES, ids=lambda v: str(v))
def test_per_group_quantize_dequantize_match_decomposed(group_size, n_bit, symmetric):
    w = torch.randn(8, 64) * 0.1
    scale, zp = choose_qparams_per_group(w, group_size, n_bit, symmetric)
    assert scale.shape == zp.shape == (8, 64 // group_size)
    qmin, qmax = group_qrange(n_bit, symmetric)
    storage = torch.int8 if symmetric else torch.uint8
    ref_q = qd.quantize_per_channel_group(w, scale, zp, qmin, qmax, storage, group_size)
    q = quantize_affine(w, (1, group_size), scale, zp, storage, qmin, qmax)
    assert torch.equal(q, ref_q)
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    ref_dq = qd.dequantize_per_channel_group(
        ref_q, scale, zp, qmin, qmax, storage, group_size, torch.float32
    )
    assert torch.equal(dequantize_affine(ref_q, (1, group_size), scale, zp), ref_dq)


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_group_equals_choose_qparams_affine_on_group_blocks(symmetric):
    w = torch.randn(6, 32)
    scale, zp = choose_qparams_per_group(w, 8, 4, symmetric)
    mapping = MappingType.SYMMETRIC if symmetric else MappingType.ASYMMETRIC
    qmin, qmax = group_qrange(4, symmetric)
    eps = torch.finfo(torch.float32).smallest_normal if symmetric else 1e-6
    ref_scale, ref_zp = choose_qparams_affine(w, mapping, (1, 8), torch.int32, qmin, qmax, eps)
    assert torch.equal(scale, ref_scale)
    assert torch.equal(zp.float(), ref_zp)
    assert zp.dtype == (torch.float32 if symmetric else torch.int32)


def test_per_group_wider_than_row_means_one_group_per_row():
    w = torch.randn(3, 16)
    scale, _ = choose_qparams_per_group(w, 128)
    assert scale.shape == (3, 1)


@pytest.mark.parametrize(
    "shape,group_size,match",
    [((4, 12), 5, "divide"), ((4, 1), 8, "> 1"), ((2, 4, 8), 4, "2-d")],
    ids=["not-dividing", "single-column", "3d"],
)
def test_per_group_rejects_bad_layouts(shape, group_size, match):
    with pytest.raises(ValueError, match=match):
        choose_qparams_per_group(torch.randn(shape), group_size)


# ---- choose_qparams_affine ---------------------------------------------------------------


@pytest.mark.parametrize(
    "mapping,op",
    [(MappingType.ASYMMETRIC, qd.choose_qparams.tensor),
     (MappingType.SYMMETRIC, qd.choose_qparams_symmetric.tensor)],
    ids=["asymmetric", "symmetric"],
)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8], ids=str)
@pytest.mark.parametrize("data", ["randn", "positive", "zeros"])
def test_per_tensor_matches_decomposed_choose_qparams(mapping, op, dtype, data):
    x = {"randn": torch.randn(33, 17) * 5, "positive": torch.rand(100) + 2,
         "zeros": torch.zeros(8)}[data]
    qmin, qmax = affine_qrange(dtype)
    eps = torch.finfo(torch.float32).eps
    ref_scale, ref_zp = op(x, qmin, qmax, eps, dtype)
    scale, zp = choose_qparams_affine(x, mapping, x.shape, dtype, eps=eps)
    assert scale.shape == ()
    assert torch.equal(scale.double().reshape(1), ref_scale)
    assert torch.equal(zp.long().reshape(1), ref_zp)


@pytest.mark.parametrize(
    "qscheme,mapping,dtype,our_dtype",
    [(torch.per_channel_affine, MappingType.ASYMMETRIC, torch.quint8, torch.uint8),
     (torch.per_channel_symmetric, MappingType.SYMMETRIC, torch.qint8, torch.int8)],
    ids=["affine-quint8", "symmetric-qint8"],
)
@pytest.mark.parametrize("axis", [0, 1])
def test_per_axis_matches_upstream_per_channel_observer(qscheme, mapping, dtype, our_dtype, axis):
    w = torch.randn(6, 10, 3)
    ref_obs = UpstreamPerChannelMinMax(ch_axis=axis, dtype=dtype, qscheme=qscheme)
    ref_obs(w)
    ref_scale, ref_zp = ref_obs.calculate_qparams()
    scale, zp = choose_qparams_affine(w, mapping, block_size_for(w.shape, axis=axis), our_dtype)
    assert torch.equal(scale, ref_scale)
    assert torch.equal(zp.long(), ref_zp)


def test_minmax_variant_equals_input_variant():
    x = torch.randn(4, 6, 8)
    block = (2, 3, 4)
    direct = choose_qparams_affine(x, MappingType.ASYMMETRIC, block, torch.int8)
    min_val, max_val = blockwise_minmax(x, block)
    via_range = choose_qparams_affine_with_min_max(
        min_val, max_val, MappingType.ASYMMETRIC, block, torch.int8
    )
    assert torch.equal(direct[0], via_range[0]) and torch.equal(direct[1], via_range[1])


@pytest.mark.parametrize(
    "shape,block,expected",
    [((3, 4), (3, 4), ()), ((2, 3, 4), (1, 1, 4), (2, 3)), ((1, 4), (1, 4), (1,)),
     ((8, 16), (1, 4), (8, 4)), ((4, 6, 8), (2, 3, 4), (2, 2, 2)), ((6, 5), (1, 5), (6,))],
    ids=["per-tensor", "per-token", "size-1-dim-kept", "per-group", "3d-blocks", "per-row"],
)
def test_parameter_layout_drops_whole_dim_blocks(shape, block, expected):
    scale, zp = choose_qparams_affine(torch.randn(shape), MappingType.SYMMETRIC, block, torch.int8)
    assert tuple(scale.shape) == expected and tuple(zp.shape) == expected


def test_blockwise_minmax_equals_loop_over_blocks():
    x = torch.randn(4, 6, 8)
    min_val, max_val = blockwise_minmax(x, (2, 3, 4))
    for i in range(2):
        for j in range(2):
            for k in range(2):
                blk = x[2 * i:2 * i + 2, 3 * j:3 * j + 3, 4 * k:4 * k + 4]
                assert min_val[i, j, k] == blk.min() and max_val[i, j, k] == blk.max()


def test_defaults_follow_input_dtype():
    x = torch.randn(4, 8).to(torch.bfloat16) * 1e-6
    scale, zp = choose_qparams_affine(x, MappingType.ASYMMETRIC, (1, 8), torch.uint8)
    assert scale.dtype == zp.dtype == torch.bfloat16
    tiny = torch.zeros(2, 4)
    scale, _ = choose_qparams_affine(tiny, MappingType.SYMMETRIC, (1, 4), torch.int8)
    assert torch.all(scale == torch.finfo(torch.float32).eps)


@pytest.mark.parametrize(
    "dtype,expected",
    [(torch.int8, 0), (torch.uint8, 128), (torch.int4, 0), (torch.uint4, 8)],
    ids=str,
)
def test_symmetric_zero_point_is_range_middle(dtype, expected):
    _, zp = choose_qparams_affine(torch.randn(2, 8), MappingType.SYMMETRIC, (1, 8), dtype)
    assert torch.all(zp == expected)


@pytest.mark.parametrize("qmin,qmax,expected", [(-10, 7, -1), (-9, 7, 0), (-3, 12, 5)], ids=str)
def test_symmetric_zero_point_truncates_toward_zero(qmin, qmax, expected):
    # trunc((qmax + qmin + 1) / 2): -0.5 becomes 0, not -1 as floor division would give
    _, zp = choose_qparams_affine(
        torch.randn(2, 8), MappingType.SYMMETRIC, (1, 8), torch.int8, qmin, qmax
    )
    assert torch.all(zp == expected)


def test_symmetric_no_clipping_err_covers_both_sides():
    # int4 [-8, 7]: the negative side may use -8, so the scale is max(-min/8, max/7)
    x = torch.tensor([[-8.0, 1.0], [-1.0, 7.0]])
    scale, zp = choose_qparams_affine(
        x, MappingType.SYMMETRIC_NO_CLIPPING_ERR, (1, 2), torch.int4
    )
    assert torch.equal(scale, torch.tensor([1.0, 1.0]))
    q = quantize_affine(x, (1, 2), scale, zp, torch.int4)
    assert torch.equal(q, torch.tensor([[-8, 1], [-1, 7]], dtype=torch.int8))
    # plain symmetric divides amax by 7.5: a coarser step for row 0, and row 1's max (7.5
    # steps) rounds to 8 and saturates at 7
    sym_scale, sym_zp = choose_qparams_affine(x, MappingType.SYMMETRIC, (1, 2), torch.int4)
    assert torch.allclose(sym_scale, torch.tensor([8 / 7.5, 7 / 7.5]))
    assert int(quantize_affine(x, (1, 2), sym_scale, sym_zp, torch.int4)[1, 1]) == 7


def test_float_zero_point_domain_without_preserving_zero():
    x = torch.tensor([[2.0, 3.0, 5.0, 6.0]])
    scale, zp = choose_qparams_affine(
        x, MappingType.ASYMMETRIC, (1, 4), torch.uint4, preserve_zero=False,
        zero_point_domain=ZeroPointDomain.FLOAT,
    )
    # the range [2, 6] is not widened to contain 0
    assert torch.allclose(scale, torch.tensor([4.0 / 15]))
    # float zero point = min + scale * mid, mid = (0 + 15 + 1) / 2
    assert torch.allclose(zp, 2.0 + scale * 8.0)
    # quantize in the FLOAT domain: q = round((x - (zp - scale * mid)) / scale)
    q = torch.clamp(torch.round((x - (zp - scale * 8.0)) / scale), 0, 15)
    x_hat = (q - 8.0) * scale + zp
    assert torch.all((x_hat - x).abs() <= scale / 2 + 1e-6)


def test_none_zero_point_domain_gives_no_zero_point():
    scale, zp = choose_qparams_affine(
        torch.randn(3, 4), MappingType.ASYMMETRIC, (1, 4), torch.int8,
        zero_point_domain=ZeroPointDomain.NONE,
    )
    assert zp is None and scale.shape == (3,)


def test_mapping_and_domain_accept_names():
    x = torch.randn(3, 4)
    by_name = choose_qparams_affine(x, "ASYMMETRIC", (1, 4), torch.int8, zero_point_domain="INT")
    by_enum = choose_qparams_affine(x, MappingType.ASYMMETRIC, (1, 4), torch.int8)
    assert torch.equal(by_name[0], by_enum[0]) and torch.equal(by_name[1], by_enum[1])


def test_float8_target_is_symmetric_cast_range():
    x = torch.randn(2, 16)
    scale, zp = choose_qparams_affine(x, MappingType.SYMMETRIC, (1, 16), torch.float8_e4m3fn)
    assert torch.equal(scale, x.abs().amax(dim=1) / 448.0)
    assert torch.all(zp == 0)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"mapping_type": MappingType.SYMMETRIC, "zero_point_domain": ZeroPointDomain.FLOAT},
         ValueError, "integer zero point"),
        ({"mapping_type": MappingType.SYMMETRIC, "preserve_zero": False},
         ValueError, "preserve_zero=True"),
        ({"mapping_type": MappingType.ASYMMETRIC, "preserve_zero": False},
         ValueError, "ZeroPointDomain.FLOAT"),
        ({"mapping_type": "SYMETRIC"}, ValueError, "unknown mapping_type"),
        ({"target_dtype": torch.float32}, UnsupportedDTypeError, "target dtype"),
        ({"target_dtype": torch.int4, "quant_min": -9}, QuantizationRangeError, "exceeds"),
        ({"quant_min": 5, "quant_max": 5}, QuantizationRangeError, "less than"),
        ({"block_size": (4,)}, ValueError, "one block size per dim"),
        ({"block_size": (3, 4)}, ValueError, "does not tile"),
        ({"target_dtype": torch.float8_e4m3fn}, ValueError, "SYMMETRIC"),
    ],
    ids=["sym-float-domain", "sym-no-preserve", "asym-int-no-preserve", "bad-mapping-name",
         "float-target", "range-outside-dtype", "empty-range", "block-rank", "block-tiling",
         "float8-asym"],
)
def test_clear_errors(kwargs, error, match):
    args = {"mapping_type": MappingType.ASYMMETRIC, "block_size": (1, 4), "target_dtype": torch.int8}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        choose_qparams_affine(torch.randn(4, 4), **args)


# ---- round trip -----------------------------------------------------------------------------

_ROUND_TRIP_CASES = [
    (MappingType.ASYMMETRIC, torch.uint8), (MappingType.ASYMMETRIC, torch.int8),
    (MappingType.ASYMMETRIC, torch.uint4), (MappingType.SYMMETRIC, torch.int8),
    (MappingType.SYMMETRIC, torch.uint8), (MappingType.SYMMETRIC, torch.int4),
    (MappingType.SYMMETRIC_NO_CLIPPING_ERR, torch.int8),
    (MappingType.SYMMETRIC_NO_CLIPPING_ERR, torch.int4),
]


@st.composite
def _blocked_tensor(draw):
    ndim = draw(st.integers(1, 3))
    blocks = draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    counts = draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    shape = tuple(b * n for b, n in zip(blocks, counts))
    magnitude = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    shift = draw(st.sampled_from([0.0, 1.0, -1.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = (torch.randn(shape, generator=gen) + shift) * magnitude
    return x, tuple(blocks)


@settings(max_examples=60, deadline=None)
@given(case=_blocked_tensor(), kind=st.sampled_from(_ROUND_TRIP_CASES))
def test_round_trip_error_is_at_most_half_a_step(case, kind):
    x, block = case
    mapping, dtype = kind
    scale, zp = choose_qparams_affine(x, mapping, block, dtype)
    q = quantize_affine(x, block, scale, zp, dtype)
    x_hat = dequantize_affine(q, block, scale, zp)
    # every element lies inside its block's range, so only rounding error remains
    blocked_scale = _broadcast_per_element(scale, x.shape, block)
    assert torch.all((x_hat - x).abs() <= blocked_scale * (0.5 + 1e-3))


def _broadcast_per_element(
    scale: torch.Tensor, shape: tuple[int, ...], block: tuple[int, ...]
) -> torch.Tensor:
    counts = [s // b for s, b in zip(shape, block)]
    out = scale.reshape(counts)
    for dim, b in enumerate(block):
        out = out.repeat_interleave(b, dim=dim)
    return out
