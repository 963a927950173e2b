"""The oneDNN backend: PyTorch's oneDNN kernels, which also fuse conv + add (+ relu) and
linear + leaky_relu / tanh."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

import fxquant.nn.intrinsic as nni
import fxquant.nn.quantized.reference as nnqr
from fxquant.backend_config._common_operator_config_utils import (
    _get_binary_op_configs,
    _get_bn_configs,
    _get_cat_config,
    _get_conv_configs,
    _get_default_op_configs,
    _get_embedding_op_configs,
    _get_fixed_qparams_op_configs,
    _get_linear_configs,
    _get_ln_configs,
    _get_rnn_op_configs,
    _get_share_qparams_op_configs,
)
from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.clamp_output import observe_after_clamp
from fxquant.backend_config.dtype_config import DTypeConfig
from fxquant.backend_config.fusers import sequential_fuser
from fxquant.backend_config.pattern_config import BackendPatternConfig, ObservationType
from fxquant.backend_config.patterns import MatchAllNode, Pattern
from fxquant.eager.errors import EagerModeError

__all__ = ["get_onednn_backend_config"]

onednn_weighted_op_int8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
    weight_dtype=torch.qint8, bias_dtype=torch.float,
)
onednn_op_quint8_dtype_config = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8)
onednn_dynamic_int8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.float,
    weight_dtype=torch.qint8, bias_dtype=torch.float, is_dynamic=True,
)
onednn_weight_only_qint8_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.qint8,
)
onednn_input_output_only_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
    weight_dtype=torch.float, bias_dtype=torch.float,
)

_DIFFERENT = ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT


@dataclass(frozen=True, kw_only=True)
class _ConvAddPattern:
    """``add(conv(x), y)`` / ``add(y, conv(x))``, the conv optionally followed by batch norm
    and the add optionally followed by relu, in the reversed nested tuple format::

        (add, conv, MatchAllNode)                     conv on the left
        (add, MatchAllNode, (BatchNorm2d, Conv2d))    conv + bn on the right
        (ReLU, (add, conv, MatchAllNode))             ... followed by relu

    The fuser method, root-node getter and extra-inputs getter all receive the matched
    modules or nodes in that same nested structure.
    """

    add_op: Callable[..., Any]
    with_bn: bool
    conv_on_left: bool
    with_relu: bool

    def pattern(self) -> Pattern:
        conv: Pattern = (nn.BatchNorm2d, nn.Conv2d) if self.with_bn else nn.Conv2d
        add = ((self.add_op, conv, MatchAllNode) if self.conv_on_left
               else (self.add_op, MatchAllNode, conv))
        return (nn.ReLU, add) if self.with_relu else add

    def _split(self, matched: tuple[Any, ...]) -> tuple[Any, Any, Any, Any]:
        """``(relu or None, add, conv part, extra input)`` of a matched pattern."""
        relu, add_pattern = matched if self.with_relu else (None, matched)
        add, first, second = add_pattern
        conv_part, extra = (first, second) if self.conv_on_left else (second, first)
        return relu, add, conv_part, extra

    def root_node(self, matched: tuple[Any, ...]) -> Any:
        conv_part = self._split(matched)[2]
        return conv_part[1] if self.with_bn else conv_part

    def extra_inputs(self, matched: tuple[Any, ...]) -> list[Any]:
        return [self._split(matched)[3]]

    def fuse(self, is_qat: bool, *matched: Any) -> nn.Module:
        relu, add, conv, _ = self._split(matched)
        if self.with_bn:
            bn, conv = conv
            if is_qat:
                raise NotImplementedError(
                    f"oneDNN: fusing {type(conv).__name__} + BatchNorm2d + add for QAT is not "
                    "supported; fuse in eval mode (model.eval()) for post-training quantization")
            conv = fuse_conv_bn_eval(conv, bn)
        if self.with_relu:
            return nni.ConvAddReLU2d(conv, add, relu)
        return nni.ConvAdd2d(conv, add)

    def config(self, dtype_configs: list[DTypeConfig]) -> BackendPatternConfig:
        fused = nni.ConvAddReLU2d if self.with_relu else nni.ConvAdd2d
        return (BackendPatternConfig()
                ._set_pattern_complex_format(self.pattern())
                .set_observation_type(_DIFFERENT)
                .set_dtype_configs(dtype_configs)
                .set_fuser_method(self.fuse)
                ._set_root_node_getter(self.root_node)
                ._set_extra_inputs_getter(self.extra_inputs)
                .set_fused_module(fused))


def _conv_add_configs(dtype_configs: list[DTypeConfig], *,
                      with_relu: bool) -> list[BackendPatternConfig]:
    configs = [
        _ConvAddPattern(add_op=add_op, with_bn=with_bn, conv_on_left=conv_on_left,
                        with_relu=with_relu).config(dtype_configs)
        for conv_on_left in (True, False)
        for with_bn in (True, False)
        for add_op in (torch.add, operator.add)
    ]
    fused = nni.ConvAddReLU2d if with_relu else nni.ConvAdd2d
    configs.append(BackendPatternConfig(fused).set_observation_type(_DIFFERENT)
                   .set_dtype_configs(dtype_configs).set_root_module(nn.Conv2d)
                   .set_reference_quantized_module(nnqr.Conv2d))
    return configs


def _get_onednn_conv_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    return [*_get_conv_configs(dtype_configs),
            *_conv_add_configs(dtype_configs, with_relu=False),
            *_conv_add_configs(dtype_configs, with_relu=True)]


def _fuse_linear_bn_leaky_relu(is_qat: bool, linear: nn.Module, bn: nn.Module,
                               leaky_relu: nn.Module) -> nn.Module:
    """Fold ``bn`` into ``linear`` and put it with ``leaky_relu`` into ``LinearLeakyReLU``
    (post-training quantization only)."""
    if not linear.training == bn.training == leaky_relu.training:
        raise EagerModeError("oneDNN: Linear, BatchNorm1d and LeakyReLU must all be in the same "
                             "mode to fuse; call .eval() on the model first")
    if is_qat:
        raise NotImplementedError("oneDNN: fusing Linear + BatchNorm1d + LeakyReLU for QAT is "
                                  "not supported; fuse in eval mode")
    if type(linear) is not nn.Linear:
        raise NotImplementedError(f"oneDNN: cannot fuse {type(linear).__name__} + BatchNorm1d "
                                  "+ LeakyReLU; only nn.Linear is supported")
    fused_linear = fuse_linear_bn_eval(linear, bn)  # type: ignore[arg-type]  # bn is BatchNorm1d
    return nni.LinearLeakyReLU(fused_linear, leaky_relu)


def _eltwise_fusion_configs(post_module: type[nn.Module], post_op: Callable[..., Any],
                            fused_module: type[nn.Module],
                            dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    """linear + an element-wise op (module or function) fused into ``fused_module``."""
    fuser = sequential_fuser(fused_module)
    return [
        BackendPatternConfig((nn.Linear, post_module)).set_dtype_configs(dtype_configs)
        .set_fuser_method(fuser).set_fused_module(fused_module),
        BackendPatternConfig((nn.Linear, post_op)).set_dtype_configs(dtype_configs)
        .set_fuser_method(fuser).set_fused_module(fused_module),
        BackendPatternConfig(fused_module).set_observation_type(_DIFFERENT)
        .set_dtype_configs(dtype_configs).set_root_module(nn.Linear)
        .set_reference_quantized_module(nnqr.Linear),
        BackendPatternConfig((F.linear, post_module)).set_observation_type(_DIFFERENT)
        .set_dtype_configs(dtype_configs),
        BackendPatternConfig((F.linear, post_op)).set_observation_type(_DIFFERENT)
        .set_dtype_configs(dtype_configs),
    ]


def _get_onednn_linear_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    return [
        *_get_linear_configs(dtype_configs),
        *_eltwise_fusion_configs(nn.LeakyReLU, F.leaky_relu, nni.LinearLeakyReLU, dtype_configs),
        BackendPatternConfig((nn.Linear, nn.BatchNorm1d, nn.LeakyReLU))
        .set_dtype_configs(dtype_configs).set_fuser_method(_fuse_linear_bn_leaky_relu)
        .set_fused_module(nni.LinearLeakyReLU),
        *_eltwise_fusion_configs(nn.Tanh, torch.tanh, nni.LinearTanh, dtype_configs),
    ]


def get_onednn_backend_config(*, upstream_compatible: bool = False) -> BackendConfig:
    """The ``BackendConfig`` of PyTorch's oneDNN kernels.

    ``upstream_compatible=True`` gives exactly upstream's patterns (a conv/linear output is
    observed before a following ReLU6/hardtanh); by default the patterns of
    :func:`~fxquant.backend_config.clamp_output.observe_after_clamp` are added, which observe
    it after the clamp.

    Example::

        >>> get_onednn_backend_config().name
        'onednn'
    """
    ops = [onednn_op_quint8_dtype_config]
    config = (
        BackendConfig("onednn")
        .set_backend_pattern_configs(_get_onednn_conv_configs([onednn_weighted_op_int8_dtype_config]))
        .set_backend_pattern_configs(_get_onednn_linear_configs(
            [onednn_weighted_op_int8_dtype_config, onednn_dynamic_int8_dtype_config]))
        .set_backend_pattern_configs(_get_binary_op_configs(ops))
        .set_backend_pattern_config(_get_cat_config(ops))
        .set_backend_pattern_configs(_get_default_op_configs(ops))
        .set_backend_pattern_configs(_get_fixed_qparams_op_configs(ops))
        .set_backend_pattern_configs(_get_share_qparams_op_configs(ops))
        .set_backend_pattern_configs(_get_bn_configs(ops))
        .set_backend_pattern_configs(_get_ln_configs([onednn_input_output_only_quint8_dtype_config]))
        .set_backend_pattern_configs(_get_rnn_op_configs([onednn_dynamic_int8_dtype_config]))
        .set_backend_pattern_configs(_get_embedding_op_configs(
            [onednn_weight_only_qint8_dtype_config]))
    )
    return config if upstream_compatible else observe_after_clamp(config)
