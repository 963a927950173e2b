"""Quantized batch norm fused with ReLU: ``BNReLU2d`` / ``BNReLU3d``
(``torch.ops.quantized.batch_norm{2,3}d_relu``)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fxquant.nn.intrinsic import modules as nni
from fxquant.nn.quantized.batchnorm import BatchNorm2d, BatchNorm3d

__all__ = ["BNReLU2d", "BNReLU3d"]


class BNReLU2d(BatchNorm2d):
    """``relu(batch_norm(x))`` on (N, C, H, W) quantized input."""

    _FLOAT_MODULE: ClassVar[Any] = nni.BNReLU2d
    _OP = torch.ops.quantized.batch_norm2d_relu

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return super().forward(input)

    def _get_name(self) -> str:
        return "QuantizedBNReLU2d"


class BNReLU3d(BatchNorm3d):
    """``relu(batch_norm(x))`` on (N, C, D, H, W) quantized input."""

    _FLOAT_MODULE: ClassVar[Any] = nni.BNReLU3d
    _OP = torch.ops.quantized.batch_norm3d_relu

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return super().forward(input)

    def _get_name(self) -> str:
        return "QuantizedBNReLU3d"
