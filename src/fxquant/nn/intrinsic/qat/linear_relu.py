"""QAT ``LinearReLU``: a QAT linear whose output goes through ``relu``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import fxquant.nn.intrinsic.modules.fused as nni
import fxquant.nn.qat as nnqat

__all__ = ["LinearReLU"]


class LinearReLU(nnqat.Linear, nni._FusedModule):
    """QAT ``Linear`` followed by ``ReLU``; the weight is fake-quantized in forward.

    >>> m = LinearReLU(4, 3, qconfig=fxquant.get_default_qat_qconfig("x86"))
    >>> bool((m(torch.randn(2, 4)) >= 0).all())
    True
    """

    _FLOAT_MODULE: type[nn.Module] = nni.LinearReLU

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, qconfig: Any = None
    ) -> None:
        super().__init__(in_features, out_features, bias, qconfig)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(F.linear(input, self.weight_fake_quant(self.weight), self.bias))

    def to_float(self) -> nn.Module:
        """A fused float ``LinearReLU`` with copies of the trained parameters."""
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        linear.weight = nn.Parameter(self.weight.detach())
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach())
        return nni.LinearReLU(linear, nn.ReLU())
