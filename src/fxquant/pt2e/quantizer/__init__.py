"""The PT2E quantizer interface: specs, annotations, ``Quantizer`` and composition."""

from fxquant.pt2e.quantizer.composable_quantizer import ComposableQuantizer
from fxquant.pt2e.quantizer.quantizer import (
    DerivedQuantizationSpec,
    EdgeOrNode,
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    QuantizationSpec,
    QuantizationSpecBase,
    Quantizer,
    SharedQuantizationSpec,
)
from fxquant.pt2e.quantizer.utils import get_module_name_filter

__all__ = [
    "ComposableQuantizer",
    "DerivedQuantizationSpec",
    "EdgeOrNode",
    "FixedQParamsQuantizationSpec",
    "QuantizationAnnotation",
    "QuantizationSpec",
    "QuantizationSpecBase",
    "Quantizer",
    "SharedQuantizationSpec",
    "get_module_name_filter",
]
