"""FX graph mode quantization: ``prepare_fx`` / ``prepare_qat_fx`` → calibrate or train →
``convert_fx`` (a fast int8 model on torch's quantized CPU kernels) or
``convert_to_reference_fx`` (float ops between quantize/dequantize nodes).

Same names and signatures as ``torch.ao.quantization.quantize_fx``. Prepare traces the
model, fuses backend patterns, resolves each node's qconfig, writes the engine's
annotations and lets :func:`fxquant.engine.prepare.prepare_annotated` insert the observers.

Example::

    from fxquant import get_default_qconfig_mapping
    from fxquant.quantize_fx import convert_fx, prepare_fx

    prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("x86"), (x,))
    for batch in calibration_batches:
        prepared(batch)
    quantized = convert_fx(prepared)
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn
from torch.fx import GraphModule

from fxquant.backend_config import get_native_backend_config
from fxquant.eager.mappings import get_default_qat_module_mappings
from fxquant.engine.prepare import prepare_annotated
from fxquant.fx.annotate import annotate_graph
from fxquant.fx.custom_config import ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig
from fxquant.fx.example_values import record_example_values
from fxquant.fx.fuse import fuse_graph
from fxquant.fx.lower import lower_to_quantized_modules
from fxquant.fx.node_qconfig import mapping_with_fused_types, node_qconfigs
from fxquant.fx.reference import convert_to_reference_graph
from fxquant.fx.state import FX_STATE_META_KEY, FxObservedState, observed_state
from fxquant.fx.tracer import trace_for_quantization
from fxquant.qconfig.mapping import QConfigMapping

__all__ = ["convert_fx", "convert_to_reference_fx", "fuse_fx", "prepare_fx", "prepare_qat_fx"]


def _as_mapping(qconfig_mapping: QConfigMapping | dict[str, Any] | None) -> QConfigMapping:
    if qconfig_mapping is None:
        return QConfigMapping()
    if isinstance(qconfig_mapping, dict):
        warnings.warn("passing a qconfig dict is deprecated; pass a QConfigMapping", FutureWarning,
                      stacklevel=3)
        return QConfigMapping.from_dict(qconfig_mapping)
    if not isinstance(qconfig_mapping, QConfigMapping):
        raise TypeError(f"qconfig_mapping must be a QConfigMapping, got {type(qconfig_mapping).__name__}")
    return qconfig_mapping


def _check_module_names(model: nn.Module, mapping: QConfigMapping) -> None:
    names = {name for name, _ in model.named_modules()}
    unknown = [n for n in mapping.module_name_qconfigs if n not in names]
    unknown += [n for n, *_ in mapping.module_name_object_type_order_qconfigs if n not in names]
    if unknown:
        raise ValueError(
            f"QConfigMapping names modules that {type(model).__name__} does not have: "
            f"{sorted(set(unknown))}; use names from model.named_modules()"
        )


def _check_supported(config: PrepareCustomConfig, equalization: Any) -> None:
    unsupported = {
        "standalone modules": config.standalone_module_names or config.standalone_module_classes,
        "custom module classes": config.float_to_observed_mapping,
        "_equalization_config": equalization,
    }
    used = [what for what, value in unsupported.items() if value]
    if used:
        raise NotImplementedError(f"prepare_fx does not support {', '.join(used)} yet")


def _preserve(source: nn.Module, target: nn.Module, attributes: list[str]) -> None:
    for attr in attributes:
        if not hasattr(source, attr):
            raise AttributeError(f"preserved attribute {attr!r} is not an attribute of {type(source).__name__}")
        setattr(target, attr, getattr(source, attr))


def _swap_qat_modules(gm: GraphModule, qconfigs: dict[Any, Any]) -> None:
    table = get_default_qat_module_mappings()
    for node, qconfig in qconfigs.items():
        if node.op != "call_module" or qconfig is None:
            continue
        module = gm.get_submodule(str(node.target))
        qat_class: Any = table.get(type(module))
        if qat_class is None:
            continue
        module.qconfig = qconfig  # from_float reads it
        gm.add_submodule(str(node.target), qat_class.from_float(module))


def _prepare(
    model: nn.Module, qconfig_mapping: Any, example_inputs: tuple[Any, ...], custom: Any,
    equalization: Any, backend_config: Any, *, is_qat: bool,
) -> GraphModule:
    mapping = _as_mapping(qconfig_mapping)
    config = PrepareCustomConfig.from_dict(custom) if isinstance(custom, dict) else custom or PrepareCustomConfig()
    _check_supported(config, equalization)
    _check_module_names(model, mapping)
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of forward's arguments, got {type(example_inputs).__name__}")
    gm = trace_for_quantization(model, config.non_traceable_module_names, config.non_traceable_module_classes)
    fuse_graph(gm, is_qat=is_qat)
    record_example_values(gm, example_inputs)
    qconfigs = node_qconfigs(gm, mapping_with_fused_types(gm, mapping))
    if is_qat:
        _swap_qat_modules(gm, qconfigs)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    quantized_inputs = {placeholders[i] for i in config.input_quantized_indexes}
    result = annotate_graph(gm, qconfigs, backend_config or get_native_backend_config(), quantized_inputs)
    prepare_annotated(gm, is_qat=is_qat)
    _preserve(model, gm, config.preserved_attributes)
    gm.meta[FX_STATE_META_KEY] = FxObservedState(
        is_qat=is_qat, weighted_qconfigs=result.weighted_qconfigs,
        left_in_float=result.left_in_float, preserved_attributes=list(config.preserved_attributes),
        input_quantized_indexes=list(config.input_quantized_indexes),
        output_quantized_indexes=list(config.output_quantized_indexes),
    )
    return gm


def prepare_fx(
    model: nn.Module,
    qconfig_mapping: QConfigMapping | dict[str, Any],
    example_inputs: tuple[Any, ...],
    prepare_custom_config: PrepareCustomConfig | dict[str, Any] | None = None,
    _equalization_config: Any = None,
    backend_config: Any = None,
) -> GraphModule:
    """Trace ``model`` (in eval mode), fuse, and insert observers where ``qconfig_mapping``
    asks; run calibration data through the result, then :func:`convert_fx` it.

    Raises ``FxTraceError`` (module and line named) if the model cannot be traced,
    ``ExampleInputError`` if ``example_inputs`` do not run through it, ``ValueError`` for
    module names in the mapping that the model does not have.
    """
    if model.training:
        warnings.warn("prepare_fx is for post-training quantization; call model.eval() first "
                      "(or use prepare_qat_fx)", stacklevel=2)
    return _prepare(model, qconfig_mapping, example_inputs, prepare_custom_config,
                    _equalization_config, backend_config, is_qat=False)


def prepare_qat_fx(
    model: nn.Module,
    qconfig_mapping: QConfigMapping | dict[str, Any],
    example_inputs: tuple[Any, ...],
    prepare_custom_config: PrepareCustomConfig | dict[str, Any] | None = None,
    backend_config: Any = None,
) -> GraphModule:
    """Like :func:`prepare_fx` for quantization-aware training: fused conv/linear modules
    become QAT modules and fake-quantizers replace observers. Train, then convert."""
    return _prepare(model, qconfig_mapping, example_inputs, prepare_custom_config, None,
                    backend_config, is_qat=True)


def fuse_fx(
    model: nn.Module,
    fuse_custom_config: FuseCustomConfig | dict[str, Any] | None = None,
    backend_config: Any = None,
) -> GraphModule:
    """Trace ``model`` and fuse conv/linear/batch-norm/ReLU chains (batch norm folded in eval
    mode, ``ConvBn`` modules in train mode)."""
    config = FuseCustomConfig.from_dict(fuse_custom_config) if isinstance(fuse_custom_config, dict) \
        else fuse_custom_config or FuseCustomConfig()
    gm = trace_for_quantization(model, [], [])
    fuse_graph(gm, is_qat=model.training)
    _preserve(model, gm, config.preserved_attributes)
    return gm


def _convert(graph_module: GraphModule, custom: Any, *, reference: bool) -> GraphModule:
    state = observed_state(graph_module)
    config = ConvertCustomConfig.from_dict(custom) if isinstance(custom, dict) else custom or ConvertCustomConfig()
    if config.observed_to_quantized_mapping:
        raise NotImplementedError("convert_fx does not support custom module classes yet")
    gm = convert_to_reference_graph(graph_module, state)
    if not reference:
        gm = lower_to_quantized_modules(gm, state.output_quantized_indexes)
    del gm.meta[FX_STATE_META_KEY]
    _preserve(graph_module, gm, config.preserved_attributes)
    return gm


def convert_fx(
    graph_module: GraphModule,
    convert_custom_config: ConvertCustomConfig | dict[str, Any] | None = None,
    _remove_qconfig: bool = True,
    qconfig_mapping: QConfigMapping | dict[str, Any] | None = None,
    backend_config: Any = None,
) -> GraphModule:
    """Turn a calibrated (or trained) prepared model into an int8 model running torch's
    quantized CPU kernels with pre-packed weights. Converts in place and returns the model."""
    del _remove_qconfig, qconfig_mapping, backend_config  # accepted for upstream compatibility
    return _convert(graph_module, convert_custom_config, reference=False)


def convert_to_reference_fx(
    graph_module: GraphModule,
    convert_custom_config: ConvertCustomConfig | dict[str, Any] | None = None,
    _remove_qconfig: bool = True,
    qconfig_mapping: QConfigMapping | dict[str, Any] | None = None,
    backend_config: Any = None,
) -> GraphModule:
    """The reference quantized model: float ops on ``quantized_decomposed``
    quantize/dequantize nodes, with reference conv/linear modules (weights quantized and
    dequantized). Converts in place and returns the model."""
    del _remove_qconfig, qconfig_mapping, backend_config  # accepted for upstream compatibility
    return _convert(graph_module, convert_custom_config, reference=True)
