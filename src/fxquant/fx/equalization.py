"""Input-weight equalization in the FX flow (``prepare_fx(..., _equalization_config=...)``).

prepare: for each quantized linear/conv layer — a module (plain or fused with ReLU) or a
functional ``F.linear`` / ``F.conv1d`` / ``F.conv2d`` / ``F.conv3d`` call — that the
equalization mapping gives an :class:`~fxquant.fx._equalize.EqualizationQConfig`, an
:class:`~fxquant.fx._equalize._InputEqualizationObserver` is called between the layer's input
quantization observer and the layer (``x → input observer → equalization observer → layer``,
as upstream places it). A functional layer's weight (a module attribute read by
``get_attr``) also gets a :class:`~fxquant.fx._equalize._WeightEqualizationObserver` after
its weight observer (``weight → weight observer → weight equalization observer → layer``).

convert, before the weights are quantized:

1. the weight equalization observer sees the layer's weight; the scale
   ``s = sqrt(weight_range / input_range)`` per input channel is computed;
2. the weight's input columns are multiplied by ``1 / s`` (a functional layer's weight
   attribute is replaced and its weight observer re-observes it);
3. the input is multiplied by ``s``: folded into the previous layer's output rows and bias
   when the input comes straight (possibly through a ReLU) from another equalized layer,
   otherwise by a ``torch.mul`` with a stored scale before the input's quantize. The input's
   quantization observer gets the scaled range.

Differences from upstream, each fixing a case where upstream's result is wrong: when folding
into the previous layer, the previous layer's output observer gets the scaled range too
(upstream keeps the unscaled one, so scaled outputs are clipped or lose resolution); a ReLU is
recognised by its type, not by "relu" in the node's name, and only folds when it follows an
equalized layer; an input observer shared with other users is not changed for them (the layer
gets its own scaled copy), and a layer output read by others is not folded into. For
functional layers: a weight or bias that is an ``nn.Parameter`` stays one (upstream fails
assigning a tensor to it), the bias is the call's ``bias`` argument (upstream looks for
"bias" in the attribute's name and leaves other biases unscaled), and a weight or bias that
another call also reads is not rescaled (the layer is skipped with a warning, or the scale
is applied by a ``mul`` instead of folding).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
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
    fused_module_supports_equalization,
    nn_module_supports_equalization,
    node_supports_equalization,
)
from fxquant.fx.node_qconfig import mapping_with_fused_types, node_qconfigs
from fxquant.qconfig.mapping import QConfigMapping

__all__ = [
    "EqualizationError",
    "apply_equalization",
    "equalization_qconfigs",
    "insert_equalization_observers",
    "supports_equalization",
]

_EQ_PREFIX = "_equalization_process_"
_GROUPS_INDEX = 6  # F.conv*d(input, weight, bias, stride, padding, dilation, groups)


class EqualizationError(ValueError):
    """An equalization config that cannot be applied."""


def supports_equalization(module: nn.Module) -> bool:
    """Linear and conv layers, plain or fused with ReLU."""
    return nn_module_supports_equalization(module) or fused_module_supports_equalization(module)


def _layer(module: nn.Module) -> Any:
    """The linear/conv layer (first module of a fused one)."""
    return module[0] if fused_module_supports_equalization(module) else module  # type: ignore[index]  # fused container


def _is_functional(node: Node) -> bool:
    """``F.linear`` / ``F.conv1d`` / ``F.conv2d`` / ``F.conv3d`` calls."""
    return node.op == "call_function" and node_supports_equalization(node, {})


def _arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``name`` of a call, given by position ``index`` or by keyword."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _is_observer_node(gm: GraphModule, node: Any) -> bool:
    return isinstance(node, Node) and node.op == "call_module" and is_observer_module(
        gm.get_submodule(str(node.target)))


def _sole_attribute(gm: GraphModule, node: Any, reader: Node) -> bool:
    """``node`` reads a module attribute that only ``reader`` uses (no other ``get_attr``
    of it, and its module is not called), so it may be rescaled."""
    if not (isinstance(node, Node) and node.op == "get_attr" and set(node.users) == {reader}):
        return False
    owner = str(node.target).rpartition(".")[0]
    for other in gm.graph.nodes:
        if other.op == "get_attr" and other.target == node.target and other is not node:
            return False
        if other.op == "call_module" and owner and f"{owner}.".startswith(f"{other.target}."):
            return False
    return True


def _functional_skip_reason(gm: GraphModule, node: Node) -> str | None:
    """Why the functional layer ``node`` cannot be equalized (None: it can; "": it is not
    a statically quantized layer)."""
    weight_obs = _arg(node, 1, "weight")
    if not _is_observer_node(gm, weight_obs):
        return ""  # its weight is not statically quantized: the call is not a quantized layer
    assert isinstance(weight_obs, Node)
    if len(weight_obs.users) != 1 or not _sole_attribute(gm, weight_obs.args[0], weight_obs):
        return "its weight is not a module attribute that only this call reads (rescaling it would change others)"
    if node.target is not F.linear and _arg(node, _GROUPS_INDEX, "groups", 1) != 1:
        return "a grouped conv's weight columns are not its input channels"
    return None


def _skip_reason(gm: GraphModule, node: Node, quantized_layers: set[str]) -> str | None:
    """Why ``node`` gets no equalization (None: it can be equalized; "": it is not a
    quantized linear/conv layer, nothing to warn about)."""
    if _is_functional(node):
        return _functional_skip_reason(gm, node)
    if node.op != "call_module" or str(node.target) not in quantized_layers:
        return ""
    module = gm.get_submodule(str(node.target))
    if not supports_equalization(module):
        return ""
    if getattr(_layer(module), "groups", 1) != 1:
        return "a grouped conv's weight columns are not its input channels"
    return None


def _is_linear(gm: GraphModule, node: Node) -> bool:
    if node.op == "call_function":
        return node.target is F.linear
    return isinstance(_layer(gm.get_submodule(str(node.target))), nn.Linear)


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


def _insert_after(gm: GraphModule, source: Node, user: Node, observer: nn.Module) -> str:
    """``source → observer → user`` (other users of ``source`` keep reading it); returns
    the observer's module name."""
    i = 0
    while hasattr(gm, f"{source.name}{_EQ_PREFIX}{i}"):
        i += 1
    name = f"{source.name}{_EQ_PREFIX}{i}"
    gm.add_submodule(name, observer)
    with gm.graph.inserting_before(user):
        eq_node = gm.graph.call_module(name, (source,))
    eq_node.meta.update(source.meta)
    user.replace_input_with(source, eq_node)
    return name


def insert_equalization_observers(
    gm: GraphModule, qconfigs: dict[Node, EqualizationQConfig], quantized_layers: set[str]
) -> dict[str, tuple[str, Any]]:
    """Call an input equalization observer between each equalized layer and its input
    observer (``gm`` already has its observers); a functional layer also gets a weight
    equalization observer after its weight observer, as upstream places them. Returns input
    observer module name → (layer node name, weight equalization observer constructor for
    a module layer, or the weight observer's module name for a functional one)."""
    sites: dict[str, tuple[str, Any]] = {}
    for node, qconfig in qconfigs.items():
        reason = _skip_reason(gm, node, quantized_layers)
        if reason:
            warnings.warn(f"input-weight equalization skips {node.target if node.op == 'call_module' else node.name}: "
                          f"{reason}", stacklevel=3)
        obs = _arg(node, 0, "input")
        if reason is not None or not _is_observer_node(gm, obs):
            continue
        assert isinstance(obs, Node)
        observer = qconfig.input_activation()
        if isinstance(observer, _InputEqualizationObserver) and _is_linear(gm, node):
            observer.set_channel_axis(-1)  # a linear layer's input features are its last axis
        name = _insert_after(gm, obs, node, observer)
        weight: Any = qconfig.weight
        if _is_functional(node):
            weight_obs = _arg(node, 1, "weight")
            weight = _insert_after(gm, weight_obs, node, qconfig.weight())
        sites[name] = (node.name, weight)
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
    if isinstance(prev, Node) and prev.name in layers and len(prev.users) == 1 and _params(gm, prev).bias_foldable:
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


@dataclass(frozen=True, kw_only=True)
class _Params:
    """Where a layer's weight and bias live, as (owner module, attribute name);
    ``bias_foldable``: the bias may be rescaled (absent, or an attribute only this layer
    reads); ``weight_observer``: a functional layer's weight observer, which must see the
    rescaled weight."""

    weight: tuple[nn.Module, str]
    bias: tuple[nn.Module, str] | None
    bias_foldable: bool
    weight_observer: nn.Module | None


def _attribute(gm: GraphModule, node: Node) -> tuple[nn.Module, str]:
    owner, _, name = str(node.target).rpartition(".")
    return gm.get_submodule(owner), name


def _params(gm: GraphModule, node: Node) -> _Params:
    """The weight and bias of the equalized layer ``node`` (its weight equalization
    observer, if any, already removed)."""
    if node.op == "call_module":
        layer = _layer(gm.get_submodule(str(node.target)))
        bias = (layer, "bias") if layer.bias is not None else None
        return _Params(weight=(layer, "weight"), bias=bias, bias_foldable=True, weight_observer=None)
    weight_obs = _arg(node, 1, "weight")
    assert isinstance(weight_obs, Node) and isinstance(weight_obs.args[0], Node)  # checked by prepare
    bias = _arg(node, 2, "bias")
    foldable = bias is None or _sole_attribute(gm, bias, node)
    return _Params(weight=_attribute(gm, weight_obs.args[0]),
                   bias=_attribute(gm, bias) if isinstance(bias, Node) and foldable else None,
                   bias_foldable=foldable, weight_observer=gm.get_submodule(str(weight_obs.target)))


def _store(owner: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a weight/bias: a parameter stays a parameter, a buffer or plain attribute a
    tensor (upstream assigns a plain tensor to a parameter of a functional layer and fails)."""
    if isinstance(getattr(owner, name), nn.Parameter):
        setattr(owner, name, nn.Parameter(value.detach()))
    else:
        setattr(owner, name, value.detach())


def _reobserve(observer: nn.Module, weight: torch.Tensor) -> None:
    reset = getattr(observer, "reset_min_max_vals", None)
    if not callable(reset):
        raise EqualizationError(
            f"the weight observer {type(observer).__name__} of an equalized functional layer cannot be reset "
            "to observe the rescaled weight; use a min/max weight observer (e.g. default_per_channel_weight_observer)"
        )
    reset()
    observer(weight)


def _scale_weights(gm: GraphModule, node: Node, scale: torch.Tensor | None, next_scale: torch.Tensor | None) -> None:
    """``W[:, j] /= scale[j]`` (the layer's own equalization) and ``W[i, :] *= next[i]``,
    ``b[i] *= next[i]`` (the next layer's scale folded into this one's output rows)."""
    if scale is None and next_scale is None:
        return
    params = _params(gm, node)
    weight = getattr(*params.weight)
    if scale is not None:
        weight = torch.mul(weight, torch.reciprocal(_reshape(scale.reshape(-1), 1, weight)))
    if next_scale is not None:
        weight = torch.mul(weight, _reshape(next_scale.reshape(-1), 0, weight))
        if params.bias is not None:
            _store(*params.bias, torch.mul(getattr(*params.bias), next_scale.reshape(-1)))
    _store(*params.weight, weight)
    if params.weight_observer is not None:
        _reobserve(params.weight_observer, weight.detach())


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


def _remove_observer_node(gm: GraphModule, name: str) -> None:
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == name)
    source = node.args[0]
    assert isinstance(source, Node)
    node.replace_all_uses_with(source)
    gm.graph.erase_node(node)
    delattr(gm, name)


def _weight_equalization_observer(gm: GraphModule, layer: Node, weight: Any) -> _WeightEqualizationObserver:
    """The weight equalization observer of ``layer``, having seen its weight: built now for
    a module layer, taken out of the graph (calibrated with it) for a functional one."""
    if isinstance(weight, str):
        observer = gm.get_submodule(weight)
        _remove_observer_node(gm, weight)
    else:
        observer = weight()
        if isinstance(observer, _WeightEqualizationObserver):
            observer(_layer(gm.get_submodule(str(layer.target))).weight.detach())
    if not isinstance(observer, _WeightEqualizationObserver):
        raise EqualizationError(
            f"{layer.name}: the equalization qconfig's weight must build a _WeightEqualizationObserver "
            "(use weight_equalization_observer)"
        )
    return observer


def apply_equalization(gm: GraphModule, sites: dict[str, tuple[str, Any]]) -> None:
    """Compute the equalization scales of the calibrated ``gm``, scale the weights and the
    inputs, and remove the equalization observers (before the weights are observed)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    scales: dict[str, torch.Tensor | None] = {}
    for eq_name, (layer_name, weight) in sites.items():
        eq_observer = gm.get_submodule(eq_name)
        if not isinstance(eq_observer, _InputEqualizationObserver):
            raise EqualizationError(
                f"{layer_name}: the equalization qconfig's input_activation must build an "
                "_InputEqualizationObserver (use input_equalization_observer)"
            )
        weight_observer = _weight_equalization_observer(gm, nodes[layer_name], weight)
        scale = calculate_equalization_scale(eq_observer, weight_observer)
        eq_observer.set_equalization_scale(scale)
        weight_observer.set_equalization_scale(scale)
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
        _scale_weights(gm, nodes[layer_name], layer_scale, next_scales.get(layer_name))
    gm.graph.lint()
    gm.recompile()
