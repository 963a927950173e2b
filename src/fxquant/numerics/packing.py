"""Packing sub-byte integers: two 4-bit values per byte (and four 2-bit values).

Layout (torch's ``quint4x2`` convention): along the last dimension, element ``2i`` goes to the
low nibble and element ``2i + 1`` to the high nibble of byte ``i``. Signed 4-bit values are
stored in two's complement within their nibble.
"""

from __future__ import annotations

import torch

__all__ = ["pack_int2", "pack_int4", "unpack_int2", "unpack_int4"]


def _pack(q: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    per_byte = 8 // bits
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if q.numel() and (int(q.min()) < lo or int(q.max()) > hi):
        raise ValueError(
            f"values in [{int(q.min())}, {int(q.max())}] do not fit in {'signed' if signed else 'unsigned'} "
            f"{bits}-bit [{lo}, {hi}]"
        )
    if q.shape[-1] % per_byte:
        raise ValueError(
            f"last dimension {q.shape[-1]} must be a multiple of {per_byte} to pack {bits}-bit values"
        )
    mask = (1 << bits) - 1
    u = (q.to(torch.int16) & mask).to(torch.uint8)
    u = u.reshape(*q.shape[:-1], q.shape[-1] // per_byte, per_byte)
    packed = torch.zeros(u.shape[:-1], dtype=torch.uint8, device=q.device)
    for k in range(per_byte):
        packed |= u[..., k] << (bits * k)
    return packed


def _unpack(packed: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed data must be torch.uint8, got {packed.dtype}")
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    parts = [((packed >> (bits * k)) & mask) for k in range(per_byte)]
    u = torch.stack(parts, dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)
    if not signed:
        return u
    s = u.to(torch.int8)
    # two's complement within the nibble: values >= 2**(bits-1) are negative
    return torch.where(s >= (1 << (bits - 1)), s - (1 << bits), s)


def pack_int4(q: torch.Tensor, *, signed: bool = False) -> torch.Tensor:
    """Pack 4-bit integers (uint4 in [0, 15] or int4 in [-8, 7]) two per ``uint8`` byte."""
    return _pack(q, 4, signed)


def unpack_int4(packed: torch.Tensor, *, signed: bool = False) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: ``uint8`` (or ``int8`` when ``signed``) values."""
    return _unpack(packed, 4, signed)


def pack_int2(q: torch.Tensor, *, signed: bool = False) -> torch.Tensor:
    """Pack 2-bit integers four per ``uint8`` byte."""
    return _pack(q, 2, signed)


def unpack_int2(packed: torch.Tensor, *, signed: bool = False) -> torch.Tensor:
    return _unpack(packed, 2, signed)
