"""Sub-byte packing: round trips and torch's quint4x2 byte layout."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxquant.numerics import pack_int2, pack_int4, quantize_per_tensor, unpack_int2, unpack_int4


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=2, max_size=64).filter(lambda v: len(v) % 2 == 0))
def test_uint4_round_trip(values):
    q = torch.tensor(values, dtype=torch.uint8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.numel() == q.numel() // 2
    assert torch.equal(unpack_int4(packed), q)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-8, 7), min_size=2, max_size=64).filter(lambda v: len(v) % 2 == 0))
def test_int4_round_trip(values):
    q = torch.tensor(values, dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(q, signed=True), signed=True), q)


def test_int2_round_trip():
    q = torch.randint(-2, 2, (3, 8), dtype=torch.int8)
    assert torch.equal(unpack_int2(pack_int2(q, signed=True), signed=True), q)


def test_layout_matches_torch_quint4x2():
    # torch packs element 2i in the low nibble and 2i+1 in the high nibble
    x = torch.rand(64) * 15
    ref = torch.quantize_per_tensor(x, 1.0, 0, torch.quint4x2)
    q = quantize_per_tensor(x, 1.0, 0, dtype=torch.quint4x2)
    assert torch.equal(pack_int4(q), ref.int_repr())


def test_pack_rejects_out_of_range_and_odd_lengths():
    with pytest.raises(ValueError, match="do not fit"):
        pack_int4(torch.tensor([0, 16], dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple of 2"):
        pack_int4(torch.tensor([1, 2, 3], dtype=torch.uint8))
