"""The FBGEMM backend: PyTorch's FBGEMM kernels (x86 server CPUs).

Its dtype configs have the same values as the x86 backend's (upstream defines both sets), and
its pattern table is the x86 one except for binary and fixed-qparams ops.
"""

from __future__ import annotations

from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.clamp_output import observe_after_clamp
from fxquant.backend_config.x86 import (
    server_cpu_backend_config,
    x86_default_dynamic_float16_dtype_config,
    x86_default_dynamic_int8_dtype_config,
    x86_default_op_fp16_dtype_config,
    x86_default_op_quint8_dtype_config,
    x86_weight_only_quint4x2_dtype_config,
    x86_weight_only_quint8_dtype_config,
    x86_weighted_op_int8_dtype_config,
)

__all__ = ["get_fbgemm_backend_config"]

# upstream's names for the same values
fbgemm_weighted_op_quint8_dtype_config = x86_weighted_op_int8_dtype_config
fbgemm_default_op_quint8_dtype_config = x86_default_op_quint8_dtype_config
fbgemm_default_op_fp16_dtype_config = x86_default_op_fp16_dtype_config
fbgemm_default_dynamic_int8_dtype_config = x86_default_dynamic_int8_dtype_config
fbgemm_default_dynamic_float16_dtype_config = x86_default_dynamic_float16_dtype_config
fbgemm_weight_only_quint8_dtype_config = x86_weight_only_quint8_dtype_config
fbgemm_weight_only_quint4x2_dtype_config = x86_weight_only_quint4x2_dtype_config


def get_fbgemm_backend_config(*, upstream_compatible: bool = False) -> BackendConfig:
    """The ``BackendConfig`` of PyTorch's FBGEMM kernels (x86 server CPUs).

    ``upstream_compatible=True`` gives exactly upstream's patterns (a conv/linear output is
    observed before a following ReLU6/hardtanh); by default the patterns of
    :func:`~fxquant.backend_config.clamp_output.observe_after_clamp` are added, which observe
    it after the clamp.

    Example::

        >>> get_fbgemm_backend_config().name
        'fbgemm'
    """
    config = server_cpu_backend_config(
        "fbgemm", binary_and_fixed_qparams=fbgemm_default_op_quint8_dtype_config
    )
    return config if upstream_compatible else observe_after_clamp(config)
