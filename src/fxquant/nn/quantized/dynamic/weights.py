"""Weight handling shared by the dynamic modules: which weight observer a qconfig gives, and
packing a (quantized or float) weight with its bias for the dynamic kernels."""

from __future__ import annotations

from typing import Any

import torch

from fxquant.nn.quantized.utils import quantize_weight
from fxquant.qconfig.defaults import default_dynamic_qconfig

__all__ = [
    "DYNAMIC_WEIGHT_DTYPES",
    "DynamicDTypeError",
    "dynamic_weight_ctr",
    "dynamic_weight_observer",
    "pack_weight_bias",
    "quantize_dynamic_weight",
]

DYNAMIC_WEIGHT_DTYPES = (torch.qint8, torch.float16)


class DynamicDTypeError(TypeError, AssertionError):
    """A module or qconfig that dynamic quantization cannot handle.

    Also an ``AssertionError``, which is what upstream raises, so existing ``except``
    clauses keep working after migrating.
    """


def dynamic_weight_ctr(qconfig: Any) -> Any:
    """The weight observer constructor of ``qconfig``, ``default_dynamic_qconfig``'s when
    ``qconfig`` or its weight is ``None``."""
    return getattr(qconfig, "weight", None) or default_dynamic_qconfig.weight


def dynamic_weight_observer(qconfig: Any, owner: str) -> Any:
    """A fresh weight observer from :func:`dynamic_weight_ctr`; its dtype must be ``qint8``
    or ``float16``."""
    observer = dynamic_weight_ctr(qconfig)()
    if observer.dtype not in DYNAMIC_WEIGHT_DTYPES:
        raise DynamicDTypeError(
            f"{owner}: dynamic quantization stores weights as torch.qint8 or torch.float16, "
            f"but the qconfig's weight observer has dtype {observer.dtype}; use "
            f"default_dynamic_qconfig or float16_dynamic_qconfig"
        )
    return observer


def quantize_dynamic_weight(
    weight: torch.Tensor, weight_ctr: Any, dtype: torch.dtype
) -> torch.Tensor:
    """The weight as the dynamic kernels take it: observed with a fresh observer from
    ``weight_ctr`` and quantized (qint8), or as float32 (float16 packing converts it)."""
    if dtype != torch.qint8:
        return weight.float()
    observer = weight_ctr()
    observer(weight)
    return quantize_weight(weight.float(), observer)


def pack_weight_bias(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> Any:
    """Pack for ``linear_dynamic`` (qint8: a quantized weight) or ``linear_dynamic_fp16``
    (float16: a float weight)."""
    if dtype == torch.qint8:
        return torch.ops.quantized.linear_prepack(weight, bias)
    return torch.ops.quantized.linear_prepack_fp16(weight, bias)
