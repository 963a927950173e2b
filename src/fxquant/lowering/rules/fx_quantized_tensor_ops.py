"""Which torch-level ops of FX graphs also run on torch's quantized CPU tensors.

This is knowledge of torch's kernels, not of a backend's patterns (those come from the
``BackendConfig``): after ``convert_fx``, ``dequantize → op → quantize`` may become ``op`` on
the quantized tensor only if torch has a quantized kernel for ``op`` that keeps the parameters
the graph asks for (rules in :mod:`fxquant.lowering.rules.fx_ops`). Ops are named as an FX
node names them: module class, function, or method name.

* :data:`SAME_QPARAMS_OPS`: the output carries the input's scale and zero point (pooling,
  clamps, ReLU, reshapes, ``cat``);
* :func:`fixed_output_qparams`: sigmoid / tanh / hardsigmoid kernels produce fixed
  parameters, so they lower only where the graph asks for exactly those.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IDENTITY_OPS", "RELU_TARGETS", "SAME_QPARAMS_OPS", "fixed_output_qparams", "runs_on_quantized_tensor"]

RELU_TARGETS: tuple[Any, ...] = (F.relu, torch.relu)

SAME_QPARAMS_OPS: frozenset[Any] = frozenset({
    # pooling, clamps and ReLU
    torch.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.hardtanh,
    F.hardtanh_, F.interpolate, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.relu, F.relu6,
    torch.avg_pool1d, torch._C._nn.avg_pool2d, torch._C._nn.avg_pool3d, torch.clamp,
    torch.flatten, torch.mean, operator.floordiv, torch.channel_shuffle, torch.relu,
    "clamp", "mean", "relu", "relu_",
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AvgPool3d, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.ReLU, nn.ReLU6, nn.ChannelShuffle,
    # shape ops
    torch.narrow, torch.transpose, torch.repeat_interleave, torch.squeeze, torch.stack,
    torch.unsqueeze, F.pixel_shuffle, F.pixel_unshuffle,
    "contiguous", "detach", "detach_", "permute", "repeat", "repeat_interleave", "reshape",
    "resize_", "squeeze", "squeeze_", "transpose", "unsqueeze", "unsqueeze_", "view",
    nn.Identity, nn.PixelShuffle, nn.PixelUnshuffle,
    # several inputs, one shared observer
    torch.cat,
})

# identities in eval mode, observed with their own observer: lowered away, so the output keeps
# the input's parameters (as upstream's lowering does)
IDENTITY_OPS: frozenset[Any] = frozenset({nn.Dropout, F.dropout})

# (scale, zero_point) by output dtype, from the op's output range ([0, 1] or [-1, 1]).
_UNIT = {torch.quint8: (1.0 / 256.0, 0), torch.qint8: (1.0 / 256.0, -128)}
_SYMMETRIC = {torch.quint8: (2.0 / 256.0, 128), torch.qint8: (2.0 / 256.0, 0)}
_FIXED_OUTPUT: dict[Any, dict[torch.dtype, tuple[float, int]]] = {
    nn.Sigmoid: _UNIT, torch.sigmoid: _UNIT, F.sigmoid: _UNIT, "sigmoid": _UNIT, "sigmoid_": _UNIT,
    nn.Hardsigmoid: _UNIT, F.hardsigmoid: _UNIT, "hardsigmoid": _UNIT, "hardsigmoid_": _UNIT,
    nn.Tanh: _SYMMETRIC, torch.tanh: _SYMMETRIC, F.tanh: _SYMMETRIC, "tanh": _SYMMETRIC,
    "tanh_": _SYMMETRIC,
}


def runs_on_quantized_tensor(op: Any) -> bool:
    """True if ``op`` (module type, function or method name) has a quantized kernel whose
    output keeps its input's parameters."""
    try:
        return op in SAME_QPARAMS_OPS
    except TypeError:  # an unhashable target is no known op
        return False


def fixed_output_qparams(op: Any, dtype: torch.dtype) -> tuple[float, int] | None:
    """(scale, zero_point) that ``op``'s quantized kernel produces in ``dtype``, or None if it
    has no fixed-output kernel (softmax is lowered as a module)."""
    try:
        return _FIXED_OUTPUT.get(op, {}).get(dtype)
    except TypeError:
        return None
