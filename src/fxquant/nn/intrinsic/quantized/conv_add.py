"""Quantized ``Conv2d`` fused with an addition (and ReLU): ``conv2d(x) + extra`` in one kernel
(``torch.ops.quantized.conv2d_add`` / ``conv2d_add_relu``; onednn engine only)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.intrinsic import modules as nni
from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.conv import Conv2d

__all__ = ["ConvAdd2d", "ConvAddReLU2d"]


class ConvAdd2d(Conv2d):
    """``conv2d(input) + extra_input``; both inputs quantized."""

    _FLOAT_MODULE: ClassVar[Any] = nni.ConvAdd2d
    _OP = packed_kernel(torch.ops.quantized.conv2d_add.default)

    def forward(  # type: ignore[override]  # the fused add takes a second input
        self, input: torch.Tensor, extra_input: torch.Tensor
    ) -> torch.Tensor:
        input = self._prepare_input(input)
        check_quantized_input(self, extra_input, arg="extra_input")
        return type(self)._OP(input, extra_input, self._packed_params, self.scale, self.zero_point)

    def _get_name(self) -> str:
        return "QuantizedConvAdd2d"


class ConvAddReLU2d(ConvAdd2d):
    """``relu(conv2d(input) + extra_input)``; both inputs quantized."""

    _FLOAT_MODULE: ClassVar[Any] = nni.ConvAddReLU2d
    _OP = packed_kernel(torch.ops.quantized.conv2d_add_relu.default)

    def _get_name(self) -> str:
        return "QuantizedConvAddReLU2d"
