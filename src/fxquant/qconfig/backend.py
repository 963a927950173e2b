"""The default qconfig of each backend: ``get_default_qconfig`` / ``get_default_qat_qconfig``.

What differs between backends is a small table: whether activations drop one bit of range
(``reduce_range``: fbgemm/x86 kernels accumulate in 16 bits on older CPUs, and a 7-bit
activation range keeps them from overflowing) and whether weights are quantized per channel.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from fxquant.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from fxquant.fake_quantize.defaults import (
    default_fused_per_channel_wt_fake_quant,
    default_fused_wt_fake_quant,
    default_per_channel_weight_fake_quant,
    default_weight_fake_quant,
)
from fxquant.observers.defaults import default_per_channel_weight_observer, default_weight_observer
from fxquant.observers.histogram import HistogramObserver
from fxquant.observers.minmax import MovingAverageMinMaxObserver
from fxquant.qconfig.qconfig import QConfig

__all__ = [
    "SUPPORTED_BACKENDS",
    "UnsupportedBackendError",
    "get_default_qat_qconfig",
    "get_default_qconfig",
]

SUPPORTED_BACKENDS: tuple[str, ...] = ("fbgemm", "x86", "qnnpack", "onednn")


class UnsupportedBackendError(ValueError, AssertionError):
    """An unknown backend name or qconfig version.

    Also an ``AssertionError``, which is what upstream raises, so existing ``except`` clauses
    keep working after migrating.
    """


@dataclass(frozen=True, kw_only=True)
class _BackendChoice:
    """What a backend's default qconfig depends on."""

    ptq_reduce_range: bool
    # None: the QAT activation constructor leaves ``reduce_range`` unset (upstream's onednn
    # entry), which builds the same observer as False but compares unequal in qconfig_equals.
    qat_reduce_range: bool | None
    per_channel_weights: bool


_BACKENDS: dict[str, _BackendChoice] = {
    "fbgemm": _BackendChoice(
        ptq_reduce_range=True, qat_reduce_range=True, per_channel_weights=True
    ),
    "x86": _BackendChoice(ptq_reduce_range=True, qat_reduce_range=True, per_channel_weights=True),
    "qnnpack": _BackendChoice(
        ptq_reduce_range=False, qat_reduce_range=False, per_channel_weights=False
    ),
    "onednn": _BackendChoice(
        ptq_reduce_range=False, qat_reduce_range=None, per_channel_weights=True
    ),
}


def _backend_choice(backend: str) -> _BackendChoice:
    if backend not in _BACKENDS:
        raise UnsupportedBackendError(
            f"backend {backend!r} is not supported; backend must be one of "
            f"{list(SUPPORTED_BACKENDS)}"
        )
    return _BACKENDS[backend]


def get_default_qconfig(backend: str = "x86", version: int = 0) -> QConfig:
    """The default post-training qconfig of ``backend``.

    Activations use a :class:`HistogramObserver` (quint8, ``reduce_range`` on fbgemm and x86);
    weights are qint8 symmetric, per channel except on qnnpack.

    Args:
        backend: ``"x86"`` (default), ``"fbgemm"``, ``"qnnpack"`` or ``"onednn"``.
        version: only ``0`` exists.

    Raises:
        UnsupportedBackendError: for an unknown backend or version.

    Example::

        qconfig = get_default_qconfig("qnnpack")
    """
    choice = _backend_choice(backend)
    if version != 0:
        raise UnsupportedBackendError(
            f"version {version!r} of get_default_qconfig is not supported; the only version is 0"
        )
    if backend == "onednn" and not torch.cpu._is_vnni_supported():
        warnings.warn(
            "the onednn default qconfig uses the full activation range (reduce_range=False), "
            "which may lose accuracy on CPUs without VNNI (Vector Neural Network Instructions)",
            stacklevel=2,
        )
    weight = (
        default_per_channel_weight_observer
        if choice.per_channel_weights
        else default_weight_observer
    )
    return QConfig(
        activation=HistogramObserver.with_args(reduce_range=choice.ptq_reduce_range),
        weight=weight,
    )


def get_default_qat_qconfig(backend: str = "x86", version: int = 1) -> QConfig:
    """The default quantization-aware-training qconfig of ``backend``.

    Activations are fake-quantized to quint8 [0, 255] with a moving-average min-max observer
    (a histogram would be too slow to update every step); weights as in
    :func:`get_default_qconfig`. Version ``1`` (default) uses the fused observer + fake-quantize
    module :class:`FusedMovingAvgObsFakeQuantize`; version ``0`` the unfused
    :class:`FakeQuantize`.

    Args:
        backend: ``"x86"`` (default), ``"fbgemm"``, ``"qnnpack"`` or ``"onednn"``.
        version: ``0`` or ``1``.

    Raises:
        UnsupportedBackendError: for an unknown backend or version.
    """
    choice = _backend_choice(backend)
    if version == 0:
        fake_quant: Any = FakeQuantize
        weight = (
            default_per_channel_weight_fake_quant
            if choice.per_channel_weights
            else default_weight_fake_quant
        )
    elif version == 1:
        fake_quant = FusedMovingAvgObsFakeQuantize
        weight = (
            default_fused_per_channel_wt_fake_quant
            if choice.per_channel_weights
            else default_fused_wt_fake_quant
        )
    else:
        raise UnsupportedBackendError(
            f"version {version!r} of get_default_qat_qconfig is not supported; "
            "the version must be 0 or 1"
        )
    activation_args: dict[str, Any] = {
        "observer": MovingAverageMinMaxObserver,
        "quant_min": 0,
        "quant_max": 255,
    }
    if choice.qat_reduce_range is not None:
        activation_args["reduce_range"] = choice.qat_reduce_range
    return QConfig(activation=fake_quant.with_args(**activation_args), weight=weight)
