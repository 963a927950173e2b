"""Quantize / dequantize of a reference module's float weight, given its weight qparams.

The math is :mod:`fxquant.numerics`', in the rounding form that matches the torch kernel
upstream's reference modules call for each case (bit for bit):

============================  =========================================  ===============
qscheme                       upstream kernel                            numerics form
============================  =========================================  ===============
per_tensor_affine             ``torch.quantize_per_tensor``              fused
per_channel_affine            ``torch.quantize_per_channel``             product
per_channel_affine_float_qp.  ``torch.quantize_per_channel`` (float zp)  fused
``is_decomposed=True``        ``quantized_decomposed.quantize_per_*``    product
============================  =========================================  ===============
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fxquant.numerics import block_size_for, dequantize_affine, quantize_affine

__all__ = ["WeightQParams"]

PER_CHANNEL_QSCHEMES = (torch.per_channel_affine, torch.per_channel_affine_float_qparams)
QUANTIZED_DTYPES = (torch.quint8, torch.qint8, torch.quint4x2, torch.qint32)
# quantized_decomposed ops take the plain integer dtype
DECOMPOSED_DTYPE = {torch.quint8: torch.uint8, torch.qint8: torch.int8, torch.qint32: torch.int32}


@dataclass(frozen=True, kw_only=True)
class WeightQParams:
    """How one weight is quantized: scheme, dtype, scale / zero point (per tensor or per
    channel along ``axis``), and whether the decomposed graph ops (with an explicit
    ``[quant_min, quant_max]``) are the reference."""

    qscheme: torch.qscheme | None
    dtype: torch.dtype
    scale: torch.Tensor
    zero_point: torch.Tensor
    axis: int = 0
    is_decomposed: bool = False
    quant_min: int | None = None
    quant_max: int | None = None

    def is_integer(self) -> bool:
        """Whether the weight is stored as integers (not float, not a float16 cast)."""
        if self.qscheme is None or self.dtype not in QUANTIZED_DTYPES:
            return False
        return not (self.is_decomposed and self.dtype not in DECOMPOSED_DTYPE)

    def _block_size(self, weight: torch.Tensor) -> tuple[int, ...]:
        if self.qscheme in PER_CHANNEL_QSCHEMES:
            return block_size_for(weight.shape, axis=self.axis)
        return tuple(weight.shape)

    def integers(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight's integers (in the dtype's unpacked storage dtype)."""
        # torch.quantize_per_* always use the dtype's full range; the decomposed ops take one
        qmin, qmax = (self.quant_min, self.quant_max) if self.is_decomposed else (None, None)
        fused = not self.is_decomposed and self.qscheme != torch.per_channel_affine
        return quantize_affine(
            weight, self._block_size(weight), self.scale, self.zero_point, self.dtype, qmin, qmax,
            fused=fused,
        )

    def fake_quantize(self, weight: torch.Tensor) -> torch.Tensor:
        """``dequantize(quantize(weight))``: what the quantized kernel computes with."""
        if not self.is_integer():
            return weight
        return dequantize_affine(
            self.integers(weight), self._block_size(weight), self.scale, self.zero_point,
            self.dtype, output_dtype=weight.dtype,
        )

    def quantize(self, weight: torch.Tensor) -> torch.Tensor:
        """The quantized weight: a quantized tensor (integers when ``is_decomposed``; a
        float16 tensor for float16 weights)."""
        if self.is_decomposed:
            if not self.is_integer():
                raise ValueError(
                    f"cannot quantize a {self.dtype} weight with qscheme {self.qscheme} in "
                    f"decomposed form"
                )
            return self.integers(weight).to(DECOMPOSED_DTYPE[self.dtype])
        if self.dtype == torch.float16:
            return weight.to(torch.float16)
        if self.qscheme == torch.per_tensor_affine and self.dtype != torch.quint4x2:
            return torch.quantize_per_tensor(
                weight, float(self.scale), int(self.zero_point), self.dtype
            )
        if self.qscheme in PER_CHANNEL_QSCHEMES and self.dtype in QUANTIZED_DTYPES:
            return torch.quantize_per_channel(
                weight, self.scale, self.zero_point, self.axis, self.dtype
            )
        raise ValueError(f"unsupported weight dtype {self.dtype} with qscheme {self.qscheme}")
