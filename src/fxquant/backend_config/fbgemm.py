"""The FBGEMM backend: PyTorch's FBGEMM kernels (x86 server CPUs)."""

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
from fxquant.backend_config.dtype_config import DTypeConfig

__all__ = ["get_fbgemm_backend_config"]

fbgemm_weighted_op_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
    weight_dtype=torch.qint8, bias_dtype=torch.float,
)
fbgemm_default_op_quint8_dtype_config = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8)
fbgemm_default_op_fp16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float16,
    weight_dtype=torch.float16, bias_dtype=torch.float16,
)
fbgemm_default_dynamic_int8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.float,
    weight_dtype=torch.qint8, bias_dtype=torch.float, is_dynamic=True,
)
fbgemm_default_dynamic_float16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float,
    weight_dtype=torch.float16, bias_dtype=torch.float, is_dynamic=True,
)
fbgemm_weight_only_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint8,
)
fbgemm_weight_only_quint4x2_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint4x2,
)


def get_fbgemm_backend_config() -> BackendConfig:
    """The ``BackendConfig`` of PyTorch's FBGEMM kernels (x86 server CPUs).

    Example::

        >>> get_fbgemm_backend_config().name
        'fbgemm'
    """
    quint8_ops = [fbgemm_default_op_quint8_dtype_config]
    dynamic = [fbgemm_default_dynamic_int8_dtype_config, fbgemm_default_dynamic_float16_dtype_config]
    weight_only = [fbgemm_weight_only_quint8_dtype_config, fbgemm_weight_only_quint4x2_dtype_config]
    return (
        BackendConfig("fbgemm")
        .set_backend_pattern_configs(_get_conv_configs([fbgemm_weighted_op_quint8_dtype_config]))
        .set_backend_pattern_configs(_get_linear_configs([fbgemm_weighted_op_quint8_dtype_config, *dynamic]))
        .set_backend_pattern_configs(_get_binary_op_configs([fbgemm_default_op_quint8_dtype_config]))
        .set_backend_pattern_config(_get_cat_config(quint8_ops))
        .set_backend_pattern_configs(_get_default_op_configs(quint8_ops))
        .set_backend_pattern_configs(_get_fixed_qparams_op_configs([fbgemm_default_op_quint8_dtype_config]))
        .set_backend_pattern_configs(_get_share_qparams_op_configs(quint8_ops))
        .set_backend_pattern_configs(_get_tensor_info_op_configs(quint8_ops))
        .set_backend_pattern_configs(_get_bn_configs(quint8_ops))
        .set_backend_pattern_configs(_get_rnn_op_configs(dynamic))
        .set_backend_pattern_configs(_get_embedding_op_configs(weight_only))
    )
