"""The ExecuTorch backend: what backends reached through the ExecuTorch stack run quantized
(quint8 and symmetric qint8 activations, dynamic linear, weight-only embeddings)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import fxquant.nn.qat as nnqat
import fxquant.nn.quantized.reference as nnqr
from fxquant.backend_config._common_operator_config_utils import (
    _Conv2dMetadata,
    _conv_and_relu_configs,
    _conv_bn_configs,
)
from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.dtype_config import DTypeConfig, DTypeWithConstraints
from fxquant.backend_config.pattern_config import BackendPatternConfig, ObservationType
from fxquant.backend_config.qnnpack import (
    qnnpack_default_op_qint8_symmetric_dtype_config,
    qnnpack_weighted_op_qint8_symmetric_dtype_config,
)

__all__ = ["get_executorch_backend_config"]

executorch_weighted_op_int8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
    weight_dtype=torch.qint8, bias_dtype=torch.float,
)
executorch_default_op_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
)
executorch_default_dynamic_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.float,
    weight_dtype=torch.qint8, bias_dtype=torch.float, is_dynamic=True,
)
executorch_act_qint8_scale_min_2_neg_12 = DTypeWithConstraints(
    dtype=torch.qint8, scale_min_lower_bound=2**-12,
)
executorch_weight_qint8_neg_127_to_127_scale_min_2_neg_12 = DTypeWithConstraints(
    dtype=torch.qint8, quant_min_lower_bound=-127, quant_max_upper_bound=127,
    scale_min_lower_bound=2**-12,
)
executorch_default_dynamic_qint8_dtype_config = DTypeConfig(
    input_dtype=executorch_act_qint8_scale_min_2_neg_12,
    output_dtype=torch.float,
    weight_dtype=executorch_weight_qint8_neg_127_to_127_scale_min_2_neg_12,
    bias_dtype=torch.float,
    is_dynamic=True,
)
executorch_default_dynamic_float16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float,
    weight_dtype=torch.float16, bias_dtype=torch.float, is_dynamic=True,
)
executorch_weight_only_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint8,
)

_DIFFERENT = ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
_SHARED = ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT
_STATIC_OPS = [qnnpack_default_op_qint8_symmetric_dtype_config,
               executorch_default_op_quint8_dtype_config]

_SHARE_QPARAMS_OPS: list[Callable[..., Any] | str] = [
    nn.Flatten, F.adaptive_avg_pool2d, F.elu, F.hardtanh, F.max_pool2d, F.pad, F.relu,
    F.relu6, F.leaky_relu, F.leaky_relu_, nn.AdaptiveAvgPool2d, nn.ConstantPad2d, nn.ELU,
    nn.MaxPool2d, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, torch.clamp, torch.flatten,
    torch.mean, torch.permute, torch.permute_copy, torch.squeeze,
    "clamp", "mean", "permute", "reshape", "relu", "relu_", "squeeze", "squeeze_",
    "leaky_relu",
]


def _config(pattern: Any, dtype_configs: list[DTypeConfig],
            observation_type: ObservationType = _DIFFERENT) -> BackendPatternConfig:
    return (BackendPatternConfig(pattern).set_observation_type(observation_type)
            .set_dtype_configs(dtype_configs))


def _get_linear_configs() -> list[BackendPatternConfig]:
    dtype_configs = [
        qnnpack_weighted_op_qint8_symmetric_dtype_config,
        executorch_weighted_op_int8_dtype_config,
        executorch_default_dynamic_quint8_dtype_config,
        executorch_default_dynamic_qint8_dtype_config,
        executorch_default_dynamic_float16_dtype_config,
    ]
    return [
        _config(nn.Linear, dtype_configs).set_root_module(nn.Linear)
        .set_reference_quantized_module(nnqr.Linear).set_qat_module(nnqat.Linear),
        _config(nnqat.Linear, dtype_configs).set_root_module(nn.Linear)
        .set_reference_quantized_module(nnqr.Linear),
        _config(F.linear, dtype_configs)._set_input_type_to_index({"weight": 1, "bias": 2}),
    ]


def _get_conv_configs() -> list[BackendPatternConfig]:
    """2d conv only: the conv + relu and conv + bn (+ relu) family, no transposed conv."""
    dtype_configs = [qnnpack_weighted_op_qint8_symmetric_dtype_config,
                     executorch_weighted_op_int8_dtype_config]
    return [*_conv_and_relu_configs(_Conv2dMetadata, dtype_configs),
            *_conv_bn_configs(_Conv2dMetadata, dtype_configs)]


def _get_binary_ops_configs() -> list[BackendPatternConfig]:
    """add / sub / mul, optionally followed by relu."""
    dtype_configs = [qnnpack_default_op_qint8_symmetric_dtype_config,
                     executorch_weighted_op_int8_dtype_config]
    num_tensor_args_to_observation_type = {0: _DIFFERENT, 1: _SHARED, 2: _DIFFERENT}
    return [
        _config(pattern, dtype_configs)._set_num_tensor_args_to_observation_type(
            num_tensor_args_to_observation_type)
        for op in (operator.add, torch.add, operator.sub, torch.sub, operator.mul, torch.mul)
        for pattern in ((op, nn.ReLU), (op, F.relu), (op, torch.relu), op)
    ]


def _get_share_qparams_ops_configs() -> list[BackendPatternConfig]:
    return [_config(op, _STATIC_OPS, _SHARED) for op in _SHARE_QPARAMS_OPS]


def _get_bn_configs() -> list[BackendPatternConfig]:
    return [_config(nn.BatchNorm2d, _STATIC_OPS)]


def _get_cat_configs() -> list[BackendPatternConfig]:
    return [_config(op, _STATIC_OPS, _SHARED)
            for op in (torch.cat, torch.concat, torch.concatenate)]


def _get_embedding_op_configs() -> list[BackendPatternConfig]:
    dtype_configs = [executorch_weight_only_quint8_dtype_config]
    configs: list[BackendPatternConfig] = []
    for embedding, qat_embedding, ref_embedding in (
        (nn.Embedding, nnqat.Embedding, nnqr.Embedding),
        (nn.EmbeddingBag, nnqat.EmbeddingBag, nnqr.EmbeddingBag),
    ):
        configs.append(_config(embedding, dtype_configs).set_qat_module(qat_embedding)
                       .set_root_module(embedding).set_reference_quantized_module(ref_embedding))
        configs.append(_config(qat_embedding, dtype_configs).set_root_module(embedding)
                       .set_reference_quantized_module(ref_embedding))
        # as upstream, functional embedding is (re)set once per module kind
        configs.append(_config(F.embedding, dtype_configs)._set_input_type_to_index(
            {"weight": 1}))
    return configs


def get_executorch_backend_config() -> BackendConfig:
    """The ``BackendConfig`` for backends reached through ExecuTorch.

    Example::

        >>> get_executorch_backend_config().name
        'executorch'
    """
    return (
        BackendConfig("executorch")
        .set_backend_pattern_configs(_get_linear_configs())
        .set_backend_pattern_configs(_get_conv_configs())
        .set_backend_pattern_configs(_get_binary_ops_configs())
        .set_backend_pattern_configs(_get_share_qparams_ops_configs())
        .set_backend_pattern_configs(_get_bn_configs())
        .set_backend_pattern_configs(_get_cat_configs())
        .set_backend_pattern_configs(_get_embedding_op_configs())
    )
