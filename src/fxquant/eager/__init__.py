"""Eager-mode quantization: ``torch.ao.quantization``'s module-swapping flow.

Mark the quantized region with :class:`QuantStub` / :class:`DeQuantStub`, set ``qconfig``
attributes, optionally fuse (:func:`fuse_modules`), then :func:`prepare` -> calibrate ->
:func:`convert` (or :func:`prepare_qat` -> train -> :func:`convert`, or
:func:`quantize_dynamic` in one call). Modules are swapped by type through the tables of
:mod:`fxquant.eager.mappings`.

* :mod:`~fxquant.eager.stubs`: ``QuantStub``, ``DeQuantStub``, ``QuantWrapper``;
* :mod:`~fxquant.eager.propagate`: ``propagate_qconfig_``;
* :mod:`~fxquant.eager.prepare`: ``prepare``, ``prepare_qat``, ``add_quant_dequant``;
* :mod:`~fxquant.eager.convert`: ``convert``, ``swap_module``;
* :mod:`~fxquant.eager.quantize`: ``quantize``, ``quantize_qat``, ``quantize_dynamic``,
  ``default_eval_fn``;
* :mod:`~fxquant.eager.fusion` and :mod:`~fxquant.eager.fuser_methods`: the fusion API;
* :mod:`~fxquant.eager.mappings`: the module mappings and their getters;
* :mod:`~fxquant.eager.unused_qconfig`: the report of qconfigs that quantize nothing.

Example::

    model.qconfig = fxquant.get_default_qconfig("x86")
    prepared = fxquant.prepare(fxquant.fuse_modules(model.eval(), [["conv", "bn", "relu"]]))
    for x in calibration_batches:
        prepared(x)
    quantized = fxquant.convert(prepared)
"""

from fxquant.eager.convert import convert, swap_module
from fxquant.eager.custom_modules import get_default_custom_config_dict
from fxquant.eager.errors import EagerModeError
from fxquant.eager.fuser_methods import (
    MatchAllNode,
    NoFuserMethodError,
    Pattern,
    fuse_conv_bn,
    fuse_conv_bn_relu,
    fuse_convtranspose_bn,
    fuse_linear_bn,
    get_fuser_method,
    get_fuser_method_new,
)
from fxquant.eager.fusion import fuse_known_modules, fuse_modules, fuse_modules_qat
from fxquant.eager.mappings import (
    NoQuantizedModuleError,
    get_combined_dict,
    get_default_compare_output_module_list,
    get_default_dynamic_quant_module_mappings,
    get_default_dynamic_sparse_quant_module_mappings,
    get_default_float_to_quantized_operator_mappings,
    get_default_qat_module_mappings,
    get_default_qconfig_propagation_list,
    get_default_static_quant_module_mappings,
    get_default_static_quant_reference_module_mappings,
    get_default_static_sparse_quant_module_mappings,
    get_dynamic_quant_module_class,
    get_embedding_qat_module_mappings,
    get_embedding_static_quant_module_mappings,
    get_quantized_operator,
    get_static_quant_module_class,
    no_observer_set,
)
from fxquant.eager.prepare import add_quant_dequant, prepare, prepare_qat
from fxquant.eager.propagate import propagate_qconfig_
from fxquant.eager.quant_type import QuantType
from fxquant.eager.quantize import default_eval_fn, quantize, quantize_dynamic, quantize_qat
from fxquant.eager.stubs import DeQuantStub, QuantStub, QuantWrapper
from fxquant.eager.unused_qconfig import UnusedQConfig, find_unused_qconfigs
from fxquant.eager.weight_qparams import get_qparam_dict

__all__ = [
    "DeQuantStub",
    "EagerModeError",
    "MatchAllNode",
    "NoFuserMethodError",
    "NoQuantizedModuleError",
    "Pattern",
    "QuantStub",
    "QuantType",
    "QuantWrapper",
    "UnusedQConfig",
    "add_quant_dequant",
    "convert",
    "default_eval_fn",
    "find_unused_qconfigs",
    "fuse_conv_bn",
    "fuse_conv_bn_relu",
    "fuse_convtranspose_bn",
    "fuse_known_modules",
    "fuse_linear_bn",
    "fuse_modules",
    "fuse_modules_qat",
    "get_combined_dict",
    "get_default_compare_output_module_list",
    "get_default_custom_config_dict",
    "get_default_dynamic_quant_module_mappings",
    "get_default_dynamic_sparse_quant_module_mappings",
    "get_default_float_to_quantized_operator_mappings",
    "get_default_qat_module_mappings",
    "get_default_qconfig_propagation_list",
    "get_default_static_quant_module_mappings",
    "get_default_static_quant_reference_module_mappings",
    "get_default_static_sparse_quant_module_mappings",
    "get_dynamic_quant_module_class",
    "get_embedding_qat_module_mappings",
    "get_embedding_static_quant_module_mappings",
    "get_fuser_method",
    "get_fuser_method_new",
    "get_qparam_dict",
    "get_quantized_operator",
    "get_static_quant_module_class",
    "no_observer_set",
    "prepare",
    "prepare_qat",
    "propagate_qconfig_",
    "quantize",
    "quantize_dynamic",
    "quantize_qat",
    "swap_module",
]
