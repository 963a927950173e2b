"""Dynamic quantized ``LinearReLU``: float in, float out, ``relu(linear(x))`` in one kernel
(``linear_relu_dynamic`` for int8 weights, ``linear_relu_dynamic_fp16`` for float16)."""

from __future__ import annotations

from typing import Any

import torch

from fxquant.nn._errors import check_float_input
from fxquant.nn.intrinsic import modules as nni
from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.dynamic.linear import Linear as DynamicLinear
from fxquant.nn.quantized.utils import unwrap_fused

__all__ = ["LinearReLU"]

_LINEAR_RELU_DYNAMIC = packed_kernel(torch.ops.quantized.linear_relu_dynamic.default)
_LINEAR_RELU_DYNAMIC_FP16 = packed_kernel(torch.ops.quantized.linear_relu_dynamic_fp16.default)


class LinearReLU(DynamicLinear):
    """Dynamic quantized fused ``LinearReLU`` (int8 or float16 weights)."""

    _FLOAT_MODULE: Any = nni.LinearReLU

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__(in_features, out_features, bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_input(self, x)
        packed = self._packed_params._packed_params
        if self._packed_params.dtype == torch.qint8:
            y = _LINEAR_RELU_DYNAMIC(x, packed, True)
        else:
            y = _LINEAR_RELU_DYNAMIC_FP16(x, packed)
        return y.to(x.dtype)

    def _get_name(self) -> str:
        return "DynamicQuantizedLinearReLU"

    @classmethod
    def from_reference(  # type: ignore[override]  # dynamic: no output qparams, as upstream
        cls, ref_qlinear_relu: Any
    ) -> Any:
        """Build from a fused reference ``LinearReLU`` (its reference ``Linear`` child)."""
        return super().from_reference(unwrap_fused(ref_qlinear_relu))
