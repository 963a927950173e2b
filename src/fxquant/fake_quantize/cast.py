"""Fake quantization to floating-point targets (float8, float16, bfloat16).

torch has fused fake-quantize kernels only for integer grids, so float targets go through
fxquant's numerics with an explicit straight-through gradient::

    forward:   x_hat = float(saturate_cast_to_dtype(x / scale)) * scale
    backward:  dx = dy  where |x / scale| <= finfo(dtype).max,   0 elsewhere (saturated)

(autograd through the cast itself would round the *gradient* to the float8 grid as well.)
"""

from __future__ import annotations

import torch

from fxquant.numerics.affine import block_size_for, fake_quantize_affine

__all__ = ["fake_quantize_float_cast"]


def _broadcastable(scale: torch.Tensor, x: torch.Tensor, ch_axis: int | None) -> torch.Tensor:
    if ch_axis is None:
        return scale.reshape(())
    shape = [1] * x.dim()
    shape[ch_axis] = -1
    return scale.reshape(shape)


def fake_quantize_float_cast(
    x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, ch_axis: int | None = None
) -> torch.Tensor:
    """Quantize ``x`` to the float ``dtype`` and back, per tensor (``ch_axis=None``) or with
    one scale per slice along ``ch_axis``."""
    block = block_size_for(x.shape, axis=ch_axis)
    with torch.no_grad():
        x_hat = fake_quantize_affine(x, block, scale, None, dtype)
    if not x.requires_grad:
        return x_hat
    fmax = torch.finfo(dtype).max
    inside = (x.detach().float().abs() / _broadcastable(scale, x, ch_axis)) <= fmax
    # x - x.detach() is exactly 0 in the forward pass and carries gradient 1.
    return x_hat + (x - x.detach()) * inside
