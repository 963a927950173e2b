"""``Quantize`` and ``DeQuantize``: what ``QuantStub`` / ``DeQuantStub`` become after convert."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxquant.nn._errors import QuantizedInputError
from fxquant.nn.quantized.utils import FromFloatError

__all__ = ["DeQuantize", "Quantize"]


class Quantize(nn.Module):
    """Quantize a float tensor per tensor with fixed ``scale``, ``zero_point`` and ``dtype``.

    >>> q = Quantize(0.5, 2, torch.quint8)
    >>> q(torch.tensor([1.0, -1.0])).int_repr()
    tensor([4, 0], dtype=torch.uint8)
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: torch.dtype,
        factory_kwargs: dict[str, Any] | None = None,
    ) -> None:
        factory_kwargs = dict(factory_kwargs or {})
        super().__init__()
        int_kwargs = {k: v for k, v in factory_kwargs.items() if k != "dtype"}
        self.register_buffer("scale", torch.tensor([scale], **factory_kwargs))
        self.register_buffer("zero_point", torch.tensor([zero_point], dtype=torch.long, **int_kwargs))
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.is_quantized:
            raise QuantizedInputError(
                f"{self._get_name()} quantizes float tensors but got a quantized tensor "
                f"({x.dtype}); remove the duplicate QuantStub or dequantize first"
            )
        return torch.quantize_per_tensor(x, float(self.scale), int(self.zero_point), self.dtype)

    @staticmethod
    def from_float(mod: Any, use_precomputed_fake_quant: bool = False) -> Quantize:
        """Build from an observed ``QuantStub`` (its ``activation_post_process`` qparams)."""
        observer = getattr(mod, "activation_post_process", None)
        if observer is None:
            raise FromFloatError(
                f"Quantize.from_float: {type(mod).__name__} has no activation_post_process "
                f"observer; run prepare() and calibrate before convert()"
            )
        scale, zero_point = observer.calculate_qparams()
        return Quantize(float(scale), int(zero_point), observer.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, zero_point={self.zero_point}, dtype={self.dtype}"


class DeQuantize(nn.Module):
    """Dequantize a quantized tensor back to float."""

    def forward(self, xq: torch.Tensor) -> torch.Tensor:
        return xq.dequantize()

    @staticmethod
    def from_float(mod: Any, use_precomputed_fake_quant: bool = False) -> DeQuantize:
        """Build from a ``DeQuantStub`` (nothing to read from it)."""
        return DeQuantize()
