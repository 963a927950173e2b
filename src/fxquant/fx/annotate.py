"""Translate per-node qconfigs into the engine's annotations (``node.meta
["quantization_annotation"]``); ``fxquant.engine.prepare.prepare_annotated`` then inserts
the observers.

Placement follows upstream's FX prepare for the ops of :mod:`fxquant.fx.op_table`: an
input edge reuses its producer's output observer when the producer's output is already
quantized to the same dtype (so the engine's implicit sharing is switched off), ``SHARED``
ops observe their output with their input's observer, ``add``/``mul`` followed by ReLU are
one pattern observed after the ReLU, and weights are not graph edges (convert observes them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.backend_config import BackendConfig, backend_supports_qconfig
from fxquant.backend_config.utils import get_pattern_to_dtype_configs
from fxquant.engine.plan import is_tensor_node
from fxquant.fake_quantize import FixedQParamsFakeQuantize
from fxquant.fx.op_table import RELU_FUSABLE_BINARY, RELU_TARGETS, OpKind, op_kind
from fxquant.observers import FixedQParamsObserver
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

__all__ = ["AnnotationResult", "annotate_graph", "node_op"]

_STATIC_DTYPES = (torch.quint8, torch.qint8)


@dataclass
class AnnotationResult:
    """What convert needs to know: the qconfig of each quantized weighted module (by module
    name), and the ops left in float with the reason."""

    weighted_qconfigs: dict[str, QConfigAny] = field(default_factory=dict)
    left_in_float: dict[str, str] = field(default_factory=dict)


def node_op(gm: GraphModule, node: Node) -> Any:
    """The key the op table uses for ``node``: module type, function or method name."""
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target)))
    if node.op in ("call_function", "call_method"):
        return node.target
    return None


def _is_float_tensor(node: Node) -> bool:
    """Only floating-point tensors are quantized (not indices, masks, shapes)."""
    return is_tensor_node(node) and node.meta["val"].is_floating_point()


def _fixed_spec(activation: nn.Module, dtype: torch.dtype) -> FixedQParamsQuantizationSpec:
    scale, zero_point = activation.calculate_qparams()  # type: ignore[operator]  # fixed-qparams module
    return FixedQParamsQuantizationSpec(
        dtype=dtype, scale=float(scale), zero_point=int(zero_point),
        quant_min=int(activation.quant_min), quant_max=int(activation.quant_max),  # type: ignore[arg-type]  # ints
        qscheme=getattr(activation, "qscheme", None),
    )


class _Annotator:
    def __init__(self, gm: GraphModule, qconfigs: dict[Node, QConfigAny], backend_config: BackendConfig) -> None:
        self.gm, self.qconfigs, self.backend_config = gm, qconfigs, backend_config
        self.backend_patterns = set(get_pattern_to_dtype_configs(backend_config))
        self.out_dtype: dict[Node, torch.dtype] = {}
        self.result = AnnotationResult()
        self.fused_relus: set[Node] = set()
        self.first_edge: dict[tuple[Node, torch.dtype], tuple[Node, Node]] = {}
        self.quantized_inputs: set[Node] = set()
        self._activation: dict[int, nn.Module] = {}

    def activation(self, qconfig: Any) -> nn.Module:
        key = id(qconfig.activation)
        if key not in self._activation:
            self._activation[key] = qconfig.activation()
        return self._activation[key]

    def leave_float(self, node: Node, reason: str, *, warn: bool = True) -> None:
        self.result.left_in_float[node.name] = reason
        if warn:
            warnings.warn(f"prepare_fx leaves {node.format_node()} in float: {reason}", stacklevel=4)

    def input_spec(self, producer: Node, node: Node, qconfig: Any, dtype: torch.dtype) -> QuantizationSpecBase:
        if self.out_dtype.get(producer) == dtype:
            return SharedQuantizationSpec(producer)
        first_edge = self.first_edge.setdefault((producer, dtype), (producer, node))
        if first_edge != (producer, node):  # one input observer per value and dtype
            return SharedQuantizationSpec(first_edge)
        return QuantizationSpec(dtype=dtype, observer_or_fake_quant_ctr=qconfig.activation)

    def observe_input(self, node: Node, producer: Any, qconfig: Any, dtype: torch.dtype) -> bool:
        if isinstance(producer, Node) and producer in self.quantized_inputs:
            return True  # arrives quantized: nothing to observe
        if not isinstance(producer, Node) or not _is_float_tensor(producer):
            return False
        annotate_input_qspec_map(node, producer, self.input_spec(producer, node, qconfig, dtype))
        return True

    def observe_output(self, node: Node, spec: QuantizationSpecBase, dtype: torch.dtype) -> None:
        annotate_output_qspec(node, spec)
        self.out_dtype[node] = dtype

    def fused_relu(self, node: Node, qconfig: Any) -> Node | None:
        if len(node.users) != 1 or node.target not in RELU_FUSABLE_BINARY:
            return None
        user = next(iter(node.users))
        if user.args[:1] != (node,) or self.qconfigs.get(user) != qconfig:
            return None
        is_relu = (
            (user.op == "call_function" and user.target in RELU_TARGETS)
            or (user.op == "call_method" and user.target in ("relu", "relu_"))
            or (user.op == "call_module" and type(self.gm.get_submodule(str(user.target))) is nn.ReLU)
        )
        return user if is_relu else None

    def annotate_binary(self, node: Node, qconfig: Any, act_spec: QuantizationSpec, dtype: torch.dtype) -> None:
        """add / mul / matmul: tensor operands observed; the output observed after a fused
        ReLU, or sharing the tensor operand's observer when the other operand is a scalar."""
        observed = [self.observe_input(node, a, qconfig, dtype) for a in node.args[:2]]
        if not any(observed):
            return
        tensors = [a for a, seen in zip(node.args[:2], observed) if seen]
        other = node.args[1 - observed.index(True)] if len(node.args) > 1 else None
        relu = self.fused_relu(node, qconfig)
        if len(tensors) == 1 and isinstance(other, (int, float)):
            assert isinstance(tensors[0], Node)
            self.observe_output(node, SharedQuantizationSpec((tensors[0], node)), dtype)
        elif relu is not None:
            self.fused_relus.add(relu)
            self.observe_output(relu, act_spec, dtype)
        else:
            self.observe_output(node, act_spec, dtype)

    def annotate(self, node: Node) -> None:
        if node in self.fused_relus:
            return
        qconfig = self.qconfigs.get(node)
        kind = op_kind(node_op(self.gm, node))
        if qconfig is None or kind is None or not _is_float_tensor(node):
            return
        activation = self.activation(qconfig)
        dtype = getattr(activation, "dtype", torch.float32)
        if dtype not in _STATIC_DTYPES or getattr(activation, "is_dynamic", False):
            self.leave_float(node, f"activation dtype {dtype} (dynamic or float qconfigs are not "
                                   "supported by prepare_fx yet)")
            return
        support = backend_supports_qconfig(
            self.backend_config, node_op(self.gm, node), qconfig,
            check_weight=kind is OpKind.WEIGHTED, check_bias=False,
        )
        if not support.supported:
            # ops the backend has no pattern for are simply not quantized (as upstream);
            # a qconfig the backend cannot honour for an op it has is worth a warning
            self.leave_float(node, support.reason, warn=node_op(self.gm, node) in self.backend_patterns)
            return
        act_spec = QuantizationSpec(dtype=dtype, observer_or_fake_quant_ctr=qconfig.activation)
        if kind is OpKind.BINARY:
            self.annotate_binary(node, qconfig, act_spec, dtype)
        elif kind is OpKind.SHARED:
            producer = node.args[0] if node.args else None
            if self.observe_input(node, producer, qconfig, dtype):
                assert isinstance(producer, Node)
                self.observe_output(node, SharedQuantizationSpec((producer, node)), dtype)
        elif kind is OpKind.FIXED:
            if not isinstance(activation, (FixedQParamsObserver, FixedQParamsFakeQuantize)):
                self.leave_float(node, "its output range is fixed, but the qconfig's activation "
                                       "is not a FixedQParamsObserver/FixedQParamsFakeQuantize "
                                       "(use get_default_qconfig_mapping())")
                return
            self.observe_input(node, node.args[0] if node.args else None, qconfig, dtype)
            self.observe_output(node, _fixed_spec(activation, dtype), dtype)
        else:  # WEIGHTED, GENERAL
            self.observe_input(node, node.args[0] if node.args else None, qconfig, dtype)
            self.observe_output(node, act_spec, dtype)
            if kind is OpKind.WEIGHTED:
                self.result.weighted_qconfigs[str(node.target)] = qconfig


def annotate_graph(
    gm: GraphModule, qconfigs: dict[Node, QConfigAny], backend_config: BackendConfig,
    quantized_inputs: set[Node] | None = None,
) -> AnnotationResult:
    """Write annotations for every node that ``qconfigs`` quantizes and ``backend_config``
    can run with that qconfig (others are left in float, with a warning giving the reason);
    returns what convert needs. ``quantized_inputs``: placeholders that arrive quantized
    (``input_quantized_indexes``), never observed."""
    annotator = _Annotator(gm, qconfigs, backend_config)
    annotator.quantized_inputs = set(quantized_inputs or ())
    for node in gm.graph.nodes:
        annotator.annotate(node)
    for node in gm.graph.nodes:
        annotation = get_annotation(node)
        if annotation is not None:
            annotation.allow_implicit_sharing = False
    return annotator.result
