"""``torchao.quantization.pt2e._affine_quantization`` layout: the block-wise affine
observers, their vocabulary (mapping type, zero-point domain, granularities) and the affine
primitives with torchao's signatures.

The observers and ``choose_qparams_affine_with_min_max`` are fxquant's one implementation
(:mod:`fxquant.observers.affine`, :mod:`fxquant.observers.affine_variants`,
:mod:`fxquant.numerics.blockwise`); :func:`quantize_affine` and :func:`dequantize_affine`
adapt torchao's argument order (``zero_point_domain`` instead of a ``None`` zero point) to
:mod:`fxquant.numerics.affine`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fxquant.numerics import affine as _affine
from fxquant.numerics.blockwise import FLOAT8_DTYPES, choose_qparams_affine_with_min_max
from fxquant.observers.affine import (
    AffineQuantizedMinMaxObserver,
    AffineQuantizedObserverBase,
    MappingType,
    TorchAODType,
    ZeroPointDomain,
)
from fxquant.observers.affine_variants import (
    AffineQuantizedMovingAverageMinMaxObserver,
    AffineQuantizedPlaceholderObserver,
)
from fxquant.observers.granularity import (
    Granularity,
    PerAxis,
    PerBlock,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    get_block_size,
)

__all__ = [
    "FP8_TYPES",
    "AffineQuantizedMinMaxObserver",
    "AffineQuantizedMovingAverageMinMaxObserver",
    "AffineQuantizedObserverBase",
    "AffineQuantizedPlaceholderObserver",
    "Granularity",
    "MappingType",
    "PerAxis",
    "PerBlock",
    "PerGroup",
    "PerRow",
    "PerTensor",
    "PerToken",
    "TorchAODType",
    "ZeroPointDomain",
    "choose_qparams_affine_with_min_max",
    "dequantize_affine",
    "get_block_size",
    "quantize_affine",
]

# The float8 formats affine quantization targets (symmetric mapping only).
FP8_TYPES = FLOAT8_DTYPES


def _zero_point_for(
    zero_point: torch.Tensor | None, zero_point_domain: ZeroPointDomain | None, fn: str
) -> torch.Tensor | None:
    if zero_point_domain is ZeroPointDomain.FLOAT:
        raise NotImplementedError(
            f"{fn}: a float zero point (ZeroPointDomain.FLOAT) is not supported; use "
            "ZeroPointDomain.INT (integer zero point) or ZeroPointDomain.NONE"
        )
    if zero_point_domain in (None, ZeroPointDomain.NONE):
        return None
    return zero_point


def quantize_affine(
    input: torch.Tensor,
    block_size: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    output_dtype: torch.dtype,
    quant_min: int | None = None,
    quant_max: int | None = None,
    zero_point_domain: ZeroPointDomain | None = ZeroPointDomain.INT,
) -> torch.Tensor:
    """Quantize ``input`` block-wise: ``clamp(round(x * (1 / scale)) + zero_point, quant_min,
    quant_max)`` in ``output_dtype``'s storage (:func:`fxquant.numerics.affine.quantize_affine`).
    ``ZeroPointDomain.NONE`` (or ``None``) ignores ``zero_point``.

    >>> quantize_affine(torch.tensor([[0.5, -1.0]]), (1, 2), torch.tensor(0.01),
    ...                 torch.tensor(0), torch.int8)
    tensor([[  50, -100]], dtype=torch.int8)
    """
    zp = _zero_point_for(zero_point, zero_point_domain, "quantize_affine")
    return _affine.quantize_affine(input, block_size, scale, zp, output_dtype, quant_min, quant_max)


def dequantize_affine(
    input: torch.Tensor,
    block_size: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    input_dtype: torch.dtype,
    quant_min: int | None = None,
    quant_max: int | None = None,
    zero_point_domain: ZeroPointDomain | None = ZeroPointDomain.INT,
    *,
    output_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(q - zero_point) * scale`` block-wise, as ``output_dtype``
    (:func:`fxquant.numerics.affine.dequantize_affine`). ``quant_min``/``quant_max`` are
    accepted for torchao's signature; the integers are taken as they are."""
    del quant_min, quant_max
    zp = _zero_point_for(zero_point, zero_point_domain, "dequantize_affine")
    return _affine.dequantize_affine(
        input, block_size, scale, zp, input_dtype, output_dtype=output_dtype
    )
