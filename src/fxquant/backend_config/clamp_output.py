"""Observe a conv/linear output *after* a following ReLU6 / hardtanh clamp.

Upstream's ready configs quantize ``conv → relu6`` as two patterns: the conv's output gets its
own observer and the ReLU6 shares it. That observer sees the unclamped conv output, whose
range (after batch-norm folding) is often ten times the clamp's, so the int8 grid is mostly
spent on values the clamp throws away: upstream's FX int8 EfficientNet-Lite0 agrees with the
float model on about a third of real photos.

:func:`observe_after_clamp` adds one pattern per (conv/linear root, clamp) pair, observed at
the clamp's output only. The conv's output is not quantized on its own, and lowering runs the
quantized conv with the clamp's output parameters: when those cover no more than the clamp's
interval (what any observer that saw the clamped values picks), ``q(clamp(conv(x)))`` equals
``q(conv(x))`` and the clamp disappears. The ready configs include these patterns unless
called with ``upstream_compatible=True``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

import fxquant.nn.intrinsic as nni
import fxquant.nn.intrinsic.qat as nniqat
import fxquant.nn.qat as nnqat
from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.pattern_config import BackendPatternConfig, ObservationType

__all__ = ["CLAMPABLE_ROOTS", "CLAMP_OPS", "observe_after_clamp"]

# ops that clamp to a fixed interval: [0, 6] or the module's / call's (min_val, max_val)
CLAMP_OPS: tuple[object, ...] = (nn.ReLU6, F.relu6, nn.Hardtanh, F.hardtanh, F.hardtanh_)

# patterns whose output may be clamped: conv / linear modules (float, batch-norm fused, QAT)
# and their functional forms; those already fused with a ReLU are left out
CLAMPABLE_ROOTS: tuple[object, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nnqat.Conv1d, nnqat.Conv2d, nnqat.Conv3d, nnqat.Linear,
    nni.ConvBn1d, nni.ConvBn2d, nni.ConvBn3d, nni.LinearBn1d,
    nniqat.ConvBn1d, nniqat.ConvBn2d, nniqat.ConvBn3d, nniqat.LinearBn1d,
    F.conv1d, F.conv2d, F.conv3d, F.linear,
)


def _clamp_pattern(root: BackendPatternConfig, clamp: object) -> BackendPatternConfig:
    config = (BackendPatternConfig((root.pattern, clamp))
              .set_observation_type(ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT)
              .set_dtype_configs(root.dtype_configs))
    return config._set_input_type_to_index(dict(root._input_type_to_index))


def observe_after_clamp(backend_config: BackendConfig) -> BackendConfig:
    """A new ``BackendConfig`` with ``backend_config``'s patterns plus ``(root, clamp)`` for
    every conv/linear root pattern it has (see :data:`CLAMPABLE_ROOTS`, :data:`CLAMP_OPS`),
    with the root's dtype configs. Patterns it already has are kept as they are.

    Example::

        >>> config = observe_after_clamp(get_x86_backend_config(upstream_compatible=True))
        >>> (nn.ReLU6, nn.Conv2d) in config._pattern_complex_format_to_config
        True
    """
    result = BackendConfig(backend_config.name).set_backend_pattern_configs(backend_config.configs)
    existing = backend_config._pattern_complex_format_to_config
    for config in backend_config.configs:
        if config.pattern not in CLAMPABLE_ROOTS or config._pattern_complex_format is not None:
            continue
        for clamp in CLAMP_OPS:
            if (clamp, config.pattern) not in existing:
                result.set_backend_pattern_config(_clamp_pattern(config, clamp))
    return result
