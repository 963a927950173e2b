"""Reference quantized ``Linear``: ``F.linear(x, dequant(quant(weight)), bias)`` in float."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxquant.nn.quantized.reference.utils import (
    ReferenceQuantizedModule,
    initialization_skipped,
    skip_initialization,
)

__all__ = ["Linear"]


class Linear(nn.Linear, ReferenceQuantizedModule):
    """Float activations, float weight plus weight qparams.

    In a converted graph it sits between dequantize and quantize nodes; a backend pattern
    ``dq -> linear(ref) -> q`` lowers to the packed quantized ``Linear``.
    """

    _IS_REFERENCE = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        weight_qparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias_, device, dtype)
        self._init_weight_qparams(weight_qparams, device)

    def reset_parameters(self) -> None:
        if not initialization_skipped():  # from_float assigns the float linear's own weight
            super().reset_parameters()

    def _get_name(self) -> str:
        return "QuantizedLinear(Reference)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.get_weight(), self.bias)

    @classmethod
    def from_float(cls, float_linear: Any, weight_qparams: dict[str, Any]) -> Linear:
        """Wrap ``float_linear``'s weight and bias (shared, detached) with ``weight_qparams``."""
        with skip_initialization():
            ref = cls(
                float_linear.in_features, float_linear.out_features, float_linear.bias is not None,
                device=float_linear.weight.device, dtype=float_linear.weight.dtype,
                weight_qparams=weight_qparams,
            )
        ref.weight = nn.Parameter(float_linear.weight.detach())
        if float_linear.bias is not None:
            ref.bias = nn.Parameter(float_linear.bias.detach())
        return ref
