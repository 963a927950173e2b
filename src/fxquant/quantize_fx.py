"""FX graph mode quantization: ``prepare_fx`` / ``prepare_qat_fx`` → calibrate or train →
``convert_fx`` (a fast int8 model on torch's quantized CPU kernels) or
``convert_to_reference_fx`` (float ops between quantize/dequantize nodes).

Same names and signatures as ``torch.ao.quantization.quantize_fx``. Prepare traces the
model, fuses backend patterns, resolves each node's qconfig, writes the engine's
annotations and lets :func:`fxquant.engine.prepare.prepare_annotated` insert the observers.
Standalone modules (:mod:`fxquant.fx.standalone`) are prepared and converted recursively,
custom modules (:mod:`fxquant.fx.custom_module`, e.g. the quantizable LSTM) are swapped
float → observed → quantized, and ``_equalization_config`` adds input-weight equalization
(:mod:`fxquant.fx.equalization`).

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
from fxquant.backend_config.utils import get_module_to_qat_module
from fxquant.eager.mappings import get_default_qat_module_mappings
from fxquant.engine.prepare import prepare_annotated
from fxquant.fx.annotate import annotate_graph
from fxquant.fx.custom_config import ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig
from fxquant.fx.custom_module import (
    annotate_custom_modules,
    convert_custom_modules,
    custom_float_classes,
    link_users_to_output_observers,
    quantized_results,
    swap_custom_modules,
)
from fxquant.fx.equalization import (
    apply_equalization,
    equalization_qconfigs,
    insert_equalization_observers,
)
from fxquant.fx.example_values import record_example_values
from fxquant.fx.fuse import fuse_graph
from fxquant.fx.lower import lower_to_quantized_modules
from fxquant.fx.node_qconfig import mapping_with_fused_types, node_qconfigs
from fxquant.fx.reference import convert_to_reference_graph
from fxquant.fx.standalone import (
    annotate_standalone_modules,
    convert_standalone_modules,
    keep_reference_outputs_quantized,
    prepare_standalone_modules,
    quantized_outputs,
)
from fxquant.fx.state import FX_STATE_META_KEY, FxObservedState, observed_state
from fxquant.fx.tracer import trace_for_quantization
from fxquant.qconfig.mapping import QConfigMapping
from fxquant.qconfig.output_aware import link_output_aware_weight_observers_fx

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


def _check_custom_config(model: nn.Module, config: PrepareCustomConfig, example_inputs: tuple[Any, ...]) -> None:
    names = {name for name, _ in model.named_modules()}
    for what, listed in (("set_non_traceable_module_names", config.non_traceable_module_names),
                         ("set_standalone_module_name", list(config.standalone_module_names))):
        unknown = sorted(n for n in listed if n not in names)
        if unknown:
            raise ValueError(
                f"PrepareCustomConfig.{what} names modules that {type(model).__name__} does not have: "
                f"{unknown}; use names from model.named_modules()"
            )
    for what, indexes in (("input", config.input_quantized_indexes), ("output", config.output_quantized_indexes)):
        bad = [i for i in indexes if not isinstance(i, int) or i < 0]
        if what == "input":
            bad += [i for i in indexes if isinstance(i, int) and i >= len(example_inputs)]
        if bad:
            raise ValueError(
                f"PrepareCustomConfig {what}_quantized_indexes {sorted(set(bad))} are not valid {what} "
                f"positions (the model takes {len(example_inputs)} example inputs); give 0-based indexes"
            )


def _preserve(source: nn.Module, target: nn.Module, attributes: list[str]) -> None:
    for attr in attributes:
        if not hasattr(source, attr):
            raise AttributeError(f"preserved attribute {attr!r} is not an attribute of {type(source).__name__}")
        setattr(target, attr, getattr(source, attr))


def _swap_qat_modules(gm: GraphModule, qconfigs: dict[Any, Any], backend_config: Any) -> None:
    # the eager QAT table, extended by the backend config's own float -> QAT entries (e.g.
    # embeddings), as upstream's prepare_qat_fx swaps
    table: dict[Any, Any] = {
        **get_default_qat_module_mappings(),
        **{k: v for k, v in get_module_to_qat_module(backend_config).items() if isinstance(k, type)},
    }
    for node, qconfig in qconfigs.items():
        if node.op != "call_module" or qconfig is None:
            continue
        module = gm.get_submodule(str(node.target))
        qat_class: Any = table.get(type(module))
        if qat_class is None:
            continue
        module.qconfig = qconfig  # from_float reads it
        gm.add_submodule(str(node.target), qat_class.from_float(module))


def _custom_config(custom: Any) -> PrepareCustomConfig:
    if isinstance(custom, dict):
        return PrepareCustomConfig.from_dict(custom)
    if custom is not None and not isinstance(custom, PrepareCustomConfig):
        raise TypeError(f"prepare_custom_config must be a PrepareCustomConfig or dict, got {type(custom).__name__}")
    return custom or PrepareCustomConfig()


def _prepare(
    model: nn.Module, qconfig_mapping: Any, example_inputs: tuple[Any, ...], custom: Any,
    equalization: Any, backend_config: Any, *, is_qat: bool,
) -> GraphModule:
    mapping = _as_mapping(qconfig_mapping)
    config = _custom_config(custom)
    _check_module_names(model, mapping)
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of forward's arguments, got {type(example_inputs).__name__}")
    _check_custom_config(model, config, example_inputs)
    backend_config = backend_config or get_native_backend_config()
    leaf_names = [*config.non_traceable_module_names, *config.standalone_module_names]
    leaf_classes = [*config.non_traceable_module_classes, *config.standalone_module_classes,
                    *custom_float_classes(config.float_to_observed_mapping)]
    gm = trace_for_quantization(model, leaf_names, leaf_classes)
    # the graph's code is regenerated once, by prepare_annotated, unless a standalone module
    # needs the fused model to run first (to capture its inputs)
    has_standalone = bool(config.standalone_module_names or config.standalone_module_classes)
    fuse_graph(gm, is_qat=is_qat, backend_config=backend_config, recompile=has_standalone)
    record_example_values(gm, example_inputs)
    qconfigs = node_qconfigs(gm, mapping_with_fused_types(gm, mapping))
    if is_qat:
        _swap_qat_modules(gm, qconfigs, backend_config)
    eq_qconfigs = equalization_qconfigs(gm, equalization) if equalization is not None else {}

    def prepare_submodule(sub: nn.Module, sm_mapping: Any, inputs: tuple[Any, ...], sm_custom: Any,
                          sm_backend: Any) -> GraphModule:
        return _prepare(sub, sm_mapping, inputs, sm_custom, None, sm_backend, is_qat=is_qat)

    standalone = prepare_standalone_modules(gm, qconfigs, config, backend_config, example_inputs,
                                            prepare_submodule)
    custom_nodes = swap_custom_modules(gm, qconfigs, config.float_to_observed_mapping)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    arriving_quantized = {placeholders[i] for i in config.input_quantized_indexes}
    arriving_quantized |= set(quantized_results(custom_nodes)) | set(quantized_outputs(standalone))
    special = set(custom_nodes) | set(standalone)
    result = annotate_graph(gm, {n: q for n, q in qconfigs.items() if n not in special}, backend_config,
                            arriving_quantized)
    custom_sites = annotate_custom_modules(custom_nodes, qconfigs, arriving_quantized)
    standalone_sites = annotate_standalone_modules(standalone, qconfigs, arriving_quantized)
    link_users_to_output_observers([*custom_nodes, *standalone], arriving_quantized)
    prepare_annotated(gm, is_qat=is_qat)
    if not is_qat and not eq_qconfigs:  # output-aware weight observers read their layer's input
        link_output_aware_weight_observers_fx(gm, result.weighted_qconfigs)
    equalization_sites = insert_equalization_observers(gm, eq_qconfigs, set(result.weighted_qconfigs)) \
        if eq_qconfigs else {}
    _preserve(model, gm, config.preserved_attributes)
    gm.meta[FX_STATE_META_KEY] = FxObservedState(
        is_qat=is_qat, weighted_qconfigs=result.weighted_qconfigs,
        left_in_float=result.left_in_float, preserved_attributes=list(config.preserved_attributes),
        input_quantized_indexes=list(config.input_quantized_indexes),
        output_quantized_indexes=list(config.output_quantized_indexes),
        custom_modules=custom_sites, standalone_modules=standalone_sites, equalization=equalization_sites,
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

    ``prepare_custom_config`` adds standalone modules, custom module classes,
    non-traceable modules, quantized input/output indexes and preserved attributes;
    ``_equalization_config`` (a QConfigMapping of
    :class:`~fxquant.fx._equalize.EqualizationQConfig`) adds input-weight equalization of
    linear/conv layers.

    ``example_inputs`` give each node's shape and dtype; for models made of common layers and
    ops these are inferred without running the model (see :mod:`fxquant.fx.example_values`).

    Raises ``FxTraceError`` (module and line named) if the model cannot be traced,
    ``ExampleInputError`` (node named) if ``example_inputs`` do not fit the model,
    ``ValueError`` for module names in the mapping or the custom config that the model does
    not have.
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
    fuse_graph(gm, is_qat=model.training, backend_config=backend_config)
    _preserve(model, gm, config.preserved_attributes)
    return gm


def _convert(graph_module: GraphModule, custom: Any, *, reference: bool) -> GraphModule:
    state = observed_state(graph_module)
    config = ConvertCustomConfig.from_dict(custom) if isinstance(custom, dict) else custom or ConvertCustomConfig()
    gm = graph_module
    convert_standalone_modules(gm, state.standalone_modules,
                               lambda sub: _convert(sub, None, reference=reference))
    if state.custom_modules.modules:
        convert_custom_modules(gm, state.custom_modules, config.observed_to_quantized_mapping)
    if state.equalization:
        apply_equalization(gm, state.equalization)
    gm = convert_to_reference_graph(gm, state)
    if reference:
        keep_reference_outputs_quantized(gm, state.output_quantized_indexes)
    else:
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
    quantized CPU kernels with pre-packed weights. Converts in place and returns the model.

    ``convert_custom_config`` maps observed custom module classes to quantized ones
    (``set_observed_to_quantized_mapping``); the quantizable LSTM / MultiheadAttention
    default to their quantized classes."""
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
