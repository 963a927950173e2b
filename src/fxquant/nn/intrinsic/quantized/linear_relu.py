"""Quantized ``Linear`` fused with its activation: ``LinearReLU``, ``LinearLeakyReLU``
(onednn), ``LinearTanh`` (onednn) — one kernel each, the activation applied before the output
is requantized."""

from __future__ import annotations

from typing import Any

import torch

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.intrinsic import modules as nni
from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.linear import Linear

__all__ = ["LinearLeakyReLU", "LinearReLU", "LinearTanh"]

_LINEAR_RELU = packed_kernel(torch.ops.quantized.linear_relu.default)
_LINEAR_LEAKY_RELU = packed_kernel(torch.ops.quantized.linear_leaky_relu.default)
_LINEAR_TANH = packed_kernel(torch.ops.quantized.linear_tanh.default)


class LinearReLU(Linear):
    """``relu(linear(x))`` in one kernel (``torch.ops.quantized.linear_relu``)."""

    _FLOAT_MODULE: Any = nni.LinearReLU

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.qint8
    ) -> None:
        super().__init__(in_features, out_features, bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, x)
        return _LINEAR_RELU(x, self._packed_params._packed_params, self.scale, self.zero_point)

    def _get_name(self) -> str:
        return "QuantizedLinearReLU"


class LinearLeakyReLU(Linear):
    """``leaky_relu(linear(x), negative_slope)`` in one kernel (onednn engine)."""

    _FLOAT_MODULE: Any = nni.LinearLeakyReLU

    def __init__(
        self,
        in_features: int,
        out_features: int,
        negative_slope: float,
        bias: bool = True,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__(in_features, out_features, bias, dtype)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, x)
        return _LINEAR_LEAKY_RELU(
            x, self._packed_params._packed_params, self.scale, self.zero_point,
            self.negative_slope,
        )

    def _get_name(self) -> str:
        return "QuantizedLinearLeakyReLU"

    @classmethod
    def _from_parts(
        cls, linear: Any, qweight: torch.Tensor, follower: Any = None
    ) -> Any:
        if follower is None:
            raise TypeError(
                "LinearLeakyReLU needs the fused LeakyReLU to read its negative_slope; pass a "
                "LinearLeakyReLU(linear, leaky_relu) fused module"
            )
        qlinear = cls(
            int(linear.in_features), int(linear.out_features),
            float(follower.negative_slope),
        )
        qlinear.set_weight_bias(qweight, linear.bias)
        return qlinear


class LinearTanh(Linear):
    """``tanh(linear(x))`` in one kernel (onednn engine)."""

    _FLOAT_MODULE: Any = nni.LinearTanh

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.qint8
    ) -> None:
        super().__init__(in_features, out_features, bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, x)
        return _LINEAR_TANH(x, self._packed_params._packed_params, self.scale, self.zero_point)

    def _get_name(self) -> str:
        return "QuantizedLinearTanh"
