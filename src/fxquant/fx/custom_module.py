"""Custom modules in FX graph mode (upstream: ``float_to_observed_custom_module_class`` /
``observed_to_quantized_custom_module_class``), e.g. ``nn.LSTM`` →
``fxquant.nn.quantizable.LSTM`` → ``fxquant.nn.quantized.LSTM``.

A custom module stays one call in the graph (tracing does not enter it).

* prepare: the float module gets its qconfig and is swapped for
  ``ObservedClass.from_float(module)``; its float tensor inputs are observed (sharing the
  producer's output observer when there is one) and a tensor output gets an output observer.
  Which inputs are quantized is registered per observed class
  (:func:`register_quantized_inputs`): every float tensor input by default, only
  ``query``/``key``/``value`` for the quantizable ``MultiheadAttention`` (its masks stay
  float, as its quantized form expects; upstream's FX flow accepts only the three positional
  inputs).
  A module returning a tuple (the LSTM's ``(out, (h, c))``) observes itself inside: its
  tensor results (the ``getitem`` leaves) arrive quantized for their users.
* convert: the quantized class comes from the convert custom config, else from eager mode's
  defaults (quantizable → quantized LSTM / MultiheadAttention); the module's inputs become
  quantized tensors (``torch.quantize_per_tensor`` with
  the input observers' parameters), the module is swapped for
  ``QuantizedClass.from_observed(observed)`` (with the output observer attached as
  ``activation_post_process``, as upstream does) and every quantized result is dequantized
  for its float users (a tuple result read whole, e.g. ``return self.attn(x, x, x)``,
  through :func:`dequantize_nested`).

The input/output helpers here also serve standalone modules (:mod:`fxquant.fx.standalone`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.eager.custom_modules import get_default_custom_config_dict
from fxquant.eager.quant_type import QuantType
from fxquant.engine.observer_kinds import checked_qparams, decide, is_observer_module
from fxquant.engine.plan import is_tensor_node
from fxquant.nn.quantizable.activation import MultiheadAttention as QuantizableMultiheadAttention
from fxquant.pt2e.quantizer.quantizer import QuantizationSpec, SharedQuantizationSpec
from fxquant.pt2e.quantizer.utils import (
    annotate_input_qspec_map,
    annotate_output_qspec,
    get_annotation,
)
from fxquant.qconfig.qconfig import QConfigAny

__all__ = [
    "CustomModuleError",
    "CustomModuleSites",
    "annotate_custom_modules",
    "annotate_inputs",
    "convert_custom_modules",
    "custom_float_classes",
    "dequantize_nested",
    "dequantize_results",
    "feed_quantized_inputs",
    "link_users_to_output_observers",
    "quant_type_of",
    "quantized_inputs",
    "quantized_results",
    "register_quantized_inputs",
    "swap_custom_modules",
]

_STATIC = "static"


class CustomModuleError(TypeError):
    """A custom module configuration that cannot be applied."""


@dataclass
class CustomModuleSites:
    """Names of the custom-module nodes (module path = node target) and of the nodes whose
    results the quantized modules produce as quantized tensors (``getitem`` leaves)."""

    modules: list[str] = field(default_factory=list)
    quantized_results: list[str] = field(default_factory=list)


def quant_type_of(key: Any) -> str:
    """``"static"``, ``"dynamic"``, ``"weight_only"`` or ``"qat"`` for a custom-config key
    (a string or a :class:`QuantType`)."""
    if isinstance(key, QuantType):
        return key.name.lower()
    if isinstance(key, str):
        return key
    raise CustomModuleError(f"custom module quant type must be a string or QuantType, got {key!r}")


def _static_classes(mapping: dict[Any, dict[type, type]]) -> dict[type, type]:
    result: dict[type, type] = {}
    for key, classes in mapping.items():
        quant_type = quant_type_of(key)
        if quant_type != _STATIC:
            raise CustomModuleError(
                f"custom modules with quant type {quant_type!r} are not supported by the FX flow; "
                "use quant_type='static' (calibrated activations)"
            )
        result.update(classes)
    return result


QuantizedInputs = Callable[[Node], list[Node]]
_QUANTIZED_INPUTS: dict[type, QuantizedInputs] = {}


def register_quantized_inputs(observed_class: type) -> Callable[[QuantizedInputs], QuantizedInputs]:
    """Register the function that names the inputs of a call to an ``observed_class`` module
    which its quantized class takes quantized (unregistered classes: every float tensor
    input). Returns the function unchanged.

    >>> @register_quantized_inputs(MyObservedModule)
    ... def _data_only(node):
    ...     return [node.args[0]]
    """

    def register(function: QuantizedInputs) -> QuantizedInputs:
        _QUANTIZED_INPUTS[observed_class] = function
        return function

    return register


@register_quantized_inputs(QuantizableMultiheadAttention)
def _attention_inputs(node: Node) -> list[Node]:
    """``query``, ``key`` and ``value`` (positional or keyword); the masks stay float."""
    names = ("query", "key", "value")
    values = [node.args[i] if len(node.args) > i else node.kwargs.get(name) for i, name in enumerate(names)]
    return list(dict.fromkeys(v for v in values if isinstance(v, Node)))


def quantized_inputs(node: Node) -> list[Node]:
    """The inputs of the custom-module call ``node`` that its quantized module takes quantized."""
    gm = node.graph.owning_module
    assert gm is not None, "custom-module nodes belong to a GraphModule"
    function = _QUANTIZED_INPUTS.get(type(gm.get_submodule(str(node.target))))
    return function(node) if function is not None else list(node.all_input_nodes)


def custom_float_classes(float_to_observed: dict[Any, dict[type, type]]) -> list[type]:
    """The float custom module classes (tracing keeps them as leaves)."""
    return list(_static_classes(float_to_observed))


def _is_float_tensor(node: Any) -> bool:
    return isinstance(node, Node) and is_tensor_node(node) and node.meta["val"].is_floating_point()


def _tensor_leaves(node: Node) -> list[Node]:
    """The ``getitem`` nodes that pull tensors out of ``node``'s (nested) tuple result."""
    leaves: list[Node] = []
    for user in node.users:
        if user.op == "call_function" and user.target is operator.getitem:
            leaves.extend([user] if is_tensor_node(user) else _tensor_leaves(user))
    return leaves


def swap_custom_modules(
    gm: GraphModule, qconfigs: dict[Node, QConfigAny], float_to_observed: dict[Any, dict[type, type]]
) -> list[Node]:
    """Swap every float custom module that has a qconfig for its observed class; returns the
    custom-module nodes."""
    table = _static_classes(float_to_observed)
    nodes: list[Node] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or qconfigs.get(node) is None:
            continue
        module = gm.get_submodule(str(node.target))
        observed_class: Any = table.get(type(module))
        if observed_class is None:
            continue
        qconfig = qconfigs[node]
        activation = qconfig.activation()  # type: ignore[union-attr]  # checked not None above
        if getattr(activation, "is_dynamic", False) or getattr(activation, "dtype", None) not in (
            torch.quint8, torch.qint8,
        ):
            raise CustomModuleError(
                f"custom module {node.target} ({type(module).__name__}) needs a static int8 "
                f"activation qconfig, got activation dtype {getattr(activation, 'dtype', None)}; "
                "give it a static qconfig or set its qconfig to None"
            )
        module.qconfig = qconfig  # type: ignore[assignment]  # from_float reads it; nn.Module attrs are typed Tensor | Module
        observed = observed_class.from_float(module)
        if getattr(observed, "qconfig", None) is None:
            observed.qconfig = qconfig  # convert needs it; upstream requires from_float to keep it
        gm.add_submodule(str(node.target), observed)
        nodes.append(node)
    return nodes


def _has_output_spec(node: Node) -> bool:
    annotation = get_annotation(node)
    return annotation is not None and annotation.output_qspec is not None


def annotate_inputs(node: Node, producers: list[Node], qconfig: Any, arriving_quantized: set[Node]) -> None:
    """Observe ``producers`` → ``node`` edges with ``qconfig.activation`` (sharing the
    producer's output observer when it has one)."""
    activation = qconfig.activation()
    for producer in producers:
        if producer in arriving_quantized or not _is_float_tensor(producer):
            continue
        spec = SharedQuantizationSpec(producer) if _has_output_spec(producer) else QuantizationSpec(
            dtype=activation.dtype, observer_or_fake_quant_ctr=qconfig.activation
        )
        annotate_input_qspec_map(node, producer, spec)
    annotation = get_annotation(node)
    if annotation is not None:
        annotation.allow_implicit_sharing = False


def quantized_results(nodes: list[Node]) -> list[Node]:
    """The tensors that the quantized forms of custom-module ``nodes`` with tuple results
    produce quantized (their ``getitem`` leaves)."""
    return [leaf for node in nodes if not _is_float_tensor(node) for leaf in _tensor_leaves(node)]


def annotate_custom_modules(
    nodes: list[Node], qconfigs: dict[Node, QConfigAny], arriving_quantized: set[Node]
) -> CustomModuleSites:
    """Annotate the custom-module ``nodes`` (after the other ops are annotated):
    the :func:`quantized_inputs` observed, a tensor output observed; tuple results arrive
    quantized."""
    sites = CustomModuleSites()
    for node in nodes:
        qconfig = qconfigs[node]
        annotate_inputs(node, quantized_inputs(node), qconfig, arriving_quantized)
        sites.modules.append(str(node.target))
        if _is_float_tensor(node):
            activation = qconfig.activation()  # type: ignore[union-attr]  # custom nodes have one
            annotate_output_qspec(node, QuantizationSpec(
                dtype=activation.dtype, observer_or_fake_quant_ctr=qconfig.activation,  # type: ignore[union-attr]  # idem
            ))
            get_annotation(node).allow_implicit_sharing = False  # type: ignore[union-attr]  # just set
    sites.quantized_results = [leaf.name for leaf in quantized_results(nodes)]
    return sites


def link_users_to_output_observers(nodes: list[Node], arriving_quantized: set[Node]) -> None:
    """Fix the users' annotations once the custom/standalone ``nodes`` are annotated: an edge
    from a node with an output observer reads that observer; a node whose output shared an
    input edge that arrives quantized (so has no observer) keeps a float output."""
    for node in nodes:
        if not _has_output_spec(node):
            continue
        for user in node.users:
            annotation = get_annotation(user)
            if annotation is not None and isinstance(annotation.input_qspec_map.get(node), QuantizationSpec):
                annotation.input_qspec_map[node] = SharedQuantizationSpec(node)
    for value in arriving_quantized:
        for user in value.users:
            annotation = get_annotation(user)
            if annotation is None or value in annotation.input_qspec_map:
                continue
            spec = annotation.output_qspec
            if isinstance(spec, SharedQuantizationSpec) and spec.edge_or_node == (value, user):
                annotation.output_qspec = None


# ---------------------------------------------------------------------------- convert


def _observer_module(gm: GraphModule, node: Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    module = gm.get_submodule(str(node.target))
    return module if is_observer_module(module) else None


def _erase_if_unused(gm: GraphModule, node: Node) -> None:
    if not node.users:
        target = str(node.target)
        gm.graph.erase_node(node)
        if not any(n.op == "call_module" and n.target == target for n in gm.graph.nodes):
            delattr(gm, target)


def _is_dequantize_call(node: Node) -> bool:
    return node.op == "call_method" and node.target == "dequantize"


def _quantized_dtype(observer: nn.Module) -> torch.dtype:
    """The quantized dtype (``torch.quint8``...) an observer quantizes to."""
    dtype = getattr(observer, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        raise CustomModuleError(f"observer {type(observer).__name__} has no quantized dtype")
    return dtype


def feed_quantized_inputs(gm: GraphModule, node: Node, producers: list[Node]) -> None:
    """``node`` reads quantized tensors instead of ``producers``: an observer becomes
    ``torch.quantize_per_tensor`` with its parameters; a ``dequantize`` of a quantized result
    is bypassed."""
    graph = gm.graph
    for arg in producers:
        if _is_dequantize_call(arg):
            node.replace_input_with(arg, arg.args[0])  # type: ignore[arg-type]  # dequantize reads a node
            _erase_if_unused(gm, arg)
            continue
        observer = _observer_module(gm, arg)
        if observer is None:
            continue
        decision = decide(observer)
        source = arg.args[0]
        if decision.kind != "per_tensor":
            raise CustomModuleError(
                f"{node.target} reads {getattr(source, 'name', source)} through a "
                f"{decision.kind} observer; custom and standalone module inputs need per-tensor "
                "static activation observers"
            )
        scale, zero_point = checked_qparams(observer, f"{arg.target} (input of {node.target})")
        with graph.inserting_before(node):
            q = graph.call_function(
                torch.quantize_per_tensor, (source, float(scale), int(zero_point), _quantized_dtype(observer))
            )
        q.meta.update(arg.meta)
        node.replace_input_with(arg, q)
        _erase_if_unused(gm, arg)


def dequantize_results(gm: GraphModule, values: list[Node]) -> None:
    """Insert ``value.dequantize()`` after each of ``values`` (quantized tensors) and make
    their users read it."""
    for value in values:
        if not value.users:
            continue
        with gm.graph.inserting_after(value):
            dq = gm.graph.call_method("dequantize", (value,))
        dq.meta.update(value.meta)
        for user in list(value.users):
            if user is not dq:
                user.replace_input_with(value, dq)


def _quantized_class(observed: nn.Module, observed_to_quantized: dict[Any, dict[type, type]], name: str) -> Any:
    table = _static_classes(observed_to_quantized)
    defaults = get_default_custom_config_dict()["observed_to_quantized_custom_module_class"]
    quantized_class = table.get(type(observed)) or defaults.get(type(observed))
    if quantized_class is None:
        raise CustomModuleError(
            f"custom module {name} was observed as {type(observed).__name__}, but the convert "
            "custom config has no quantized class for it; call ConvertCustomConfig()"
            f".set_observed_to_quantized_mapping({type(observed).__name__}, <QuantizedClass>)"
        )
    return quantized_class


def dequantize_nested(value: Any) -> Any:
    """``value`` with every quantized tensor in it (nested tuples/lists) dequantized."""
    if isinstance(value, torch.Tensor):
        return value.dequantize() if value.is_quantized else value
    if isinstance(value, (tuple, list)):
        return type(value)(dequantize_nested(v) for v in value)
    return value


def _dequantize_tuple_users(gm: GraphModule, node: Node) -> None:
    """Users that read a quantized module's (nested) tuple result whole — e.g. the graph
    output for ``return self.attn(x, x, x)`` — read it with its tensors dequantized (the
    tensors picked out by ``getitem`` are dequantized one by one)."""
    whole_users = [u for u in node.users if not (u.op == "call_function" and u.target is operator.getitem)]
    if whole_users:
        with gm.graph.inserting_after(node):
            dq = gm.graph.call_function(dequantize_nested, (node,))
        dq.meta.update(node.meta)
        for user in whole_users:
            user.replace_input_with(node, dq)
    for user in node.users:
        if user.op == "call_function" and user.target is operator.getitem and not is_tensor_node(user):
            _dequantize_tuple_users(gm, user)


def convert_custom_modules(
    gm: GraphModule, sites: CustomModuleSites, observed_to_quantized: dict[Any, dict[type, type]]
) -> None:
    """Swap each observed custom module for its quantized class, with quantized tensors in
    and dequantized results out (before the engine converts the remaining observers)."""
    by_name = {n.name: n for n in gm.graph.nodes}
    nodes = [n for n in gm.graph.nodes if n.op == "call_module" and str(n.target) in set(sites.modules)]
    for node in nodes:
        observed = gm.get_submodule(str(node.target))
        quantized_class = _quantized_class(observed, observed_to_quantized, str(node.target))
        feed_quantized_inputs(gm, node, quantized_inputs(node))
        output_observer = [u for u in node.users if _observer_module(gm, u) is not None]
        if output_observer:
            observer_node = output_observer[0]
            observed.activation_post_process = gm.get_submodule(str(observer_node.target))
            observer_node.replace_all_uses_with(node)
            _erase_if_unused(gm, observer_node)
            dequantize_results(gm, [node])
        elif not _is_float_tensor(node):
            _dequantize_tuple_users(gm, node)
        gm.add_submodule(str(node.target), quantized_class.from_observed(observed))
    dequantize_results(gm, [by_name[name] for name in sites.quantized_results])
