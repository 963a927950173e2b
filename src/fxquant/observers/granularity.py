"""Granularity: which elements of a tensor share one scale and zero point.

A granularity is a small frozen value (``PerTensor()``, ``PerAxis(axis=0)``,
``PerGroup(group_size=32)``, ...). :func:`get_block_size` turns it, for a concrete tensor
shape, into the one representation the numerics understand: a ``block_size`` tuple with one
entry per dimension, where every block of that shape shares its quantization parameters
(see :mod:`fxquant.numerics.affine`). For a ``(8, 16)`` tensor::

    PerTensor()        -> (8, 16)    one scale
    PerAxis(axis=0)    -> (1, 16)    8 scales, one per row
    PerRow()           -> (1, 16)    one per row (reduces the last dim)
    PerToken()         -> (1, 16)    one per token (all leading dims kept)
    PerGroup(4)        -> (1, 4)     32 scales, groups of 4 along the last dim
    PerBlock((2, 4))   -> (2, 4)     16 scales, 2x4 tiles

Field names and positional order follow ``torch.ao.quantization`` (and torchao), so
``PerAxis(0)`` and ``PerGroup(32)`` keep working after an import change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fxquant.numerics.affine import block_size_for

__all__ = [
    "Granularity",
    "PerAxis",
    "PerBlock",
    "PerGroup",
    "PerRow",
    "PerTensor",
    "PerToken",
    "get_block_size",
]


def _check_int(owner: str, field: str, value: object) -> int:
    # bool is an int subclass; PerAxis(True) is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{field} must be an int, got {value!r} ({type(value).__name__})")
    return value


@dataclass(frozen=True)
class Granularity:
    """Base of all granularities; use one of its subclasses."""


@dataclass(frozen=True)
class PerTensor(Granularity):
    """One scale and zero point for the whole tensor."""


@dataclass(frozen=True)
class PerAxis(Granularity):
    """One set of parameters per index along ``axis`` (per channel); all other dims reduce.

    ``PerAxis(axis=0)`` on a ``(8, 16)`` weight gives 8 scales.
    """

    axis: int

    def __post_init__(self) -> None:
        _check_int("PerAxis", "axis", self.axis)


@dataclass(frozen=True)
class PerGroup(Granularity):
    """Groups of ``group_size`` consecutive elements along the last dim share parameters
    (the usual layout of low-bit weight-only quantization)."""

    group_size: int

    def __post_init__(self) -> None:
        if _check_int("PerGroup", "group_size", self.group_size) <= 0:
            raise ValueError(f"PerGroup.group_size must be positive, got {self.group_size}")


@dataclass(frozen=True)
class PerRow(Granularity):
    """One set of parameters per row: dimension ``dim`` (default: the last) is reduced and all
    others are kept. ``PerRow()`` is what torch.ao calls ``PerRow``; ``dim`` is torchao's
    extension."""

    dim: int = -1

    def __post_init__(self) -> None:
        _check_int("PerRow", "dim", self.dim)


@dataclass(frozen=True)
class PerToken(Granularity):
    """One set of parameters per token: the last dim is reduced, every leading dim kept.

    A ``(2, 3, 4)`` activation has 6 tokens of 4 elements; on a 2-d tensor this equals
    ``PerAxis(axis=0)``.
    """


@dataclass(frozen=True)
class PerBlock(Granularity):
    """Tiles of shape ``block_size`` share parameters. A ``block_size`` shorter than the
    tensor's rank applies to its trailing dims (leading dims get blocks of 1), so
    ``PerBlock((1, 32))`` is ``PerGroup(32)`` for any rank."""

    block_size: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.block_size, (str, bytes)) or not isinstance(self.block_size, Sequence):
            raise TypeError(f"PerBlock.block_size must be a tuple of ints, got {self.block_size!r}")
        sizes = tuple(_check_int("PerBlock", "block_size[i]", b) for b in self.block_size)
        if not sizes or any(b <= 0 for b in sizes):
            raise ValueError(
                f"PerBlock.block_size must be a non-empty tuple of positive ints, got {sizes}"
            )
        # Lists are accepted (torchao serialises them) but stored as a tuple, keeping the
        # value hashable and comparable.
        object.__setattr__(self, "block_size", sizes)


def get_block_size(input_shape: Sequence[int], granularity: Granularity) -> tuple[int, ...]:
    """The ``block_size`` that ``granularity`` means for a tensor of ``input_shape``.

    >>> get_block_size((8, 16), PerGroup(4))
    (1, 4)
    >>> get_block_size((2, 3, 4), PerToken())
    (1, 1, 4)

    Raises:
        TypeError: ``granularity`` is not a :class:`Granularity` instance.
        IndexError: a ``PerAxis``/``PerRow`` dim outside the tensor's rank.
        ValueError: a group or block size that does not divide the shape, or a granularity
            type this function does not know.
    """
    if not isinstance(granularity, Granularity):
        raise TypeError(
            f"granularity must be an instance of a Granularity subclass (PerTensor(), "
            f"PerAxis(axis), PerGroup(group_size), PerRow(), PerToken(), PerBlock(block_size)), "
            f"got {granularity!r}"
        )
    shape = tuple(int(s) for s in input_shape)
    if isinstance(granularity, PerTensor):
        return shape
    if not shape:
        raise ValueError(
            f"{granularity} needs a tensor with at least one dimension; a 0-d tensor can only "
            "be quantized PerTensor()"
        )
    if isinstance(granularity, PerAxis):
        return block_size_for(shape, axis=granularity.axis)
    if isinstance(granularity, PerToken):
        return block_size_for(shape, per_token=True)
    if isinstance(granularity, PerGroup):
        return block_size_for(shape, group_size=granularity.group_size)
    if isinstance(granularity, PerRow):
        # keep every dim but `dim`, which is reduced whole
        dim = _normalize_dim(granularity.dim, len(shape), "PerRow.dim")
        return tuple(s if d == dim else 1 for d, s in enumerate(shape))
    if isinstance(granularity, PerBlock):
        return _per_block(shape, granularity.block_size)
    raise ValueError(
        f"unsupported granularity {granularity!r}: get_block_size knows PerTensor, PerAxis, "
        "PerGroup, PerRow, PerToken and PerBlock"
    )


def _normalize_dim(dim: int, ndim: int, what: str) -> int:
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"{what}={dim} is out of range for a tensor with {ndim} dimensions; "
            f"use a value in [{-ndim}, {ndim - 1}]"
        )
    return dim % ndim


def _per_block(shape: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    if len(block) > len(shape):
        raise ValueError(
            f"PerBlock block_size {block} has more dims than the tensor shape {shape}"
        )
    # left-pad with 1s: the block applies to the trailing dims
    full = (1,) * (len(shape) - len(block)) + block
    if any(s % b for s, b in zip(shape, full)):
        raise ValueError(
            f"PerBlock block_size {block} does not tile tensor shape {shape}: every dim must be "
            "divisible by its block size"
        )
    return full
