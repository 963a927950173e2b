"""Configuration: which observers quantize which part of a model.

* :mod:`~fxquant.qconfig.qconfig`: ``QConfig``, ``QConfigDynamic``, ``QConfigAny``,
  ``qconfig_equals``;
* :mod:`~fxquant.qconfig.defaults`: the ready-made ``default_*qconfig`` objects;
* :mod:`~fxquant.qconfig.backend`: ``get_default_qconfig`` / ``get_default_qat_qconfig``;
* :mod:`~fxquant.qconfig.mapping`: ``QConfigMapping``;
* :mod:`~fxquant.qconfig.resolve`: which mapping entry applies to a module or call;
* :mod:`~fxquant.qconfig.default_mappings`: ``get_default_qconfig_mapping`` and friends;
* :mod:`~fxquant.qconfig.properties`, :mod:`~fxquant.qconfig.device`: helpers for preparation.
"""

from fxquant.qconfig.backend import (
    SUPPORTED_BACKENDS,
    UnsupportedBackendError,
    get_default_qat_qconfig,
    get_default_qconfig,
)
from fxquant.qconfig.default_mappings import (
    FIXED_QPARAMS_OP_TO_OBSERVER,
    get_default_qat_qconfig_dict,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_dict,
    get_default_qconfig_mapping,
    get_symmetric_qnnpack_qat_qconfig_mapping,
    get_symmetric_qnnpack_qconfig_mapping,
)
from fxquant.qconfig.defaults import (
    default_activation_only_qconfig,
    default_debug_qconfig,
    default_dynamic_qat_qconfig,
    default_dynamic_qconfig,
    default_embedding_qat_qconfig,
    default_embedding_qat_qconfig_4bit,
    default_fp32_placeholder_qconfig,
    default_per_channel_qconfig,
    default_per_channel_symmetric_qnnpack_qat_qconfig,
    default_per_channel_symmetric_qnnpack_qconfig,
    default_qat_qconfig,
    default_qat_qconfig_v2,
    default_qconfig,
    default_quint8_placeholder_qconfig,
    default_quint8_weight_qconfig,
    default_reuse_input_qconfig,
    default_symmetric_qnnpack_qat_qconfig,
    default_symmetric_qnnpack_qconfig,
    default_weight_only_qconfig,
    float16_dynamic_qconfig,
    float16_static_qconfig,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
    per_channel_dynamic_qconfig,
)
from fxquant.qconfig.device import qconfig_on_module_device
from fxquant.qconfig.mapping import ObjectType, QConfigMapping
from fxquant.qconfig.output_aware import (
    get_output_aware_qconfig,
    get_output_aware_qconfig_mapping,
    link_output_aware_weight_observers_fx,
    output_aware_weight_observer,
)
from fxquant.qconfig.per_token import (
    PerTokenDynamicObserver,
    is_per_token_dynamic_qconfig,
    per_token_dynamic_qconfig,
    per_token_symmetric_dynamic_qconfig,
)
from fxquant.qconfig.properties import (
    UnsupportedQConfigError,
    activation_is_memoryless,
    assert_valid_qconfig,
    is_reuse_input_qconfig,
)
from fxquant.qconfig.qconfig import QConfig, QConfigAny, QConfigDynamic, qconfig_equals
from fxquant.qconfig.resolve import (
    module_name_object_type_order_qconfig,
    module_name_qconfig,
    module_name_regex_qconfig,
    object_type_qconfig,
    qconfig_for_attribute,
    qconfig_for_function_call,
    qconfig_for_method_call,
    qconfig_for_module_call,
    resolve_qconfig,
)

__all__ = [
    "FIXED_QPARAMS_OP_TO_OBSERVER",
    "SUPPORTED_BACKENDS",
    "ObjectType",
    "PerTokenDynamicObserver",
    "QConfig",
    "QConfigAny",
    "QConfigDynamic",
    "QConfigMapping",
    "UnsupportedBackendError",
    "UnsupportedQConfigError",
    "activation_is_memoryless",
    "assert_valid_qconfig",
    "default_activation_only_qconfig",
    "default_debug_qconfig",
    "default_dynamic_qat_qconfig",
    "default_dynamic_qconfig",
    "default_embedding_qat_qconfig",
    "default_embedding_qat_qconfig_4bit",
    "default_fp32_placeholder_qconfig",
    "default_per_channel_qconfig",
    "default_per_channel_symmetric_qnnpack_qat_qconfig",
    "default_per_channel_symmetric_qnnpack_qconfig",
    "default_qat_qconfig",
    "default_qat_qconfig_v2",
    "default_qconfig",
    "default_quint8_placeholder_qconfig",
    "default_quint8_weight_qconfig",
    "default_reuse_input_qconfig",
    "default_symmetric_qnnpack_qat_qconfig",
    "default_symmetric_qnnpack_qconfig",
    "default_weight_only_qconfig",
    "float16_dynamic_qconfig",
    "float16_static_qconfig",
    "float_qparams_weight_only_qconfig",
    "float_qparams_weight_only_qconfig_4bit",
    "get_default_qat_qconfig",
    "get_default_qat_qconfig_dict",
    "get_default_qat_qconfig_mapping",
    "get_default_qconfig",
    "get_default_qconfig_dict",
    "get_default_qconfig_mapping",
    "get_output_aware_qconfig",
    "get_output_aware_qconfig_mapping",
    "get_symmetric_qnnpack_qat_qconfig_mapping",
    "get_symmetric_qnnpack_qconfig_mapping",
    "is_per_token_dynamic_qconfig",
    "is_reuse_input_qconfig",
    "link_output_aware_weight_observers_fx",
    "module_name_object_type_order_qconfig",
    "module_name_qconfig",
    "module_name_regex_qconfig",
    "object_type_qconfig",
    "output_aware_weight_observer",
    "per_channel_dynamic_qconfig",
    "per_token_dynamic_qconfig",
    "per_token_symmetric_dynamic_qconfig",
    "qconfig_equals",
    "qconfig_for_attribute",
    "qconfig_for_function_call",
    "qconfig_for_method_call",
    "qconfig_for_module_call",
    "qconfig_on_module_device",
    "resolve_qconfig",
]
