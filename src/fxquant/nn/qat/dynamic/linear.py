"""QAT ``Linear`` for dynamic quantization: activations are fake-quantized with parameters
chosen afresh on every batch, which needs a memoryless activation observer."""

from __future__ import annotations

from typing import Any

from fxquant.nn.qat.linear import Linear as _QATLinear
from fxquant.nn.qat.validation import QATModuleError
from fxquant.qconfig.properties import activation_is_memoryless

__all__ = ["Linear"]


class Linear(_QATLinear):
    """QAT ``Linear`` for a model that will be quantized dynamically.

    Raises:
        QATModuleError: if the qconfig's activation observer keeps a running range
            (dynamic quantization sees each batch alone: use a moving-average observer with
            ``averaging_constant=1``, e.g. ``fxquant.default_dynamic_qat_qconfig``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        qconfig: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, qconfig, device, dtype)
        if not activation_is_memoryless(qconfig):
            raise QATModuleError(
                "qat.dynamic.Linear needs a memoryless activation observer (a moving-average "
                "observer with averaging_constant=1, as in default_dynamic_qat_qconfig): "
                "dynamic quantization picks each batch's range afresh"
            )
