"""Quantized CPU kernels that the lowered graphs call, where torch's operator alone does not
fit: oneDNN weight packing, and oneDNN's fused conv+add (+relu).

torch's ``quantized::conv2d_prepack`` packs for the *current* quantized engine. Under the
default ``x86`` engine depthwise convolutions with many groups get fbgemm's packing, whose
depthwise path falls back to a slow generic loop when the padding is not symmetric (as after
TF-style ``pad(x, [0, 1, 0, 1])``): 10-40 ms instead of 0.05-0.2 ms per layer at batch 1.
oneDNN's packed weights are fast for all of them and run under any engine, so convolutions
are packed for oneDNN. ``quantized::conv2d_add[_relu]`` (conv and residual add in one
kernel, exact to the reference) only dispatches while the engine is ``onednn``; the
wrappers below select it for the duration of the call. The quantized engine is a process
global: a thread running other quantized ops concurrently could observe the switch.

``torch.nn.functional.pad`` of a quantized tensor goes through a float fill and copy (about
20x slower than needed): :func:`zero_pad` fills a channels-last buffer with the zero point
and copies the integers into its interior.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

__all__ = [
    "HAS_ONEDNN",
    "conv2d_add",
    "conv2d_add_relu",
    "onednn_engine",
    "pack_conv2d",
    "zero_pad",
]

Q = torch.ops.quantized
HAS_ONEDNN = "onednn" in torch.backends.quantized.supported_engines
_INTS = {torch.quint8: torch.uint8, torch.qint8: torch.int8}


@contextlib.contextmanager
def onednn_engine() -> Iterator[None]:
    """Select torch's ``onednn`` quantized engine inside the block (restored after)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "onednn"
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def pack_conv2d(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> object:
    """Pre-pack a qint8 conv weight (and float bias) for ``quantized::conv2d``; for oneDNN
    when available (see the module docstring), else for the current engine."""
    args = (weight, bias, list(stride), list(padding), list(dilation), groups)
    if not HAS_ONEDNN:
        return Q.conv2d_prepack(*args)
    with onednn_engine():
        return Q.conv2d_prepack(*args)


def conv2d_add(
    x: torch.Tensor, y: torch.Tensor, packed: object, scale: float, zero_point: int
) -> torch.Tensor:
    """``quantize(conv2d(x) + y)`` in one oneDNN kernel (weights packed by :func:`pack_conv2d`).
    A channels-last ``y`` is overwritten with the result (oneDNN's in-place sum)."""
    with onednn_engine():
        return Q.conv2d_add(x, y, packed, scale, zero_point)


def conv2d_add_relu(
    x: torch.Tensor, y: torch.Tensor, packed: object, scale: float, zero_point: int
) -> torch.Tensor:
    """``quantize(relu(conv2d(x) + y))`` in one oneDNN kernel."""
    with onednn_engine():
        return Q.conv2d_add_relu(x, y, packed, scale, zero_point)


def zero_pad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """``pad(x, pad)`` with real value 0 for a per-tensor quantized ``x``: the integers are
    padded with the zero point (exactly ``quantize(pad(dequantize(x)))``). A 4-d ``x`` padded
    in its last two dims gets a channels-last result (what the int8 convolutions read)."""
    scale, zero_point = x.q_scale(), x.q_zero_point()
    if x.dim() == 4 and len(pad) == 4:
        left, right, top, bottom = pad
        n, c, h, w = x.shape
        if min(pad) >= 0:
            ints = torch.full((n, h + top + bottom, w + left + right, c), zero_point, dtype=_INTS[x.dtype])
            out = torch._make_per_tensor_quantized_tensor(ints.permute(0, 3, 1, 2), scale, zero_point)
            out[:, :, top:top + h, left:left + w].copy_(x)  # same parameters: copies integers
            return out
    ints = torch.nn.functional.pad(x.int_repr(), list(pad), value=zero_point)
    return torch._make_per_tensor_quantized_tensor(ints, scale, zero_point)
