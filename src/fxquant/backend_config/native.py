"""The native backend (fbgemm / qnnpack kernels): what ``torch.ops.quantized`` can run."""

from __future__ import annotations

from typing import Any

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
    _get_ln_configs,
    _get_rnn_op_configs,
    _get_share_qparams_op_configs,
    _get_tensor_info_op_configs,
)
from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.clamp_output import observe_after_clamp
from fxquant.backend_config.dtype_config import DTypeConfig

__all__ = [
    "default_dynamic_float16_dtype_config",
    "default_dynamic_int8_dtype_config",
    "default_op_fp16_dtype_config",
    "default_op_quint8_dtype_config",
    "get_native_backend_config",
    "get_native_backend_config_dict",
    "get_test_only_legacy_native_backend_config",
    "get_test_only_legacy_native_backend_config_dict",
    "input_output_only_quint8_dtype_config",
    "weight_only_quint4x2_dtype_config",
    "weight_only_quint8_dtype_config",
]

weighted_op_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
    weight_dtype=torch.qint8, bias_dtype=torch.float,
)
default_op_quint8_dtype_config = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8)
default_op_fp16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float16,
    weight_dtype=torch.float16, bias_dtype=torch.float16,
)
default_dynamic_int8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.float,
    weight_dtype=torch.qint8, bias_dtype=torch.float, is_dynamic=True,
)
default_dynamic_float16_dtype_config = DTypeConfig(
    input_dtype=torch.float16, output_dtype=torch.float,
    weight_dtype=torch.float16, bias_dtype=torch.float, is_dynamic=True,
)
# quantized activations around a float-weighted op (layer norm)
input_output_only_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.quint8, output_dtype=torch.quint8,
    weight_dtype=torch.float, bias_dtype=torch.float,
)
weight_only_quint8_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint8,
)
weight_only_quint4x2_dtype_config = DTypeConfig(
    input_dtype=torch.float, output_dtype=torch.float, weight_dtype=torch.quint4x2,
)


def _native_backend_config(name: str, *, with_fp16_ops: bool) -> BackendConfig:
    fp16 = [default_op_fp16_dtype_config] if with_fp16_ops else []
    linear_dtype_configs = [weighted_op_quint8_dtype_config, default_dynamic_int8_dtype_config,
                            default_dynamic_float16_dtype_config, *fp16]
    quint8_ops = [default_op_quint8_dtype_config]
    quint8_and_fp16_ops = [default_op_quint8_dtype_config, *fp16]
    dynamic = [default_dynamic_int8_dtype_config, default_dynamic_float16_dtype_config]
    weight_only = [weight_only_quint8_dtype_config, weight_only_quint4x2_dtype_config]
    return (
        BackendConfig(name)
        .set_backend_pattern_configs(_get_conv_configs([weighted_op_quint8_dtype_config]))
        .set_backend_pattern_configs(_get_linear_configs(linear_dtype_configs))
        .set_backend_pattern_configs(_get_binary_op_configs(quint8_and_fp16_ops))
        .set_backend_pattern_config(_get_cat_config(quint8_ops))
        .set_backend_pattern_configs(_get_default_op_configs(quint8_ops))
        .set_backend_pattern_configs(_get_fixed_qparams_op_configs(quint8_and_fp16_ops))
        .set_backend_pattern_configs(_get_share_qparams_op_configs(quint8_and_fp16_ops))
        .set_backend_pattern_configs(_get_tensor_info_op_configs(quint8_ops))
        .set_backend_pattern_configs(_get_bn_configs(quint8_ops))
        .set_backend_pattern_configs(_get_ln_configs([input_output_only_quint8_dtype_config]))
        .set_backend_pattern_configs(_get_rnn_op_configs(dynamic))
        .set_backend_pattern_configs(_get_embedding_op_configs(weight_only))
    )


def get_native_backend_config(*, upstream_compatible: bool = False) -> BackendConfig:
    """The ``BackendConfig`` of PyTorch's native quantized kernels (fbgemm / qnnpack).

    ``upstream_compatible=True`` gives exactly upstream's patterns (a conv/linear output is
    observed before a following ReLU6/hardtanh); by default the patterns of
    :func:`~fxquant.backend_config.clamp_output.observe_after_clamp` are added, which observe
    it after the clamp.

    Example::

        >>> config = get_native_backend_config()
        >>> config.name
        'native'
    """
    config = _native_backend_config("native", with_fp16_ops=False)
    return config if upstream_compatible else observe_after_clamp(config)


def get_native_backend_config_dict(*, upstream_compatible: bool = False) -> dict[str, Any]:
    """:func:`get_native_backend_config` as a dictionary."""
    return get_native_backend_config(upstream_compatible=upstream_compatible).to_dict()


def get_test_only_legacy_native_backend_config() -> BackendConfig:
    """The native config plus static float16 linear, binary, fixed-qparams and
    shared-qparams ops (kept for tests of the float16 path)."""
    return _native_backend_config("_native_and_fp16", with_fp16_ops=True)


def get_test_only_legacy_native_backend_config_dict() -> dict[str, Any]:
    """:func:`get_test_only_legacy_native_backend_config` as a dictionary."""
    return get_test_only_legacy_native_backend_config().to_dict()
