"""Dynamic quantized fused modules (``torch.ao.nn.intrinsic.quantized.dynamic``): ``LinearReLU``."""

from __future__ import annotations

from fxquant.nn.intrinsic.quantized.dynamic.linear_relu import LinearReLU

__all__ = ["LinearReLU"]
