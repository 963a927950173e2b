"""The x86 backend: PyTorch's x86 kernels (FBGEMM and oneDNN, chosen per op)."""

from __future__ import annotations

import torch

from fxquant.backend_config._common_operator_config_utils import (
    _get_binary_op_configs,
    _get_bn_configs,
    _get_cat_config,
    _get_conv_configs,
    _get_default_op_configs,
    _get_embedding_op_configs,
    _get_fixed_qparams_op_configs,
    _get_linear_configs,
    _get_rnn_op_configs,
    _get_share_qparams_op_configs,
    _get_tensor_info_op_configs,
)
from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.clamp_output import observe_after_clamp
from fxquant.backend_config.dtype_config import DTypeConfig

__all__ = ["get_x86_backend_config"]

x86_weighted_op_int8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
    weight_dtype=torch.qint8, bias_dtype=torch.float,
)
x86_default_op_quint8_dtype_config = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8)
x86_default_op_fp16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float16,
    weight_dtype=torch.float16, bias_dtype=torch.float16,
)
x86_default_dynamic_int8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.float,
    weight_dtype=torch.qint8, bias_dtype=torch.float, is_dynamic=True,
)
x86_default_dynamic_float16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float,
    weight_dtype=torch.float16, bias_dtype=torch.float, is_dynamic=True,
)
x86_weight_only_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint8,
)
x86_weight_only_quint4x2_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint4x2,
)


def get_x86_backend_config(*, upstream_compatible: bool = False) -> BackendConfig:
    """The ``BackendConfig`` of PyTorch's x86 kernels (FBGEMM and oneDNN, chosen per op).

    ``upstream_compatible=True`` gives exactly upstream's patterns (a conv/linear output is
    observed before a following ReLU6/hardtanh); by default the patterns of
    :func:`~fxquant.backend_config.clamp_output.observe_after_clamp` are added, which observe
    it after the clamp.

    Example::

        >>> get_x86_backend_config().name
        'x86'
    """
    config = server_cpu_backend_config("x86", binary_and_fixed_qparams=x86_weighted_op_int8_dtype_config)
    return config if upstream_compatible else observe_after_clamp(config)


def server_cpu_backend_config(name: str, *, binary_and_fixed_qparams: DTypeConfig) -> BackendConfig:
    """The pattern table shared by the x86 and fbgemm backends; they differ (as upstream's do)
    only in the dtype config of binary and fixed-qparams ops."""
    quint8_ops = [x86_default_op_quint8_dtype_config]
    dynamic = [x86_default_dynamic_int8_dtype_config, x86_default_dynamic_float16_dtype_config]
    weight_only = [x86_weight_only_quint8_dtype_config, x86_weight_only_quint4x2_dtype_config]
    return (
        BackendConfig(name)
        .set_backend_pattern_configs(_get_conv_configs([x86_weighted_op_int8_dtype_config]))
        .set_backend_pattern_configs(_get_linear_configs([x86_weighted_op_int8_dtype_config, *dynamic]))
        .set_backend_pattern_configs(_get_binary_op_configs([binary_and_fixed_qparams]))
        .set_backend_pattern_config(_get_cat_config(quint8_ops))
        .set_backend_pattern_configs(_get_default_op_configs(quint8_ops))
        .set_backend_pattern_configs(_get_fixed_qparams_op_configs([binary_and_fixed_qparams]))
        .set_backend_pattern_configs(_get_share_qparams_op_configs(quint8_ops))
        .set_backend_pattern_configs(_get_tensor_info_op_configs(quint8_ops))
        .set_backend_pattern_configs(_get_bn_configs(quint8_ops))
        .set_backend_pattern_configs(_get_rnn_op_configs(dynamic))
        .set_backend_pattern_configs(_get_embedding_op_configs(weight_only))
    )
