"""Builders for the pattern configs most backends share: conv, linear, binary ops, cat,
default ops, fixed-qparams ops, shared-qparams ops, tensor-info ops, batch norm, layer norm,
RNNs and embeddings. Each takes the backend's dtype configs for that family of ops and
returns the list of ``BackendPatternConfig`` for it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import fxquant.nn.intrinsic as nni
import fxquant.nn.intrinsic.qat as nniqat
import fxquant.nn.qat as nnqat
import fxquant.nn.quantized.reference as nnqr
from fxquant.backend_config.dtype_config import DTypeConfig, DTypeWithConstraints
from fxquant.backend_config.fusers import sequential_fuser
from fxquant.backend_config.pattern_config import BackendPatternConfig, ObservationType
from fxquant.eager.fuser_methods import (
    fuse_conv_bn,
    fuse_conv_bn_relu,
    fuse_convtranspose_bn,
    fuse_linear_bn,
)

__all__: list[str] = []

_DIFFERENT = ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
_SHARED = ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT
_WEIGHT_BIAS_AT_1_2 = {"weight": 1, "bias": 2}


@dataclass(frozen=True, kw_only=True)
class _ConvFamily:
    """The module and function types of one conv dimensionality."""

    root: type[nn.Module]
    transpose: type[nn.Module]
    bn: type[nn.Module]
    reference: type[nn.Module]
    transpose_reference: type[nn.Module]
    fused_conv_relu: type[nn.Module]
    fused_conv_bn: type[nn.Module]
    fused_conv_bn_relu: type[nn.Module]
    qat: type[nn.Module]
    relu_qat: type[nn.Module]
    bn_qat: type[nn.Module]
    bn_relu_qat: type[nn.Module]
    func: Callable[..., Any]
    func_transpose: Callable[..., Any]


_Conv1dMetadata = _ConvFamily(
    root=nn.Conv1d, transpose=nn.ConvTranspose1d, bn=nn.BatchNorm1d,
    reference=nnqr.Conv1d, transpose_reference=nnqr.ConvTranspose1d,
    fused_conv_relu=nni.ConvReLU1d, fused_conv_bn=nni.ConvBn1d,
    fused_conv_bn_relu=nni.ConvBnReLU1d, qat=nnqat.Conv1d, relu_qat=nniqat.ConvReLU1d,
    bn_qat=nniqat.ConvBn1d, bn_relu_qat=nniqat.ConvBnReLU1d,
    func=F.conv1d, func_transpose=F.conv_transpose1d,
)
_Conv2dMetadata = _ConvFamily(
    root=nn.Conv2d, transpose=nn.ConvTranspose2d, bn=nn.BatchNorm2d,
    reference=nnqr.Conv2d, transpose_reference=nnqr.ConvTranspose2d,
    fused_conv_relu=nni.ConvReLU2d, fused_conv_bn=nni.ConvBn2d,
    fused_conv_bn_relu=nni.ConvBnReLU2d, qat=nnqat.Conv2d, relu_qat=nniqat.ConvReLU2d,
    bn_qat=nniqat.ConvBn2d, bn_relu_qat=nniqat.ConvBnReLU2d,
    func=F.conv2d, func_transpose=F.conv_transpose2d,
)
_Conv3dMetadata = _ConvFamily(
    root=nn.Conv3d, transpose=nn.ConvTranspose3d, bn=nn.BatchNorm3d,
    reference=nnqr.Conv3d, transpose_reference=nnqr.ConvTranspose3d,
    fused_conv_relu=nni.ConvReLU3d, fused_conv_bn=nni.ConvBn3d,
    fused_conv_bn_relu=nni.ConvBnReLU3d, qat=nnqat.Conv3d, relu_qat=nniqat.ConvReLU3d,
    bn_qat=nniqat.ConvBn3d, bn_relu_qat=nniqat.ConvBnReLU3d,
    func=F.conv3d, func_transpose=F.conv_transpose3d,
)

# Fixed-qparams ops have a known output range, hence a fixed scale and zero point:
#   [0, 1]  (sigmoid, hardsigmoid, softmax): scale = 1/256, zero_point = 0
#   [-1, 1] (tanh):                          scale = 2/256, zero_point = 128
_FIXED_QPARAM_OP_0TO1_CONSTRAINTS = DTypeWithConstraints(
    dtype=torch.quint8, quant_min_lower_bound=0, quant_max_upper_bound=255,
    scale_exact_match=1.0 / 256.0, zero_point_exact_match=0,
)
_FIXED_QPARAM_OP_NEG1TO1_CONSTRAINTS = DTypeWithConstraints(
    dtype=torch.quint8, quant_min_lower_bound=0, quant_max_upper_bound=255,
    scale_exact_match=2.0 / 256.0, zero_point_exact_match=128,
)
_FIXED_QPARAMS_OP_TO_CONSTRAINTS: dict[Callable[..., Any] | str, DTypeWithConstraints] = {
    nn.Hardsigmoid: _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    F.hardsigmoid: _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    "hardsigmoid": _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    "hardsigmoid_": _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    nn.Sigmoid: _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    torch.sigmoid: _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    "sigmoid": _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    "sigmoid_": _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    nn.Softmax: _FIXED_QPARAM_OP_0TO1_CONSTRAINTS,
    nn.Tanh: _FIXED_QPARAM_OP_NEG1TO1_CONSTRAINTS,
    torch.tanh: _FIXED_QPARAM_OP_NEG1TO1_CONSTRAINTS,
    "tanh": _FIXED_QPARAM_OP_NEG1TO1_CONSTRAINTS,
    "tanh_": _FIXED_QPARAM_OP_NEG1TO1_CONSTRAINTS,
}

# binary ops: with one tensor argument (x + 1.0) the output shares the input's observer
_BINARY_OP_NUM_TENSOR_ARGS_TO_OBSERVATION_TYPE = {0: _DIFFERENT, 1: _SHARED, 2: _DIFFERENT}

_SHARE_QPARAMS_OPS: list[Callable[..., Any] | str] = [
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.Hardtanh, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.ReLU, nn.ReLU6,
    torch.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.hardtanh, F.hardtanh_, F.interpolate, F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.pixel_shuffle, F.pixel_unshuffle, F.relu, F.relu6,
    torch.avg_pool1d, torch._C._nn.avg_pool2d, torch._C._nn.avg_pool3d,
    torch.clamp, torch.flatten, torch.mean, torch.narrow, torch.repeat_interleave,
    torch.transpose, torch.squeeze, torch.stack, torch.unsqueeze, operator.floordiv,
    "contiguous", "clamp", "detach", "detach_", "mean", "permute", "repeat",
    "repeat_interleave", "reshape", "resize_", "relu", "relu_", "squeeze", "squeeze_",
    "transpose", "unsqueeze", "unsqueeze_", "view",
]

_DEFAULT_OPS: list[Callable[..., Any]] = [
    nn.ELU, nn.LeakyReLU, nn.Hardswish, nn.InstanceNorm1d, nn.InstanceNorm2d,
    nn.InstanceNorm3d, nn.Dropout, nn.PReLU, F.elu, F.hardswish, F.leaky_relu, F.dropout,
]


def _config(pattern: Any, dtype_configs: list[DTypeConfig],
            observation_type: ObservationType = _DIFFERENT) -> BackendPatternConfig:
    return (BackendPatternConfig(pattern)
            .set_observation_type(observation_type)
            .set_dtype_configs(dtype_configs))


def _quantized_module_config(pattern: Any, dtype_configs: list[DTypeConfig],
                             root: type[nn.Module], reference: type[nn.Module],
                             qat: type[nn.Module] | None = None) -> BackendPatternConfig:
    """A module (float, fused or QAT) whose root becomes ``reference`` in convert."""
    config = (_config(pattern, dtype_configs)
              .set_root_module(root).set_reference_quantized_module(reference))
    return config.set_qat_module(qat) if qat is not None else config


def _fusion_config(pattern: Any, dtype_configs: list[DTypeConfig],
                   fuser_method: Callable[..., Any],
                   fused_module: type[nn.Module]) -> BackendPatternConfig:
    return (_config(pattern, dtype_configs)
            .set_fuser_method(fuser_method).set_fused_module(fused_module))


def _get_binary_op_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    """add / mul (optionally followed by relu) and matmul."""
    configs: list[BackendPatternConfig] = []
    for op in (operator.add, torch.add, operator.mul, torch.mul):
        for pattern in ((op, nn.ReLU), (op, F.relu), (op, torch.relu), op):
            configs.append(_config(pattern, dtype_configs)._set_num_tensor_args_to_observation_type(
                _BINARY_OP_NUM_TENSOR_ARGS_TO_OBSERVATION_TYPE))
    configs.append(_config(torch.matmul, dtype_configs))
    return configs


def _get_linear_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    """Linear modules and functions, linear + relu, linear + batch norm."""
    ref = nnqr.Linear
    return [
        _quantized_module_config(nn.Linear, dtype_configs, nn.Linear, ref, nnqat.Linear),
        _quantized_module_config(nnqat.Linear, dtype_configs, nn.Linear, ref),
        _config(F.linear, dtype_configs)._set_input_type_to_index(_WEIGHT_BIAS_AT_1_2),
        # linear + relu: fusion, then the fused and QAT-fused modules, then functional
        _fusion_config((nn.Linear, nn.ReLU), dtype_configs,
                       sequential_fuser(nni.LinearReLU), nni.LinearReLU),
        _fusion_config((nn.Linear, F.relu), dtype_configs,
                       sequential_fuser(nni.LinearReLU), nni.LinearReLU),
        _quantized_module_config(nni.LinearReLU, dtype_configs, nn.Linear, ref,
                                 nniqat.LinearReLU),
        _quantized_module_config(nniqat.LinearReLU, dtype_configs, nn.Linear, ref),
        _config((F.linear, nn.ReLU), dtype_configs),
        _config((F.linear, F.relu), dtype_configs),
        # linear + batch norm
        _fusion_config((nn.Linear, nn.BatchNorm1d), dtype_configs, fuse_linear_bn,
                       nni.LinearBn1d),
        _quantized_module_config(nni.LinearBn1d, dtype_configs, nn.Linear, ref,
                                 nniqat.LinearBn1d),
        _quantized_module_config(nniqat.LinearBn1d, dtype_configs, nn.Linear, ref),
    ]


def _conv_and_relu_configs(convs: _ConvFamily,
                           dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    root, ref = convs.root, convs.reference
    relu_fuser = sequential_fuser(convs.fused_conv_relu)
    return [
        _quantized_module_config(root, dtype_configs, root, ref, convs.qat),
        _quantized_module_config(convs.qat, dtype_configs, root, ref),
        _config(convs.func, dtype_configs)._set_input_type_to_index(_WEIGHT_BIAS_AT_1_2),
        _fusion_config((root, nn.ReLU), dtype_configs, relu_fuser, convs.fused_conv_relu),
        _fusion_config((root, F.relu), dtype_configs, relu_fuser, convs.fused_conv_relu),
        _quantized_module_config(convs.fused_conv_relu, dtype_configs, root, ref,
                                 convs.relu_qat),
        _quantized_module_config(convs.relu_qat, dtype_configs, root, ref),
        _config((convs.func, nn.ReLU), dtype_configs),
        _config((convs.func, F.relu), dtype_configs),
        # upstream sets these two patterns a second time; being keyed by pattern, the
        # BackendConfig keeps these later versions (at the earlier positions)
        _config(convs.fused_conv_relu, dtype_configs).set_qat_module(convs.relu_qat),
        _config(convs.relu_qat, dtype_configs).set_root_module(root)
        .set_reference_quantized_module(ref),
    ]


def _conv_bn_configs(convs: _ConvFamily,
                     dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    root, ref = convs.root, convs.reference
    return [
        _fusion_config((root, convs.bn), dtype_configs, fuse_conv_bn, convs.fused_conv_bn),
        _fusion_config((root, convs.bn, nn.ReLU), dtype_configs, fuse_conv_bn_relu,
                       convs.fused_conv_bn_relu),
        _fusion_config((root, convs.bn, F.relu), dtype_configs, fuse_conv_bn_relu,
                       convs.fused_conv_bn_relu).set_root_module(root),
        _config(convs.fused_conv_bn, dtype_configs).set_qat_module(convs.bn_qat),
        _config(convs.fused_conv_bn_relu, dtype_configs).set_qat_module(convs.bn_relu_qat),
        _quantized_module_config(convs.bn_qat, dtype_configs, root, ref),
        _quantized_module_config(convs.bn_relu_qat, dtype_configs, root, ref),
    ]


def _conv_transpose_configs(convs: _ConvFamily,
                            dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    transpose, ref = convs.transpose, convs.transpose_reference
    return [
        _quantized_module_config(transpose, dtype_configs, transpose, ref),
        _quantized_module_config((transpose, convs.bn), dtype_configs, transpose, ref)
        .set_fuser_method(fuse_convtranspose_bn),
        _config(convs.func_transpose, dtype_configs)._set_input_type_to_index(
            _WEIGHT_BIAS_AT_1_2),
    ]


def _get_conv_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    """Conv modules and functions of 1, 2 and 3 dimensions, their fusions with relu and
    batch norm, and transposed convs."""
    configs: list[BackendPatternConfig] = []
    for convs in (_Conv1dMetadata, _Conv2dMetadata, _Conv3dMetadata):
        configs.extend(_conv_and_relu_configs(convs, dtype_configs))
        configs.extend(_conv_bn_configs(convs, dtype_configs))
        configs.extend(_conv_transpose_configs(convs, dtype_configs))
    return configs


def _get_cat_config(dtype_configs: list[DTypeConfig]) -> BackendPatternConfig:
    """``torch.cat``: the output shares the inputs' observer."""
    return _config(torch.cat, dtype_configs, _SHARED)


def _get_ln_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    """Layer norm, module and function."""
    return [
        _config(nn.LayerNorm, dtype_configs),
        _config(F.layer_norm, dtype_configs)._set_input_type_to_index({"weight": 2, "bias": 3}),
    ]


def _get_default_op_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    """Ops whose output gets its own observer (activations, instance/group norm, dropout)."""
    configs = [_config(op, dtype_configs) for op in _DEFAULT_OPS]
    configs.append(_config(F.group_norm, dtype_configs)._set_input_type_to_index(
        {"weight": 2, "bias": 3}))
    configs.append(_config(F.instance_norm, dtype_configs)._set_input_type_to_index(
        {"weight": 3, "bias": 4}))
    return configs


def _constrain(original: DTypeWithConstraints,
               constraints: DTypeWithConstraints, dtype_config: DTypeConfig) -> DTypeWithConstraints:
    """``original`` with the fixed-qparams ``constraints``, if it is of their dtype."""
    if original.dtype != constraints.dtype:
        return original
    for bound in ("scale_min_lower_bound", "scale_max_upper_bound"):
        if getattr(original, bound) is not None:
            raise ValueError(f"{bound} cannot be combined with the fixed qparams of sigmoid, "
                             f"tanh, ...: remove it from {dtype_config}")
    return replace(
        original,
        quant_min_lower_bound=constraints.quant_min_lower_bound,
        quant_max_upper_bound=constraints.quant_max_upper_bound,
        scale_exact_match=constraints.scale_exact_match,
        zero_point_exact_match=constraints.zero_point_exact_match,
    )


def _add_fixed_qparams_to_dtype_configs(
    dtype_configs: list[DTypeConfig], constraints: DTypeWithConstraints
) -> list[DTypeConfig]:
    """The dtype configs with ``constraints`` on their activations where dtypes match."""
    return [
        DTypeConfig(
            input_dtype=_constrain(dc.input_dtype_with_constraints, constraints, dc),
            output_dtype=_constrain(dc.output_dtype_with_constraints, constraints, dc),
            weight_dtype=dc.weight_dtype_with_constraints,
            bias_dtype=dc.bias_dtype,
            is_dynamic=dc.is_dynamic,
        )
        for dc in dtype_configs
    ]


def _get_fixed_qparams_op_configs(
    dtype_configs: list[DTypeConfig],
) -> list[BackendPatternConfig]:
    """sigmoid, hardsigmoid, softmax and tanh, whose qparams are fixed by their range."""
    return [
        _config(op, _add_fixed_qparams_to_dtype_configs(dtype_configs, constraints))
        for op, constraints in _FIXED_QPARAMS_OP_TO_CONSTRAINTS.items()
    ]


def _get_share_qparams_op_configs(
    dtype_configs: list[DTypeConfig],
) -> list[BackendPatternConfig]:
    """Ops that work on quantized input as is (pooling, reshape, relu, ...): the output
    shares the input's observer, hence its qparams."""
    return [_config(op, dtype_configs, _SHARED) for op in _SHARE_QPARAMS_OPS]


def _get_bn_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    """Batch norm 2d/3d, alone and fused with relu."""
    bn_to_fused_bn: dict[type[nn.Module], type[nn.Module]] = {
        nn.BatchNorm2d: nni.BNReLU2d,
        nn.BatchNorm3d: nni.BNReLU3d,
    }
    configs: list[BackendPatternConfig] = []
    for bn, fused_bn in bn_to_fused_bn.items():
        fuser = sequential_fuser(fused_bn)
        configs.append(_fusion_config((bn, nn.ReLU), dtype_configs, fuser, fused_bn))
        configs.append(_fusion_config((bn, F.relu), dtype_configs, fuser, fused_bn))
        configs.append(_config(bn, dtype_configs))
    configs.extend(_config(fused_bn, dtype_configs) for fused_bn in bn_to_fused_bn.values())
    return configs


def _get_rnn_op_configs(dtype_configs: list[DTypeConfig]) -> list[BackendPatternConfig]:
    """RNN cells and layers, swapped for reference modules in convert."""
    rnn_to_reference: list[tuple[type[nn.Module], type[nn.Module]]] = [
        (nn.GRUCell, nnqr.GRUCell), (nn.LSTMCell, nnqr.LSTMCell), (nn.RNNCell, nnqr.RNNCell),
        (nn.LSTM, nnqr.LSTM), (nn.GRU, nnqr.GRU),
    ]
    return [_quantized_module_config(rnn, dtype_configs, rnn, ref)
            for rnn, ref in rnn_to_reference]


def _get_embedding_op_configs(
    dtype_configs: list[DTypeConfig],
) -> list[BackendPatternConfig]:
    """Embedding and EmbeddingBag, float and QAT."""
    configs: list[BackendPatternConfig] = []
    for embedding, qat_embedding, ref_embedding in (
        (nn.Embedding, nnqat.Embedding, nnqr.Embedding),
        (nn.EmbeddingBag, nnqat.EmbeddingBag, nnqr.EmbeddingBag),
    ):
        configs.append(_quantized_module_config(embedding, dtype_configs, embedding,
                                                ref_embedding, qat_embedding))
        configs.append(_quantized_module_config(qat_embedding, dtype_configs, embedding,
                                                ref_embedding))
    return configs


def _get_tensor_info_op_configs(
    dtype_configs: list[DTypeConfig],
) -> list[BackendPatternConfig]:
    """``x.shape`` and ``x.size()``: they return no tensor, so nothing is observed."""
    return [_config(op, dtype_configs, ObservationType.INPUT_OUTPUT_NOT_OBSERVED)
            for op in ("shape", "size")]
