"""What a backend can run quantized: ``BackendConfig`` and the ready configs.

* :mod:`~fxquant.backend_config.backend_config`: ``BackendConfig``, ``BackendPatternConfig``,
  ``DTypeConfig``, ``DTypeWithConstraints``, ``ObservationType``;
* ready configs: :mod:`~fxquant.backend_config.native`, ``x86``, ``fbgemm``, ``qnnpack``,
  ``onednn``, ``executorch``, ``tensorrt``;
* :mod:`~fxquant.backend_config.utils`: the lookups the FX flow makes;
* :mod:`~fxquant.backend_config.support`: whether a backend honours a qconfig, and why not;
* :mod:`~fxquant.backend_config.clamp_output`: conv/linear → ReLU6/hardtanh observed after the
  clamp, which the native, x86, fbgemm, qnnpack and oneDNN configs include unless called with
  ``upstream_compatible=True``.
"""

from fxquant.backend_config.backend_config import (
    BackendConfig,
    BackendPatternConfig,
    DTypeConfig,
    DTypeWithConstraints,
    ObservationType,
)
from fxquant.backend_config.clamp_output import observe_after_clamp
from fxquant.backend_config.executorch import get_executorch_backend_config
from fxquant.backend_config.fbgemm import get_fbgemm_backend_config
from fxquant.backend_config.native import get_native_backend_config, get_native_backend_config_dict
from fxquant.backend_config.onednn import get_onednn_backend_config
from fxquant.backend_config.qnnpack import get_qnnpack_backend_config
from fxquant.backend_config.support import (
    QConfigSupport,
    UnsupportedQConfigWarning,
    backend_supports_qconfig,
    dtype_config_supports,
    dtype_configs_support,
)
from fxquant.backend_config.tensorrt import (
    get_tensorrt_backend_config,
    get_tensorrt_backend_config_dict,
)
from fxquant.backend_config.x86 import get_x86_backend_config

__all__ = [
    "BackendConfig",
    "BackendPatternConfig",
    "DTypeConfig",
    "DTypeWithConstraints",
    "ObservationType",
    "QConfigSupport",
    "UnsupportedQConfigWarning",
    "backend_supports_qconfig",
    "dtype_config_supports",
    "dtype_configs_support",
    "get_executorch_backend_config",
    "get_fbgemm_backend_config",
    "get_native_backend_config",
    "get_native_backend_config_dict",
    "get_onednn_backend_config",
    "get_qnnpack_backend_config",
    "get_tensorrt_backend_config",
    "get_tensorrt_backend_config_dict",
    "get_x86_backend_config",
    "observe_after_clamp",
]
