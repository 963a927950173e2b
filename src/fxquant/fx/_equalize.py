"""Input-weight equalization: observers and qconfig (upstream:
``torch.ao.quantization.fx._equalize``, same names and arguments).

For a linear or conv layer ``y = W x``, scaling input channel ``j`` by ``s_j`` and weight
column ``j`` by ``1 / s_j`` leaves ``y`` unchanged; choosing
``s_j = sqrt(weight_range_j / input_range_j)`` gives the input columns and the weight columns
the same spread (their ranges meet at the geometric mean), so per-tensor input quantization
loses less on channels with small ranges. :class:`_InputEqualizationObserver` records the
per-channel input ranges during calibration, :class:`_WeightEqualizationObserver` the weight
column ranges; :func:`calculate_equalization_scale` combines them. The graph rewriting is in
:mod:`fxquant.fx.equalization`. Also as upstream: which nodes can be equalized
(:func:`node_supports_equalization`: linear/conv modules, fused with ReLU or not, and
``F.linear`` / ``F.conv1d/2d/3d``), :func:`_convert_equalization_ref` (apply the
equalization without quantizing), and choosing the layers to equalize from per-layer SQNR
(:func:`get_layer_sqnr_dict`, :func:`get_equalization_qconfig_dict`).

Example::

    from fxquant.fx._equalize import default_equalization_qconfig
    prepared = prepare_fx(model, qconfig_mapping, example_inputs,
                          _equalization_config=QConfigMapping().set_global(default_equalization_qconfig))
"""

from __future__ import annotations

import operator
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import torch
import torch.nn.functional as F
from torch import nn

from fxquant.nn import intrinsic as nni

if TYPE_CHECKING:
    from torch.fx import GraphModule, Node

from fxquant.metrics import sqnr
from fxquant.observers import PerChannelMinMaxObserver
from fxquant.observers.base import _with_args, range_is_uninitialized

__all__ = [
    "EqualizationQConfig",
    "_InputEqualizationObserver",
    "_WeightEqualizationObserver",
    "_convert_equalization_ref",
    "calculate_equalization_scale",
    "default_equalization_qconfig",
    "fused_module_supports_equalization",
    "get_equalization_qconfig_dict",
    "get_layer_sqnr_dict",
    "input_equalization_observer",
    "is_equalization_observer",
    "nn_module_supports_equalization",
    "node_supports_equalization",
    "weight_equalization_observer",
]

_PER_CHANNEL = {
    torch.per_tensor_affine: torch.per_channel_affine,
    torch.per_tensor_symmetric: torch.per_channel_symmetric,
}


def _is_unit(scale: torch.Tensor) -> bool:
    """Whether ``scale`` is the 'no equalization' marker ``tensor(1)``."""
    return scale.numel() == 1 and bool(scale == 1)


def _check_rank(x: torch.Tensor, owner: str) -> None:
    if x.ndim < 2 or x.ndim > 5:
        raise ValueError(f"{owner} observes linear and conv layers (2-5 dimensional tensors), got shape "
                         f"{tuple(x.shape)}")


class _InputEqualizationObserver(nn.Module):
    """Records the running min/max of each input channel (axis 1) of a linear/conv layer.

    Args as upstream: ``dtype``, ``qscheme`` (per tensor; the per-channel ranges are
    recorded with the matching per-channel scheme), ``quant_min``, ``quant_max``,
    ``factory_kwargs``. ``equalization_scale`` is ``tensor(1)`` until
    :meth:`set_equalization_scale`.
    """

    def __init__(
        self, dtype: torch.dtype = torch.quint8, qscheme: torch.qscheme = torch.per_tensor_affine,
        quant_min: int | None = None, quant_max: int | None = None, factory_kwargs: Any = None,
    ) -> None:
        super().__init__()
        if qscheme not in _PER_CHANNEL:
            raise TypeError(f"input equalization needs a per-tensor qscheme, got {qscheme}")
        self.dtype, self.qscheme = dtype, qscheme
        self.input_obs = PerChannelMinMaxObserver(
            ch_axis=1, dtype=dtype, qscheme=_PER_CHANNEL[qscheme], quant_min=quant_min,
            quant_max=quant_max, factory_kwargs=factory_kwargs,
        )
        self.equalization_scale = torch.tensor(1)
        self.equalization_shape: list[int] = []
        self.ch_axis = 1

    def set_channel_axis(self, axis: int) -> None:
        """Observe channels along ``axis`` (1, as upstream, for conv inputs and 2-D linear
        inputs; the FX flow sets -1 for linear layers, whose features are the last axis —
        upstream cannot equalize a linear layer on 3-D input, e.g. a transformer's)."""
        self.ch_axis = axis
        self.input_obs.ch_axis = axis

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        _check_rank(x_orig, "_InputEqualizationObserver")
        self.equalization_shape = [1] * x_orig.ndim
        self.equalization_shape[self.ch_axis] = x_orig.size(self.ch_axis)
        return self.input_obs(x_orig)

    def get_input_minmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (min, max) of the inputs seen."""
        return self.input_obs.min_val, self.input_obs.max_val

    def set_equalization_scale(self, equalization_scale: torch.Tensor) -> None:
        """Keep ``equalization_scale`` shaped to multiply the input along axis 1."""
        if _is_unit(equalization_scale):
            return
        self.equalization_scale = torch.reshape(equalization_scale, self.equalization_shape)

    def calculate_scaled_minmax(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(min, max) over all channels of the input after scaling by the equalization
        scale — the range the input's quantization observer should use."""
        if _is_unit(self.equalization_scale):
            warnings.warn("calculate_scaled_minmax before the equalization scale is set: the input "
                          "observer is left unscaled", stacklevel=2)
            return None, None
        min_inputs, max_inputs = self.get_input_minmax()
        scale = self.equalization_scale.reshape(-1)
        return torch.min(min_inputs * scale), torch.max(max_inputs * scale)

    with_args = classmethod(_with_args)


class _WeightEqualizationObserver(nn.Module):
    """Records the min/max of each weight column (axis 1, the input channels) of a
    linear/conv layer. Args as :class:`_InputEqualizationObserver`."""

    def __init__(
        self, dtype: torch.dtype = torch.qint8, qscheme: torch.qscheme = torch.per_tensor_affine,
        quant_min: int | None = None, quant_max: int | None = None, factory_kwargs: Any = None,
    ) -> None:
        super().__init__()
        self.dtype, self.qscheme, self.ch_axis = dtype, qscheme, 1
        self.weight_col_obs = PerChannelMinMaxObserver(
            ch_axis=1, dtype=dtype, qscheme=_PER_CHANNEL.get(qscheme, qscheme), quant_min=quant_min,
            quant_max=quant_max, factory_kwargs=factory_kwargs,
        )
        self.equalization_scale = torch.tensor(1)

    def forward(self, w_orig: torch.Tensor) -> torch.Tensor:
        _check_rank(w_orig, "_WeightEqualizationObserver")
        return self.weight_col_obs(w_orig)

    def get_weight_col_minmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column (min, max) of the weight."""
        return self.weight_col_obs.min_val, self.weight_col_obs.max_val

    def set_equalization_scale(self, equalization_scale: torch.Tensor) -> None:
        self.equalization_scale = equalization_scale

    with_args = classmethod(_with_args)


def calculate_equalization_scale(
    input_obs: _InputEqualizationObserver, weight_obs: _WeightEqualizationObserver
) -> torch.Tensor:
    """``sqrt(weight_range / input_range)`` per input channel; channels where that is 0, inf
    or NaN get 1. Returns ``tensor(1)`` (no equalization) with a warning if an observer has
    seen no data."""
    min_inputs, max_inputs = input_obs.get_input_minmax()
    min_weights, max_weights = weight_obs.get_weight_col_minmax()
    if range_is_uninitialized(min_inputs, max_inputs) or range_is_uninitialized(min_weights, max_weights):
        warnings.warn("an equalization observer has seen no data (run calibration first); using "
                      "equalization scale 1", stacklevel=2)
        return torch.tensor(1)
    if min_inputs.shape != min_weights.shape:
        raise ValueError(f"input channels {tuple(min_inputs.shape)} and weight columns "
                         f"{tuple(min_weights.shape)} differ; equalization needs them equal")
    scale = torch.sqrt((max_weights - min_weights) / (max_inputs - min_inputs))
    scale[scale == 0.0] = 1
    return torch.nan_to_num(scale, nan=1, posinf=1, neginf=1)


class _EqualizationQConfigFields(NamedTuple):
    input_activation: Any
    weight: Any


class EqualizationQConfig(_EqualizationQConfigFields):
    """Observer constructors for input-weight equalization of a layer: classes or
    ``with_args`` partials (instances are refused, as upstream refuses them)."""

    __slots__ = ()

    def __new__(cls, input_activation: Any = nn.Identity, weight: Any = nn.Identity) -> Self:
        if isinstance(input_activation, nn.Module) or isinstance(weight, nn.Module):
            raise ValueError(  # noqa: TRY004  # upstream raises ValueError here
                "EqualizationQConfig takes observer classes (or Observer.with_args(...)), not observer instances"
            )
        return super().__new__(cls, input_activation, weight)


input_equalization_observer = _InputEqualizationObserver.with_args(dtype=torch.quint8,
                                                                   qscheme=torch.per_tensor_symmetric)
weight_equalization_observer = _WeightEqualizationObserver.with_args(dtype=torch.qint8,
                                                                     qscheme=torch.per_channel_symmetric)
default_equalization_qconfig = EqualizationQConfig(input_activation=input_equalization_observer,
                                                   weight=weight_equalization_observer)


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FUSED = (nni.LinearReLU, nni.ConvReLU1d, nni.ConvReLU2d, nni.ConvReLU3d)
_FUNCTIONAL = (F.linear, F.conv1d, F.conv2d, F.conv3d)


def nn_module_supports_equalization(module: nn.Module) -> bool:
    """``nn.Linear`` and ``nn.Conv1d/2d/3d`` (exact types)."""
    return type(module) in _LAYERS


def fused_module_supports_equalization(module: nn.Module) -> bool:
    """Linear/conv fused with ReLU (``LinearReLU``, ``ConvReLU1d/2d/3d``)."""
    return type(module) in _FUSED


def node_supports_equalization(node: Node, modules: dict[str, nn.Module]) -> bool:
    """A call of a linear/conv module (plain or fused with ReLU; ``modules``: the graph
    module's ``dict(named_modules())``) or of ``F.linear`` / ``F.conv1d/2d/3d``."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        return nn_module_supports_equalization(module) or fused_module_supports_equalization(module)
    return node.op == "call_function" and node.target in _FUNCTIONAL


def is_equalization_observer(observer: nn.Module) -> bool:
    """An input or weight equalization observer."""
    return isinstance(observer, (_InputEqualizationObserver, _WeightEqualizationObserver))


def _convert_equalization_ref(model: GraphModule) -> GraphModule:
    """Apply the input-weight equalization of a calibrated ``prepare_fx`` model without
    quantizing it: weights and inputs scaled, input observers given the scaled ranges,
    equalization observers removed. The result still computes the float function (up to
    rounding); ``convert_fx`` can follow. In place; returns ``model``."""
    # the graph pass imports this module, so it is imported here
    from fxquant.fx.equalization import apply_equalization
    from fxquant.fx.state import observed_state

    state = observed_state(model)
    apply_equalization(model, state.equalization)
    state.equalization = {}
    return model


def _leaf_outputs(model: nn.Module, x: torch.Tensor, names: set[str]) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if name in names:
            def record(_module: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
                if isinstance(output, torch.Tensor):
                    outputs[name] = output.dequantize() if output.is_quantized else output.detach()
            handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def get_layer_sqnr_dict(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """SQNR (dB) of each layer's output in ``model_b`` (e.g. quantized) against the layer of
    the same name in ``model_a`` (e.g. float), both run on ``x``. Layers are the leaf
    modules of ``model_a`` that ``model_b`` has under the same name (quantized outputs are
    dequantized). Upstream matches layers with its numeric suite instead (and in torch 2.13
    reports them all under the name ``None``)."""
    leaves = {name for name, m in model_a.named_modules() if name and not any(True for _ in m.children())}
    names = leaves & {name for name, _ in model_b.named_modules()}
    outputs_a, outputs_b = _leaf_outputs(model_a, x, names), _leaf_outputs(model_b, x, names)
    return {name: sqnr(outputs_a[name], outputs_b[name]) for name in sorted(names)
            if name in outputs_a and name in outputs_b and outputs_a[name].shape == outputs_b[name].shape}


def get_equalization_qconfig_dict(layer_sqnr_dict: dict[str, float], num_layers_to_equalize: int) -> Any:
    """An equalization config (upstream's dict form, accepted by ``prepare_fx``'s
    ``_equalization_config``) equalizing the ``num_layers_to_equalize`` layers with the
    lowest SQNR in ``layer_sqnr_dict``."""
    worst = sorted(layer_sqnr_dict.items(), key=operator.itemgetter(1))[:num_layers_to_equalize]
    return {"module_name": [(name, default_equalization_qconfig) for name, _ in worst]}
