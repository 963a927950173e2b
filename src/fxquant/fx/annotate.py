"""Translate per-node qconfigs into the engine's annotations (``node.meta
["quantization_annotation"]``) for the patterns of a ``BackendConfig``;
``fxquant.engine.prepare.prepare_annotated`` then inserts the observers.

Every node is matched against the backend's patterns (:mod:`fxquant.fx.match`); a match is
quantized when its nodes share one qconfig and one of the pattern's dtype configs honours it
(otherwise it stays in float, with a warning naming the op and the reason). Placement then
follows upstream's FX prepare:

* the root op's tensor inputs are observed; an input edge reuses its producer's output
  observer when that output is already quantized to the same dtype, and unobserved producers
  get one observer however many consumers read them (the engine's implicit sharing is off);
* the pattern's last node is observed by its own observer
  (``OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT``), with the fixed parameters the dtype config
  demands (sigmoid, tanh, ...), or by its input's observer
  (``OUTPUT_SHARE_OBSERVER_WITH_INPUT``: pooling, reshapes, ``cat`` — all of whose inputs
  share one observer); ``INPUT_OUTPUT_NOT_OBSERVED`` ops are left alone;
* module weights are not graph edges (convert observes them); a functional's weight (the
  argument the pattern's ``input_type_to_index`` names) is observed by ``qconfig.weight``;
* float16 static qconfigs (``PlaceholderObserver(dtype=float16)``) are placed like int8
  ones wherever the backend has a float16 dtype config (upstream's
  ``get_test_only_legacy_native_backend_config``: linear, binary, fixed- and shared-qparams
  ops); convert casts to float16 and back and keeps the weighted modules as reference
  modules (there is no float16 kernel to lower to);
* a reuse-input qconfig (``ReuseInputObserver``) inserts no observer: the output shares
  the first input's observer when that input is quantized;
* dynamic qconfigs observe the root's input with the dynamic observer and leave the output
  in float; weight-only qconfigs (embeddings) observe nothing in the graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.backend_config import (
    BackendConfig,
    ObservationType,
    dtype_config_supports,
    dtype_configs_support,
)
from fxquant.backend_config.dtype_config import DTypeConfig
from fxquant.backend_config.utils import (
    get_qat_module_classes,
    get_root_module_to_quantized_reference_module,
    pattern_to_human_readable,
)
from fxquant.engine.plan import is_tensor_node
from fxquant.fx.match import PatternMatch, find_matches, sorted_pattern_configs
from fxquant.nn.intrinsic import _FusedModule
from fxquant.observers import ReuseInputObserver
from fxquant.pt2e.quantizer.quantizer import (
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from fxquant.pt2e.quantizer.utils import (
    annotate_input_qspec_map,
    annotate_output_qspec,
    get_annotation,
)
from fxquant.qconfig.qconfig import QConfigAny

__all__ = [
    "QUANT_MODE_META_KEY",
    "WEIGHTED_MODULES_META_KEY",
    "AnnotationResult",
    "QuantMode",
    "annotate_graph",
    "node_op",
]

# on the prepared model: weighted module name → (QuantMode, reference class or None)
WEIGHTED_MODULES_META_KEY = "fxquant_fx_weighted_modules"
# on a reference module's call node after convert: its QuantMode
QUANT_MODE_META_KEY = "fxquant_fx_quant_mode"

_STATIC_DTYPES = (torch.quint8, torch.qint8)
_QUANTIZED_WEIGHT_DTYPES = (torch.qint8, torch.quint8, torch.quint4x2, torch.float16)
_DIFFERENT = ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
_SHARED = ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT


class QuantMode:
    """How convert quantizes a weighted module (recorded under ``WEIGHTED_MODULES_META_KEY``)."""

    STATIC = "static"
    DYNAMIC = "dynamic"
    WEIGHT_ONLY = "weight_only"


@dataclass
class AnnotationResult:
    """What convert needs to know: the qconfig of each quantized weighted module (by module
    name), and the ops left in float with the reason."""

    weighted_qconfigs: dict[str, QConfigAny] = field(default_factory=dict)
    left_in_float: dict[str, str] = field(default_factory=dict)


def node_op(gm: GraphModule, node: Node) -> Any:
    """What a pattern names ``node`` by: module type, function or method name."""
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target)))
    if node.op in ("call_function", "call_method"):
        return node.target
    return None


def _is_float_tensor(node: Node) -> bool:
    """Only floating-point tensors are quantized (not indices, masks, shapes)."""
    return is_tensor_node(node) and node.meta["val"].is_floating_point()


def _flat_node_args(args: Any) -> list[Node]:
    out: list[Node] = []
    for a in args:
        if isinstance(a, Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_flat_node_args(a))
    return out


def _fixed_spec(activation: nn.Module, dtype: torch.dtype) -> FixedQParamsQuantizationSpec:
    scale, zero_point = activation.calculate_qparams()  # type: ignore[operator]  # fixed-qparams module
    return FixedQParamsQuantizationSpec(
        dtype=dtype, scale=float(scale), zero_point=int(zero_point),
        quant_min=int(activation.quant_min), quant_max=int(activation.quant_max),  # type: ignore[arg-type]  # ints
        qscheme=getattr(activation, "qscheme", None),
    )


def _describe(match: PatternMatch, backend_config: BackendConfig) -> str:
    return f"pattern {pattern_to_human_readable(match.pattern)} on backend {backend_config.name!r}"


class _Annotator:
    def __init__(self, gm: GraphModule, qconfigs: dict[Node, QConfigAny], backend_config: BackendConfig,
                 quantized_inputs: set[Node]) -> None:
        self.gm, self.qconfigs, self.backend_config = gm, qconfigs, backend_config
        self.quantized_inputs = quantized_inputs
        self.reference_roots = get_root_module_to_quantized_reference_module(backend_config)
        self.qat_classes = set(get_qat_module_classes(backend_config))
        self.out_dtype: dict[Node, torch.dtype] = {}
        self.result = AnnotationResult()
        self.first_edge: dict[tuple[Node, torch.dtype, type], tuple[Node, Node]] = {}
        self._activation: dict[int, nn.Module] = {}
        self.weighted_modules: dict[str, tuple[str, Any]] = {}

    # -- helpers -------------------------------------------------------------------------
    def activation(self, qconfig: Any) -> nn.Module:
        key = id(qconfig.activation)
        if key not in self._activation:
            self._activation[key] = qconfig.activation()
        return self._activation[key]

    def same_qconfig(self, match: PatternMatch) -> bool:
        qconfig = self.qconfigs.get(match.root)
        return all(self.qconfigs.get(n) == qconfig for n in match.nodes)

    def leave_float(self, node: Node, reason: str) -> None:
        self.result.left_in_float[node.name] = reason
        warnings.warn(f"prepare_fx leaves {node.format_node()} in float: {reason}", stacklevel=4)

    def weighted_module(self, node: Node) -> nn.Module | None:
        """The module of ``node`` if convert quantizes its weight (backend's reference roots,
        their QAT and fused forms)."""
        if node.op != "call_module":
            return None
        module = self.gm.get_submodule(str(node.target))
        inner = module[0] if isinstance(module, _FusedModule) else module
        if type(inner) in self.reference_roots or type(module) in self.qat_classes:
            return module
        return None

    def record_weighted(self, node: Node, qconfig: Any, mode: str) -> None:
        module = self.gm.get_submodule(str(node.target))
        inner = module[0] if isinstance(module, _FusedModule) else module
        self.result.weighted_qconfigs[str(node.target)] = qconfig
        self.weighted_modules[str(node.target)] = (mode, self.reference_roots.get(type(inner)))

    def input_type_to_index(self, match: PatternMatch) -> dict[str, int]:
        """Where a functional root keeps its weight / bias: from the backend's config for the
        root op itself (as upstream reads it), else from the matched pattern's."""
        own = self.backend_config._pattern_complex_format_to_config.get(match.root.target) \
            if match.root.op == "call_function" else None
        return own._input_type_to_index if own is not None else match.config._input_type_to_index

    def weight_index(self, match: PatternMatch) -> int | None:
        index = self.input_type_to_index(match).get("weight")
        return index if index is not None and index < len(match.root.args) else None

    def supporting_dtype_config(self, match: PatternMatch, qconfig: Any, check_weight: bool) -> DTypeConfig | None:
        for dtype_config in match.config.dtype_configs:
            if dtype_config_supports(dtype_config, qconfig, check_weight=check_weight, check_bias=False):
                return dtype_config
        return None

    def observation_type(self, match: PatternMatch) -> ObservationType:
        by_count = match.config._num_tensor_args_to_observation_type
        if not by_count:
            return match.config.observation_type
        count = sum(1 for a in match.root.args if isinstance(a, Node) and is_tensor_node(a))
        return by_count.get(count, match.config.observation_type)

    # -- observing ----------------------------------------------------------------------
    def input_spec(self, producer: Node, node: Node, qconfig: Any, dtype: torch.dtype) -> QuantizationSpecBase:
        if self.out_dtype.get(producer) == dtype:
            return SharedQuantizationSpec(producer)
        # one observer per (producer, dtype, observer class), however many consumers read it
        key = (producer, dtype, type(self.activation(qconfig)))
        first_edge = self.first_edge.setdefault(key, (producer, node))
        if first_edge != (producer, node):
            return SharedQuantizationSpec(first_edge)
        return QuantizationSpec(dtype=dtype, observer_or_fake_quant_ctr=qconfig.activation)

    def observe_input(self, node: Node, producer: Any,
                      spec_for: Callable[[Node], QuantizationSpecBase]) -> bool:
        if isinstance(producer, Node) and producer in self.quantized_inputs:
            return True  # arrives quantized: nothing to observe
        if not isinstance(producer, Node) or not _is_float_tensor(producer):
            return False
        annotate_input_qspec_map(node, producer, spec_for(producer))
        return True

    def observe_output(self, node: Node, spec: QuantizationSpecBase, dtype: torch.dtype) -> None:
        annotate_output_qspec(node, spec)
        self.out_dtype[node] = dtype

    def activation_inputs(self, match: PatternMatch) -> list[Node]:
        """The root's tensor arguments that carry activations (not its weight / bias)."""
        skip = {match.root.args[i] for i in self.input_type_to_index(match).values()
                if i < len(match.root.args)}
        return [a for a in _flat_node_args(match.root.args) if a not in skip]

    # -- patterns -----------------------------------------------------------------------
    def annotate(self, match: PatternMatch) -> None:
        root, out = match.root, match.output
        qconfig = self.qconfigs.get(root)
        observation = self.observation_type(match)
        if qconfig is None or observation is ObservationType.INPUT_OUTPUT_NOT_OBSERVED:
            return
        weighted = self.weighted_module(root)
        if not _is_float_tensor(out) and weighted is None:
            return
        check_weight = weighted is not None or self.weight_index(match) is not None
        support = dtype_configs_support(match.config.dtype_configs, qconfig, check_weight=check_weight,
                                        check_bias=False)
        if not support.supported:
            self.leave_float(out, f"{_describe(match, self.backend_config)}: {support.reason}")
            return
        activation = self.activation(qconfig)
        dtype = getattr(activation, "dtype", torch.float32)
        if isinstance(activation, ReuseInputObserver):
            self.annotate_reuse_input(match)
        elif getattr(activation, "is_dynamic", False):
            self.annotate_dynamic(match, qconfig, dtype, weighted)
        elif dtype in _STATIC_DTYPES or dtype == torch.float16:
            self.annotate_static(match, qconfig, dtype, observation, weighted, check_weight)
        else:
            self.annotate_weight_only(match, qconfig, dtype, weighted)

    def annotate_static(self, match: PatternMatch, qconfig: Any, dtype: torch.dtype,
                        observation: ObservationType, weighted: nn.Module | None, check_weight: bool) -> None:
        root, out = match.root, match.output
        if observation is _SHARED:
            self.annotate_shared(match, qconfig, dtype)
            return
        observed = [self.observe_input(root, a, lambda p: self.input_spec(p, root, qconfig, dtype))
                    for a in self.activation_inputs(match)]
        if observed and not any(observed):
            return
        self.observe_functional_weight(match, qconfig)
        dtype_config = self.supporting_dtype_config(match, qconfig, check_weight)
        constraints = dtype_config.output_dtype_with_constraints if dtype_config is not None else None
        if constraints is not None and constraints.scale_exact_match is not None:
            self.observe_output(out, _fixed_spec(self.activation(qconfig), dtype), dtype)
        else:
            self.observe_output(out, QuantizationSpec(dtype=dtype, observer_or_fake_quant_ctr=qconfig.activation),
                                dtype)
        if weighted is not None:
            self.record_weighted(root, qconfig, QuantMode.STATIC)

    def annotate_shared(self, match: PatternMatch, qconfig: Any, dtype: torch.dtype) -> None:
        """All tensor inputs and the output share the first input's observer. For ``cat``,
        an input whose producer's output is already observed keeps that observer, which is
        itself made to share the first one (as upstream re-points it; the producer's own
        input side is not followed)."""
        root, out = match.root, match.output
        inputs = [a for a in self.activation_inputs(match)
                  if a in self.quantized_inputs or _is_float_tensor(a)]
        if not inputs:
            return
        self.observe_input(root, inputs[0], lambda p: self.input_spec(p, root, qconfig, dtype))
        target: Node | tuple[Node, Node] = inputs[0] if self.out_dtype.get(inputs[0]) == dtype \
            else (inputs[0], root)
        for producer in inputs[1:]:
            if producer in self.quantized_inputs:
                continue
            annotation = get_annotation(producer)
            spec = annotation.output_qspec if annotation is not None else None
            if self.out_dtype.get(producer) == dtype and isinstance(spec, (QuantizationSpec, SharedQuantizationSpec)):
                if producer is not target:
                    annotate_output_qspec(producer, SharedQuantizationSpec(target))
                annotate_input_qspec_map(root, producer, SharedQuantizationSpec(producer))
            else:
                annotate_input_qspec_map(root, producer, SharedQuantizationSpec(target))
        self.observe_output(out, SharedQuantizationSpec(target), dtype)

    def annotate_reuse_input(self, match: PatternMatch) -> None:
        """A reuse-input qconfig (``default_reuse_input_qconfig``, e.g. for ``reshape``) has
        no observer of its own: when the first input is already quantized the output reuses
        its observer, otherwise the op stays in float (as upstream's prepare does)."""
        inputs = self.activation_inputs(match)
        first = inputs[0] if inputs else None
        if first is None or first in self.quantized_inputs:
            return
        dtype = self.out_dtype.get(first)
        if dtype is None:
            return
        annotate_input_qspec_map(match.root, first, SharedQuantizationSpec(first))
        self.observe_output(match.output, SharedQuantizationSpec(first), dtype)

    def observe_functional_weight(self, match: PatternMatch, qconfig: Any) -> None:
        index = self.weight_index(match)
        weight = match.root.args[index] if index is not None else None
        if not isinstance(weight, Node) or qconfig.weight is None:
            return
        weight_dtype = getattr(qconfig.weight(), "dtype", torch.float32)
        if weight_dtype in _QUANTIZED_WEIGHT_DTYPES and _is_float_tensor(weight):
            annotate_input_qspec_map(match.root, weight, QuantizationSpec(
                dtype=weight_dtype, observer_or_fake_quant_ctr=qconfig.weight))

    def annotate_dynamic(self, match: PatternMatch, qconfig: Any, dtype: torch.dtype,
                         weighted: nn.Module | None) -> None:
        """Dynamic quantization: only weighted modules; the input is quantized at run time
        (int8) or kept float (float16), the output stays float."""
        root = match.root
        if weighted is None:
            self.leave_float(match.output, f"{_describe(match, self.backend_config)}: dynamic "
                                           "qconfigs quantize modules with weights only (Linear, "
                                           "LSTM, GRU, ...); give this op a static qconfig or None")
            return
        if dtype in _STATIC_DTYPES and root.args and isinstance(root.args[0], Node) \
                and _is_float_tensor(root.args[0]):
            annotate_input_qspec_map(root, root.args[0], QuantizationSpec(
                dtype=dtype, observer_or_fake_quant_ctr=qconfig.activation, is_dynamic=True))
        self.record_weighted(root, qconfig, QuantMode.DYNAMIC)

    def annotate_weight_only(self, match: PatternMatch, qconfig: Any, dtype: torch.dtype,
                             weighted: nn.Module | None) -> None:
        """Float activations: a weight-only qconfig (embeddings) on a weighted module; other
        activation dtypes (bfloat16, ...) have no convert in the FX flow (the op stays float,
        with the reason)."""
        root = match.root
        if dtype != torch.float32:
            self.leave_float(match.output, f"{_describe(match, self.backend_config)}: static "
                                           f"{dtype} activations are not supported by prepare_fx; "
                                           "use an int8 or float16 qconfig")
            return
        if weighted is None:
            self.leave_float(match.output, f"{_describe(match, self.backend_config)}: a weight-only "
                                           "qconfig needs a module with a weight (Embedding, "
                                           "EmbeddingBag, ...)")
            return
        self.record_weighted(root, qconfig, QuantMode.WEIGHT_ONLY)


def annotate_graph(
    gm: GraphModule, qconfigs: dict[Node, QConfigAny], backend_config: BackendConfig,
    quantized_inputs: set[Node] | None = None,
) -> AnnotationResult:
    """Write annotations for every pattern of ``backend_config`` that ``qconfigs`` quantizes
    and the backend can run with that qconfig (others are left in float, with a warning
    giving the reason); returns what convert needs. ``quantized_inputs``: placeholders that
    arrive quantized (``input_quantized_indexes``), never observed."""
    annotator = _Annotator(gm, qconfigs, backend_config, set(quantized_inputs or ()))
    matches = find_matches(gm, sorted_pattern_configs(backend_config), annotator.same_qconfig)
    for node in gm.graph.nodes:
        match = matches.get(node)
        if match is not None and node is match.output:
            annotator.annotate(match)
    for node in gm.graph.nodes:
        annotation = get_annotation(node)
        if annotation is not None:
            annotation.allow_implicit_sharing = False
    gm.meta[WEIGHTED_MODULES_META_KEY] = annotator.weighted_modules
    return annotator.result
