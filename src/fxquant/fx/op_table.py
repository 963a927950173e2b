"""How the FX flow quantizes each kind of op, keyed by module type, function, or method name.

This is the internal table prepare_fx uses until patterns come from a ``BackendConfig``; its
entries follow upstream's native backend config for the ops they list:

* ``WEIGHTED``: conv / linear modules (and their fused forms): input and output observed,
  the weight observed at convert.
* ``BINARY``: add / mul: every tensor input and the output observed.
* ``SHARED``: ops that keep their input's quantization (pooling, ReLU, reshapes): the first
  tensor input observed, the output shares that observer.
* ``FIXED``: sigmoid / tanh / hardsigmoid / softmax: the output has fixed parameters.
* ``GENERAL``: other quantizable ops with own input and output observers (hardswish, ...).
"""

from __future__ import annotations

import enum
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxquant.nn import intrinsic as nni
from fxquant.nn import qat as nnqat
from fxquant.nn.intrinsic import qat as nniqat

__all__ = ["RELU_TARGETS", "OpKind", "fixed_qparams_for", "op_kind"]


class OpKind(enum.Enum):
    WEIGHTED = "weighted"
    BINARY = "binary"
    SHARED = "shared"
    FIXED = "fixed"
    GENERAL = "general"


_MODULES: dict[type, OpKind] = {
    **{t: OpKind.WEIGHTED for t in (
        nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
        nni.LinearReLU, nni.ConvReLU1d, nni.ConvReLU2d, nni.ConvReLU3d,
        nnqat.Linear, nnqat.Conv2d, nnqat.Conv3d,
        nniqat.LinearReLU, nniqat.ConvReLU2d, nniqat.ConvReLU3d,
        nniqat.ConvBn1d, nniqat.ConvBn2d, nniqat.ConvBn3d,
        nniqat.ConvBnReLU1d, nniqat.ConvBnReLU2d, nniqat.ConvBnReLU3d, nniqat.LinearBn1d,
    )},
    **{t: OpKind.SHARED for t in (
        nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
        nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.Flatten, nn.Dropout,
    )},
    **{t: OpKind.FIXED for t in (nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Softmax)},
    **{t: OpKind.GENERAL for t in (nn.Hardswish, nn.ELU, nn.LeakyReLU, nn.LayerNorm)},
}

_FUNCTIONS: dict[Any, OpKind] = {
    **{f: OpKind.BINARY for f in (operator.add, torch.add, operator.mul, torch.mul, torch.matmul)},
    **{f: OpKind.SHARED for f in (
        F.relu, torch.relu, F.relu6, F.hardtanh, F.max_pool1d, F.max_pool2d, F.max_pool3d,
        F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
        F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, torch.flatten, torch.transpose,
        torch.squeeze, torch.unsqueeze, torch.mean, F.dropout,
    )},
    **{f: OpKind.FIXED for f in (torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardsigmoid,
                                 F.softmax)},
    **{f: OpKind.GENERAL for f in (F.hardswish, F.elu, F.leaky_relu, F.layer_norm)},
}

_METHODS: dict[str, OpKind] = {
    **{m: OpKind.SHARED for m in (
        "relu", "relu_", "flatten", "view", "reshape", "permute", "transpose", "squeeze",
        "unsqueeze", "contiguous", "mean", "detach", "repeat", "repeat_interleave",
    )},
    **{m: OpKind.FIXED for m in ("sigmoid", "sigmoid_", "tanh", "tanh_")},
}

RELU_TARGETS: tuple[Any, ...] = (F.relu, torch.relu)
# binary ops that form one pattern with a following ReLU (observed after the ReLU)
RELU_FUSABLE_BINARY: tuple[Any, ...] = (operator.add, torch.add, operator.mul, torch.mul)

# (scale, zero_point) by output dtype, from the op's output range ([0, 1] or [-1, 1]).
_UNIT = {torch.quint8: (1.0 / 256.0, 0), torch.qint8: (1.0 / 256.0, -128)}
_SYMMETRIC = {torch.quint8: (2.0 / 256.0, 128), torch.qint8: (2.0 / 256.0, 0)}
_FIXED_RANGES: dict[Any, dict[torch.dtype, tuple[float, int]]] = {
    nn.Sigmoid: _UNIT, torch.sigmoid: _UNIT, F.sigmoid: _UNIT, "sigmoid": _UNIT, "sigmoid_": _UNIT,
    nn.Hardsigmoid: _UNIT, F.hardsigmoid: _UNIT,
    nn.Tanh: _SYMMETRIC, torch.tanh: _SYMMETRIC, F.tanh: _SYMMETRIC, "tanh": _SYMMETRIC,
    "tanh_": _SYMMETRIC,
}


def op_kind(op: Any) -> OpKind | None:
    """The kind of ``op`` (a module type, function, or method name), or None if the FX flow
    leaves it in float."""
    if isinstance(op, str):
        return _METHODS.get(op)
    if isinstance(op, type):
        return _MODULES.get(op)
    return _FUNCTIONS.get(op)


def fixed_qparams_for(op: Any, dtype: torch.dtype) -> tuple[float, int] | None:
    """(scale, zero_point) that a fixed-qparams op's quantized kernel produces in ``dtype``,
    or None (softmax has no such kernel: it is lowered as a module, or stays float)."""
    return _FIXED_RANGES.get(op, {}).get(dtype)
