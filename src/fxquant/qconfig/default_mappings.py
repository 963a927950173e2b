"""The default :class:`QConfigMapping` of each backend, for post-training and QAT.

On top of the backend's global qconfig the default mapping sets, per op:

* ``"reshape"``: reuse the input's observer (its output has the input's range);
* transposed convolutions: per-tensor weights on fbgemm/x86, whose kernels lack per-channel
  ConvTranspose (https://github.com/pytorch/pytorch/issues/47535);
* layer norm: float weights (the kernel takes float weights, so observing them would only add
  a quantize/dequantize pair);
* PReLU: quint8 weights (:data:`default_quint8_weight_qconfig`);
* sigmoid, hardsigmoid, softmax, tanh in module, function and method form: fixed qparams,
  because their output range is known in advance ([0, 1] or [-1, 1]).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fxquant.fake_quantize import FixedQParamsFakeQuantize
from fxquant.fake_quantize.defaults import default_weight_fake_quant
from fxquant.observers.defaults import (
    default_fixed_qparams_range_0to1_observer,
    default_fixed_qparams_range_neg1to1_observer,
    default_placeholder_observer,
    default_weight_observer,
)
from fxquant.qconfig.backend import get_default_qat_qconfig, get_default_qconfig
from fxquant.qconfig.defaults import (
    default_quint8_weight_qconfig,
    default_reuse_input_qconfig,
    default_symmetric_qnnpack_qat_qconfig,
    default_symmetric_qnnpack_qconfig,
)
from fxquant.qconfig.mapping import ObjectType, QConfigMapping
from fxquant.qconfig.qconfig import QConfig, QConfigAny

__all__ = [
    "FIXED_QPARAMS_OP_TO_OBSERVER",
    "get_default_qat_qconfig_dict",
    "get_default_qat_qconfig_mapping",
    "get_default_qconfig_dict",
    "get_default_qconfig_mapping",
    "get_symmetric_qnnpack_qat_qconfig_mapping",
    "get_symmetric_qnnpack_qconfig_mapping",
]

# Ops whose output range is fixed, with the observer of that range; in upstream's order, which
# is also the order of their entries in the default mappings.
FIXED_QPARAMS_OP_TO_OBSERVER: dict[ObjectType, Any] = {
    nn.Hardsigmoid: default_fixed_qparams_range_0to1_observer,
    F.hardsigmoid: default_fixed_qparams_range_0to1_observer,
    "hardsigmoid": default_fixed_qparams_range_0to1_observer,
    "hardsigmoid_": default_fixed_qparams_range_0to1_observer,
    nn.Sigmoid: default_fixed_qparams_range_0to1_observer,
    torch.sigmoid: default_fixed_qparams_range_0to1_observer,
    "sigmoid": default_fixed_qparams_range_0to1_observer,
    "sigmoid_": default_fixed_qparams_range_0to1_observer,
    nn.Softmax: default_fixed_qparams_range_0to1_observer,
    nn.Tanh: default_fixed_qparams_range_neg1to1_observer,
    torch.tanh: default_fixed_qparams_range_neg1to1_observer,
    "tanh": default_fixed_qparams_range_neg1to1_observer,
    "tanh_": default_fixed_qparams_range_neg1to1_observer,
}

_CONV_TRANSPOSE_TYPES: tuple[ObjectType, ...] = (
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
)


def _fixed_qparams_qconfigs(is_qat: bool, weight: Any) -> dict[ObjectType, QConfig]:
    """One qconfig per fixed-range observer, shared by every op of that range."""
    qconfig_of_observer: dict[Any, QConfig] = {}
    result: dict[ObjectType, QConfig] = {}
    for op, observer in FIXED_QPARAMS_OP_TO_OBSERVER.items():
        if observer not in qconfig_of_observer:
            activation = (
                FixedQParamsFakeQuantize.with_args(observer=observer) if is_qat else observer
            )
            qconfig_of_observer[observer] = QConfig(activation=activation, weight=weight)
        result[op] = qconfig_of_observer[observer]
    return result


def _default_mapping(is_qat: bool, backend: str, version: int) -> QConfigMapping:
    if is_qat:
        qconfig = get_default_qat_qconfig(backend, version)
        per_tensor_weight: Any = default_weight_fake_quant
    else:
        qconfig = get_default_qconfig(backend, version)
        per_tensor_weight = default_weight_observer
    if backend in ("fbgemm", "x86"):
        conv_transpose_qconfig = QConfig(activation=qconfig.activation, weight=per_tensor_weight)
    else:
        conv_transpose_qconfig = qconfig
    layer_norm_qconfig = QConfig(activation=qconfig.activation, weight=default_placeholder_observer)

    mapping = QConfigMapping().set_global(qconfig)
    mapping.set_object_type("reshape", default_reuse_input_qconfig)
    for conv_transpose in _CONV_TRANSPOSE_TYPES:
        mapping.set_object_type(conv_transpose, conv_transpose_qconfig)
    mapping.set_object_type(F.layer_norm, layer_norm_qconfig)
    mapping.set_object_type(nn.LayerNorm, layer_norm_qconfig)
    mapping.set_object_type(nn.PReLU, default_quint8_weight_qconfig)
    for op, fixed_qconfig in _fixed_qparams_qconfigs(is_qat, per_tensor_weight).items():
        mapping.set_object_type(op, fixed_qconfig)
    return mapping


def get_default_qconfig_mapping(backend: str = "x86", version: int = 0) -> QConfigMapping:
    """The default post-training-quantization mapping of ``backend``.

    The global qconfig is :func:`~fxquant.qconfig.get_default_qconfig` ``(backend, version)``;
    see this module's docstring for the per-op entries.

    Args:
        backend: ``"x86"`` (default), ``"fbgemm"``, ``"qnnpack"`` or ``"onednn"``.
        version: only ``0`` exists.

    Example::

        qconfig_mapping = get_default_qconfig_mapping("x86")
        prepared = prepare_fx(model, qconfig_mapping, example_inputs)
    """
    return _default_mapping(False, backend, version)


def get_default_qat_qconfig_mapping(backend: str = "x86", version: int = 1) -> QConfigMapping:
    """The default quantization-aware-training mapping of ``backend``.

    Like :func:`get_default_qconfig_mapping` with fake-quantizers: the global qconfig is
    :func:`~fxquant.qconfig.get_default_qat_qconfig` ``(backend, version)`` and the
    fixed-range ops get a :class:`FixedQParamsFakeQuantize`.
    """
    return _default_mapping(True, backend, version)


def _with_default_qconfig(is_qat: bool, default_qconfig: QConfig) -> QConfigMapping:
    # The qnnpack mapping with every entry except the fixed-range ones replaced.
    mapping = (
        get_default_qat_qconfig_mapping("qnnpack")
        if is_qat
        else get_default_qconfig_mapping("qnnpack")
    )
    mapping.set_global(default_qconfig)
    for object_type in mapping.object_type_qconfigs:
        if object_type not in FIXED_QPARAMS_OP_TO_OBSERVER:
            mapping.set_object_type(object_type, default_qconfig)
    return mapping


def get_symmetric_qnnpack_qconfig_mapping() -> QConfigMapping:
    """The qnnpack mapping with :data:`default_symmetric_qnnpack_qconfig` for every
    non-fixed-range entry (upstream's ``_get_symmetric_qnnpack_qconfig_mapping``)."""
    return _with_default_qconfig(False, default_symmetric_qnnpack_qconfig)


def get_symmetric_qnnpack_qat_qconfig_mapping() -> QConfigMapping:
    """The qnnpack QAT mapping with :data:`default_symmetric_qnnpack_qat_qconfig` for every
    non-fixed-range entry (upstream's ``_get_symmetric_qnnpack_qat_qconfig_mapping``)."""
    return _with_default_qconfig(True, default_symmetric_qnnpack_qat_qconfig)


def get_default_qconfig_dict(
    backend: str = "x86", version: int = 0
) -> dict[str, QConfigAny | list[Any]]:
    """Deprecated: ``get_default_qconfig_mapping(backend, version).to_dict()``."""
    warnings.warn(
        "get_default_qconfig_dict is deprecated and will be removed in a future version; "
        "use get_default_qconfig_mapping instead",
        FutureWarning,
        stacklevel=2,
    )
    return get_default_qconfig_mapping(backend, version).to_dict()


def get_default_qat_qconfig_dict(
    backend: str = "x86", version: int = 1
) -> dict[str, QConfigAny | list[Any]]:
    """Deprecated: ``get_default_qat_qconfig_mapping(backend, version).to_dict()``."""
    warnings.warn(
        "get_default_qat_qconfig_dict is deprecated and will be removed in a future version; "
        "use get_default_qat_qconfig_mapping instead",
        FutureWarning,
        stacklevel=2,
    )
    return get_default_qat_qconfig_mapping(backend, version).to_dict()
