"""Quantized convolutions fused with ReLU: ``ConvReLU1d/2d/3d`` (``conv{1,2,3}d_relu``).

``from_float`` takes the fused float module (``fxquant.nn.intrinsic.ConvReLU2d``) or a QAT
``ConvReLU2d`` / ``ConvBnReLU2d`` (batch norm folded first).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fxquant.nn.intrinsic import modules as nni
from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.conv import Conv1d, Conv2d, Conv3d

__all__ = ["ConvReLU1d", "ConvReLU2d", "ConvReLU3d"]


class ConvReLU1d(Conv1d):
    """``relu(conv1d(x))`` in one quantized kernel."""

    _FLOAT_MODULE: ClassVar[Any] = nni.ConvReLU1d
    _OP = packed_kernel(torch.ops.quantized.conv1d_relu.default)

    def _get_name(self) -> str:
        return "QuantizedConvReLU1d"


class ConvReLU2d(Conv2d):
    """``relu(conv2d(x))`` in one quantized kernel."""

    _FLOAT_MODULE: ClassVar[Any] = nni.ConvReLU2d
    _OP = packed_kernel(torch.ops.quantized.conv2d_relu.new)

    def _get_name(self) -> str:
        return "QuantizedConvReLU2d"


class ConvReLU3d(Conv3d):
    """``relu(conv3d(x))`` in one quantized kernel."""

    _FLOAT_MODULE: ClassVar[Any] = nni.ConvReLU3d
    _OP = packed_kernel(torch.ops.quantized.conv3d_relu.new)

    def _get_name(self) -> str:
        return "QuantizedConvReLU3d"
