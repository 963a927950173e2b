"""Granularity types and get_block_size against torch.ao.quantization's."""

from __future__ import annotations

import dataclasses

import pytest
import torch.ao.quantization.observer as upstream

from fxquant.observers.granularity import (
    Granularity,
    PerAxis,
    PerBlock,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    get_block_size,
)

# (ours, upstream) pairs over the granularities upstream's get_block_size understands
PAIRS = [
    (PerTensor(), upstream.PerTensor()),
    (PerAxis(0), upstream.PerAxis(0)),
    (PerAxis(1), upstream.PerAxis(1)),
    (PerAxis(-1), upstream.PerAxis(-1)),
    (PerRow(), upstream.PerRow()),
    (PerToken(), upstream.PerToken()),
]
SHAPES = [(8, 16), (2, 3, 4), (1, 5), (4, 1, 6, 2)]


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=lambda g: repr(g))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_get_block_size_matches_upstream(ours, theirs, shape):
    expected = tuple(upstream.get_block_size(shape, theirs))
    got = get_block_size(shape, ours)
    assert got == expected
    assert all(isinstance(b, int) for b in got)


@pytest.mark.parametrize("shape,group", [((8, 16), 4), ((3, 32), 32), ((5, 6), 2)], ids=str)
def test_per_group_matches_upstream_on_2d(shape, group):
    assert get_block_size(shape, PerGroup(group)) == upstream.get_block_size(
        shape, upstream.PerGroup(group)
    )


def test_per_group_extends_to_any_rank():
    # torch.ao accepts only 2-d inputs; torchao (and fxquant) group the last dim of any rank
    assert get_block_size((2, 3, 8), PerGroup(4)) == (1, 1, 4)


@pytest.mark.parametrize(
    "block,shape,expected",
    [((2, 4), (8, 16), (2, 4)), ((1, 32), (3, 4, 64), (1, 1, 32)), ((3,), (9,), (3,))],
    ids=["2d", "padded-to-3d", "1d"],
)
def test_per_block(block, shape, expected):
    assert get_block_size(shape, PerBlock(block)) == expected


def test_per_row_dim_reduces_that_dim():
    assert get_block_size((4, 6, 8), PerRow(dim=1)) == (1, 6, 1)


@pytest.mark.parametrize(
    "cls", [Granularity, PerTensor, PerAxis, PerGroup, PerRow, PerToken, PerBlock],
    ids=lambda c: c.__name__,
)
def test_field_names_and_order_match_upstream(cls):
    ours = [f.name for f in dataclasses.fields(cls)]
    theirs_cls = getattr(upstream, cls.__name__)
    theirs = [f.name for f in dataclasses.fields(theirs_cls)] if dataclasses.is_dataclass(
        theirs_cls
    ) else []
    # PerRow gains torchao's optional `dim`; everything else is field-for-field upstream's
    assert ours == (theirs + ["dim"] if cls is PerRow else theirs)


def test_values_are_frozen_comparable_and_hashable():
    assert PerAxis(0) == PerAxis(axis=0) != PerAxis(1)
    assert PerToken() == PerToken() and PerTensor() != PerToken()
    assert len({PerGroup(32), PerGroup(32), PerBlock([1, 32]), PerBlock((1, 32))}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        PerAxis(0).axis = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: PerAxis("0"), TypeError, "PerAxis.axis must be an int"),
        (lambda: PerAxis(True), TypeError, "must be an int"),
        (lambda: PerGroup(0), ValueError, "must be positive"),
        (lambda: PerGroup(2.0), TypeError, "group_size must be an int"),
        (lambda: PerRow(dim=None), TypeError, "PerRow.dim"),
        (lambda: PerBlock(()), ValueError, "non-empty"),
        (lambda: PerBlock((1, -2)), ValueError, "positive"),
        (lambda: PerBlock(4), TypeError, "tuple of ints"),
    ],
    ids=["axis-str", "axis-bool", "group-zero", "group-float", "row-none", "block-empty",
         "block-negative", "block-scalar"],
)
def test_construction_validates(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "shape,granularity,error,match",
    [
        ((8, 10), PerGroup(4), ValueError, "not divisible by group_size 4"),
        ((8, 16), PerAxis(2), IndexError, "out of range"),
        ((8, 16), PerAxis(-3), IndexError, "out of range"),
        ((8, 16), PerRow(dim=5), IndexError, "PerRow.dim=5"),
        ((8, 16), PerBlock((3, 4)), ValueError, "does not tile"),
        ((8,), PerBlock((1, 4)), ValueError, "more dims"),
        ((), PerToken(), ValueError, "0-d"),
    ],
    ids=["group-not-dividing", "axis-too-big", "axis-too-negative", "row-dim", "block-tiling",
         "block-rank", "token-0d"],
)
def test_get_block_size_errors_name_the_problem(shape, granularity, error, match):
    with pytest.raises(error, match=match):
        get_block_size(shape, granularity)


def test_get_block_size_rejects_non_granularity():
    with pytest.raises(TypeError, match="Granularity subclass"):
        get_block_size((4, 4), "per_tensor")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Granularity subclass"):
        get_block_size((4, 4), upstream.PerTensor())  # torch.ao's classes are not ours


def test_get_block_size_rejects_unknown_subclass():
    @dataclasses.dataclass(frozen=True)
    class PerDiagonal(Granularity):
        pass

    with pytest.raises(ValueError, match="unsupported granularity"):
        get_block_size((4, 4), PerDiagonal())


def test_per_tensor_of_0d_tensor():
    assert get_block_size((), PerTensor()) == ()
