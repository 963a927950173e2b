"""The TensorRT backend (experimental upstream too): symmetric qint8 activations and weights."""

from __future__ import annotations

from typing import Any

import torch

from fxquant.backend_config._common_operator_config_utils import (
    _get_binary_op_configs,
    _get_conv_configs,
    _get_linear_configs,
    _get_share_qparams_op_configs,
    _get_tensor_info_op_configs,
)
from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.dtype_config import DTypeConfig
from fxquant.backend_config.pattern_config import BackendPatternConfig, ObservationType

__all__ = ["get_tensorrt_backend_config", "get_tensorrt_backend_config_dict"]


def get_tensorrt_backend_config() -> BackendConfig:
    """The ``BackendConfig`` for TensorRT (qint8 everywhere; experimental).

    Example::

        >>> get_tensorrt_backend_config().name
        'tensorrt'
    """
    weighted = DTypeConfig(input_dtype=torch.qint8, output_dtype=torch.qint8,
                           weight_dtype=torch.qint8, bias_dtype=torch.float)
    non_weighted = DTypeConfig(input_dtype=torch.qint8, output_dtype=torch.qint8)
    addmm_config = (
        BackendPatternConfig(torch.addmm)
        .set_observation_type(ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT)
        .add_dtype_config(weighted)
        ._set_input_type_to_index({"bias": 0, "input": 1, "weight": 2})
    )
    cat_config = (
        BackendPatternConfig(torch.cat)
        .set_observation_type(ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT)
        .add_dtype_config(non_weighted)
    )
    return (
        BackendConfig("tensorrt")
        .set_backend_pattern_configs(_get_conv_configs([weighted]))
        .set_backend_pattern_config(addmm_config)
        .set_backend_pattern_config(cat_config)
        .set_backend_pattern_configs(_get_linear_configs([weighted]))
        .set_backend_pattern_configs(_get_binary_op_configs([weighted]))
        .set_backend_pattern_configs(_get_share_qparams_op_configs([non_weighted]))
        .set_backend_pattern_configs(_get_tensor_info_op_configs([non_weighted]))
    )


def get_tensorrt_backend_config_dict() -> dict[str, Any]:
    """:func:`get_tensorrt_backend_config` as a dictionary."""
    return get_tensorrt_backend_config().to_dict()
