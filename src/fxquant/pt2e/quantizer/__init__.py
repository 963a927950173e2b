"""The PT2E quantizer interface: specs, annotations, ``Quantizer`` and composition."""

from fxquant.pt2e.quantizer.composable_quantizer import ComposableQuantizer
from fxquant.pt2e.quantizer.float_fallback import FallbackReason, KeepFloatQuantizer
from fxquant.pt2e.quantizer.quantization_config import (
    OperatorConfig,
    OperatorPatternType,
    QuantizationConfig,
    get_bias_qspec,
    get_input_act_qspec,
    get_output_act_qspec,
    get_weight_qspec,
)
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
    "FallbackReason",
    "FixedQParamsQuantizationSpec",
    "KeepFloatQuantizer",
    "OperatorConfig",
    "OperatorPatternType",
    "QuantizationAnnotation",
    "QuantizationConfig",
    "QuantizationSpec",
    "QuantizationSpecBase",
    "Quantizer",
    "SharedQuantizationSpec",
    "get_bias_qspec",
    "get_input_act_qspec",
    "get_module_name_filter",
    "get_output_act_qspec",
    "get_weight_qspec",
]
