"""QAT conv + ReLU: ``ConvReLU1d/2d/3d``, a QAT conv whose output goes through ``relu``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

import fxquant.nn.intrinsic.modules.fused as nni
import fxquant.nn.qat as nnqat

__all__ = ["ConvReLU1d", "ConvReLU2d", "ConvReLU3d"]


class ConvReLU1d(nnqat.Conv1d, nni._FusedModule):
    """QAT ``Conv1d`` followed by ``ReLU``; the weight is fake-quantized in forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvReLU1d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.Conv1d]] = nn.Conv1d
    _FLOAT_BN_MODULE: ClassVar[type[nn.Module] | None] = None
    _FLOAT_RELU_MODULE: ClassVar[type[nn.Module] | None] = nn.ReLU

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        qconfig: Any = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
            qconfig=qconfig,
        )  # fmt: skip

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias))


class ConvReLU2d(nnqat.Conv2d, nni._FusedModule):
    """QAT ``Conv2d`` followed by ``ReLU``; the weight is fake-quantized in forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvReLU2d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.Conv2d]] = nn.Conv2d
    _FLOAT_BN_MODULE: ClassVar[type[nn.Module] | None] = None
    _FLOAT_RELU_MODULE: ClassVar[type[nn.Module] | None] = nn.ReLU

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        qconfig: Any = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
            qconfig=qconfig,
        )  # fmt: skip

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias))


class ConvReLU3d(nnqat.Conv3d, nni._FusedModule):
    """QAT ``Conv3d`` followed by ``ReLU``; the weight is fake-quantized in forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvReLU3d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.Conv3d]] = nn.Conv3d
    _FLOAT_BN_MODULE: ClassVar[type[nn.Module] | None] = None
    _FLOAT_RELU_MODULE: ClassVar[type[nn.Module] | None] = nn.ReLU

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        qconfig: Any = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
            qconfig=qconfig,
        )  # fmt: skip

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias))
