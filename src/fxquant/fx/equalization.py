"""Input-weight equalization in the FX flow (``prepare_fx(..., _equalization_config=...)``).

prepare: for each quantized linear/conv module (plain or fused with ReLU) that the
equalization mapping gives an :class:`~fxquant.fx._equalize.EqualizationQConfig`, an
:class:`~fxquant.fx._equalize._InputEqualizationObserver` is called between the layer's input
quantization observer and the layer (``x → input observer → equalization observer → layer``,
as upstream places it).

convert, before the weights are observed:

1. the weight equalization observer sees the layer's weight; the scale
   ``s = sqrt(weight_range / input_range)`` per input channel is computed;
2. the weight's input columns are multiplied by ``1 / s``;
3. the input is multiplied by ``s``: folded into the previous layer's output rows and bias
   when the input comes straight (possibly through a ReLU) from another equalized layer,
   otherwise by a ``torch.mul`` with a stored scale before the input's quantize. The input's
   quantization observer gets the scaled range.

Differences from upstream, each fixing a case where upstream's result is wrong: when folding
into the previous layer, the previous layer's output observer gets the scaled range too
(upstream keeps the unscaled one, so scaled outputs are clipped or lose resolution); a ReLU is
recognised by its type, not by "relu" in the node's name, and only folds when it follows an
equalized layer; an input observer shared with other users is not changed for them (the layer
gets its own scaled copy), and a layer output read by others is not folded into.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.engine.observer_kinds import is_observer_module
from fxquant.fx._equalize import (
    EqualizationQConfig,
    _InputEqualizationObserver,
    _WeightEqualizationObserver,
    calculate_equalization_scale,
)
from fxquant.fx.node_qconfig import mapping_with_fused_types, node_qconfigs
from fxquant.nn import intrinsic as nni
from fxquant.qconfig.mapping import QConfigMapping

__all__ = [
    "EqualizationError",
    "apply_equalization",
    "equalization_qconfigs",
    "insert_equalization_observers",
    "supports_equalization",
]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FUSED = (nni.LinearReLU, nni.ConvReLU1d, nni.ConvReLU2d, nni.ConvReLU3d)
_EQ_PREFIX = "_equalization_process_"


class EqualizationError(ValueError):
    """An equalization config that cannot be applied."""


def supports_equalization(module: nn.Module) -> bool:
    """Linear and conv layers, plain or fused with ReLU."""
    return type(module) in _LAYERS or type(module) in _FUSED


def _layer(module: nn.Module) -> Any:
    """The linear/conv layer (first module of a fused one)."""
    return module[0] if type(module) in _FUSED else module  # type: ignore[index]  # fused container


def equalization_qconfigs(gm: GraphModule, equalization: Any) -> dict[Node, EqualizationQConfig]:
    """The equalization qconfig of each node of the traced, fused ``gm`` (nodes without one
    are left out), resolved from ``equalization`` (a QConfigMapping or upstream's dict)."""
    if isinstance(equalization, dict):
        equalization = QConfigMapping.from_dict(equalization)
    if not isinstance(equalization, QConfigMapping):
        raise EqualizationError(
            f"_equalization_config must be a QConfigMapping of EqualizationQConfig, got {type(equalization).__name__}"
        )
    result: dict[Node, EqualizationQConfig] = {}
    for node, qconfig in node_qconfigs(gm, mapping_with_fused_types(gm, equalization)).items():
        if qconfig is None:
            continue
        if not isinstance(qconfig, EqualizationQConfig):
            raise EqualizationError(
                f"_equalization_config gives {node.name} a {type(qconfig).__name__}; it takes "
                "EqualizationQConfig entries (e.g. fxquant.fx._equalize.default_equalization_qconfig)"
            )
        result[node] = qconfig
    return result


def insert_equalization_observers(
    gm: GraphModule, qconfigs: dict[Node, EqualizationQConfig], quantized_layers: set[str]
) -> dict[str, tuple[str, Any]]:
    """Call an input equalization observer between each equalized layer and its input
    observer (``gm`` already has its observers). Returns observer module name →
    (layer node name, weight equalization observer constructor)."""
    sites: dict[str, tuple[str, Any]] = {}
    for node, qconfig in qconfigs.items():
        if node.op != "call_module" or str(node.target) not in quantized_layers:
            continue
        module = gm.get_submodule(str(node.target))
        if not supports_equalization(module):
            continue
        if getattr(_layer(module), "groups", 1) != 1:
            warnings.warn(f"input-weight equalization skips {node.target}: a grouped conv's weight "
                          "columns are not its input channels", stacklevel=3)
            continue
        obs = node.args[0] if node.args else None
        if not (isinstance(obs, Node) and obs.op == "call_module"
                and is_observer_module(gm.get_submodule(str(obs.target)))):
            continue
        i = 0
        while hasattr(gm, f"{obs.name}{_EQ_PREFIX}{i}"):
            i += 1
        name = f"{obs.name}{_EQ_PREFIX}{i}"
        observer = qconfig.input_activation()
        if isinstance(observer, _InputEqualizationObserver) and isinstance(
            _layer(gm.get_submodule(str(node.target))), nn.Linear
        ):
            observer.set_channel_axis(-1)  # a linear layer's input features are its last axis
        gm.add_submodule(name, observer)
        with gm.graph.inserting_before(node):
            eq_node = gm.graph.call_module(name, (obs,))
        eq_node.meta.update(obs.meta)
        node.replace_input_with(obs, eq_node)
        sites[name] = (node.name, qconfig.weight)
    gm.recompile()
    return sites


def _is_relu(gm: GraphModule, node: Node) -> bool:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))) is nn.ReLU
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _fold_target(gm: GraphModule, obs_node: Node, eq_node: Node, layers: set[str]) -> Node | None:
    """The equalized layer whose output rows can absorb the scale of ``eq_node``: the
    value ``obs_node`` observes comes from it (possibly through a ReLU) and nothing else
    reads that value."""
    if len(obs_node.users) != 1:
        return None
    prev = obs_node.args[0]
    if isinstance(prev, Node) and _is_relu(gm, prev) and len(prev.users) == 1:
        prev = prev.args[0]
    if isinstance(prev, Node) and prev.name in layers and len(prev.users) == 1:
        return prev
    return None


def _scale_input_observer(observer: nn.Module, eq_observer: _InputEqualizationObserver) -> None:
    low, high = eq_observer.calculate_scaled_minmax()
    if low is not None and high is not None:
        observer.min_val = low
        observer.max_val = high


def _reshape(scale: torch.Tensor, axis: int, like: torch.Tensor) -> torch.Tensor:
    shape = [1] * like.ndim
    shape[axis] = like.size(axis)
    return scale.reshape(shape)


def _scale_weights(layer: Any, scale: torch.Tensor | None, next_scale: torch.Tensor | None) -> None:
    weight = layer.weight
    if scale is not None:
        weight = torch.mul(weight, torch.reciprocal(_reshape(scale.reshape(-1), 1, weight)))
    if next_scale is not None:
        weight = torch.mul(weight, _reshape(next_scale.reshape(-1), 0, weight))
        if layer.bias is not None:
            layer.bias = nn.Parameter(torch.mul(layer.bias, next_scale.reshape(-1)).detach())
    layer.weight = nn.Parameter(weight.detach())


def _insert_scaling(gm: GraphModule, eq_node: Node, obs_node: Node, eq_observer: _InputEqualizationObserver) -> None:
    """``x → mul(scale) → input observer (scaled range) → layer``; the observer is copied
    when others read it unscaled."""
    x = obs_node.args[0]
    assert isinstance(x, Node)
    i = 0
    while hasattr(gm, f"{x.name}_equalization_scale{i}"):
        i += 1
    scale_name = f"{x.name}_equalization_scale{i}"
    gm.register_buffer(scale_name, eq_observer.equalization_scale.detach().clone())
    observer = gm.get_submodule(str(obs_node.target))
    graph = gm.graph
    with graph.inserting_before(obs_node if len(obs_node.users) == 1 else eq_node):
        scale_node = graph.get_attr(scale_name)
        mul = graph.call_function(torch.mul, (x, scale_node))
        mul.meta.update(x.meta)
        if len(obs_node.users) == 1:
            obs_node.replace_input_with(x, mul)
            target = obs_node
        else:
            own = copy.deepcopy(observer)
            own_name = f"{eq_node.target}_input_observer"
            gm.add_submodule(own_name, own)
            target = graph.call_module(own_name, (mul,))
            target.meta.update(obs_node.meta)
            observer = own
    _scale_input_observer(observer, eq_observer)
    eq_node.replace_all_uses_with(target)


def apply_equalization(gm: GraphModule, sites: dict[str, tuple[str, Any]]) -> None:
    """Compute the equalization scales of the calibrated ``gm``, scale the weights and the
    inputs, and remove the equalization observers (before the weights are observed)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    scales: dict[str, torch.Tensor | None] = {}
    for eq_name, (layer_name, weight_ctor) in sites.items():
        eq_observer = gm.get_submodule(eq_name)
        weight_observer = weight_ctor()
        if not isinstance(eq_observer, _InputEqualizationObserver) or not isinstance(
            weight_observer, _WeightEqualizationObserver
        ):
            raise EqualizationError(
                f"{layer_name}: the equalization qconfig must build _InputEqualizationObserver and "
                "_WeightEqualizationObserver (use input_equalization_observer / weight_equalization_observer)"
            )
        layer = _layer(gm.get_submodule(str(nodes[layer_name].target)))
        weight_observer(layer.weight.detach())
        scale = calculate_equalization_scale(eq_observer, weight_observer)
        eq_observer.set_equalization_scale(scale)
        scales[layer_name] = None if scale.numel() == 1 and bool(scale == 1) else scale
    next_scales: dict[str, torch.Tensor] = {}
    layer_names = set(scales)
    for eq_name, (layer_name, _) in sites.items():
        eq_node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == eq_name)
        eq_observer = gm.get_submodule(eq_name)
        assert isinstance(eq_observer, _InputEqualizationObserver)
        obs_node = eq_node.args[0]
        assert isinstance(obs_node, Node)
        if scales[layer_name] is None:
            eq_node.replace_all_uses_with(obs_node)
        elif (prev := _fold_target(gm, obs_node, eq_node, layer_names)) is not None:
            next_scales[prev.name] = eq_observer.equalization_scale
            _scale_input_observer(gm.get_submodule(str(obs_node.target)), eq_observer)
            eq_node.replace_all_uses_with(obs_node)
        else:
            _insert_scaling(gm, eq_node, obs_node, eq_observer)
        gm.graph.erase_node(eq_node)
        delattr(gm, eq_name)
    for layer_name, layer_scale in scales.items():
        layer = _layer(gm.get_submodule(str(nodes[layer_name].target)))
        _scale_weights(layer, layer_scale, next_scales.get(layer_name))
    gm.graph.lint()
    gm.recompile()
