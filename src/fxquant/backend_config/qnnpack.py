"""The QNNPACK backend: PyTorch's kernels for ARM / mobile CPUs.

Besides the usual quint8 configs, QNNPACK runs symmetric qint8 (XNNPACK) kernels, which need
weights in ``[-127, 127]`` and scales of at least ``2**-12``.
"""

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
)
from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.clamp_output import observe_after_clamp
from fxquant.backend_config.dtype_config import DTypeConfig, DTypeWithConstraints

__all__ = ["get_qnnpack_backend_config"]

qnnpack_weighted_op_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
    weight_dtype=torch.qint8, bias_dtype=torch.float,
)
qnnpack_default_op_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
)
qnnpack_default_op_fp16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float16,
    weight_dtype=torch.float16, bias_dtype=torch.float16,
)
qnnpack_default_dynamic_int8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.float,
    weight_dtype=torch.qint8, bias_dtype=torch.float, is_dynamic=True,
)
qnnpack_default_dynamic_float16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float,
    weight_dtype=torch.float16, bias_dtype=torch.float, is_dynamic=True,
)
qnnpack_weight_only_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint8,
)
qnnpack_weight_only_quint4x2_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint4x2,
)

# symmetric qint8 (XNNPACK): activations with scale >= 2**-12, weights also in [-127, 127]
qnnpack_act_qint8_scale_min_2_neg_12 = DTypeWithConstraints(
    dtype=torch.qint8, scale_min_lower_bound=2**-12,
)
qnnpack_weight_qint8_neg_127_to_127_scale_min_2_neg_12 = DTypeWithConstraints(
    dtype=torch.qint8, quant_min_lower_bound=-127, quant_max_upper_bound=127,
    scale_min_lower_bound=2**-12,
)
qnnpack_weighted_op_qint8_symmetric_dtype_config = DTypeConfig(
    input_dtype=qnnpack_act_qint8_scale_min_2_neg_12,
    output_dtype=qnnpack_act_qint8_scale_min_2_neg_12,
    weight_dtype=qnnpack_weight_qint8_neg_127_to_127_scale_min_2_neg_12,
    bias_dtype=torch.float,
)
qnnpack_default_op_qint8_symmetric_dtype_config = DTypeConfig(
    input_dtype=qnnpack_act_qint8_scale_min_2_neg_12,
    output_dtype=qnnpack_act_qint8_scale_min_2_neg_12,
)


def get_qnnpack_backend_config(*, upstream_compatible: bool = False) -> BackendConfig:
    """The ``BackendConfig`` of PyTorch's QNNPACK kernels (quint8 and symmetric qint8).

    ``upstream_compatible=True`` gives exactly upstream's patterns (a conv/linear output is
    observed before a following ReLU6/hardtanh); by default the patterns of
    :func:`~fxquant.backend_config.clamp_output.observe_after_clamp` are added, which observe
    it after the clamp.

    Example::

        >>> get_qnnpack_backend_config().name
        'qnnpack'
    """
    weighted = [qnnpack_weighted_op_qint8_symmetric_dtype_config,
                qnnpack_weighted_op_quint8_dtype_config]
    ops = [qnnpack_default_op_qint8_symmetric_dtype_config,
           qnnpack_default_op_quint8_dtype_config]
    dynamic = [qnnpack_default_dynamic_int8_dtype_config,
               qnnpack_default_dynamic_float16_dtype_config]
    weight_only = [qnnpack_weight_only_quint8_dtype_config,
                   qnnpack_weight_only_quint4x2_dtype_config]
    config = (
        BackendConfig("qnnpack")
        .set_backend_pattern_configs(_get_conv_configs(weighted))
        .set_backend_pattern_configs(_get_linear_configs([*weighted, *dynamic]))
        .set_backend_pattern_configs(_get_binary_op_configs(ops))
        .set_backend_pattern_config(_get_cat_config(ops))
        .set_backend_pattern_configs(_get_default_op_configs(ops))
        .set_backend_pattern_configs(_get_fixed_qparams_op_configs(ops))
        .set_backend_pattern_configs(_get_share_qparams_op_configs(ops))
        .set_backend_pattern_configs(_get_bn_configs(ops))
        .set_backend_pattern_configs(_get_rnn_op_configs(dynamic))
        .set_backend_pattern_configs(_get_embedding_op_configs(weight_only))
    )
    return config if upstream_compatible else observe_after_clamp(config)
