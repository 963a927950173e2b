"""Questions about a qconfig that preparation asks: is it valid for this module, is its
activation observer memoryless, does it reuse the input's observer.

Each question builds one example observer from the qconfig's constructors and inspects it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fxquant.fake_quantize.base import FakeQuantizeBase
from fxquant.observers.minmax import PerChannelMinMaxObserver
from fxquant.observers.misc import NoopObserver, ReuseInputObserver
from fxquant.qconfig.qconfig import QConfig, QConfigAny

__all__ = [
    "UnsupportedQConfigError",
    "activation_is_memoryless",
    "assert_valid_qconfig",
    "is_reuse_input_qconfig",
]

_CONV_TRANSPOSE_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class UnsupportedQConfigError(ValueError, AssertionError):
    """A qconfig that a module cannot be quantized with.

    Also an ``AssertionError``, which is what upstream raises, so existing ``except`` clauses
    keep working after migrating.
    """


def assert_valid_qconfig(qconfig: QConfigAny, module: nn.Module) -> None:
    """Raise if ``module`` cannot be quantized with ``qconfig``.

    The one known restriction: transposed convolutions have no per-channel weight kernels.
    ``None`` (keep in float) and a ``None`` weight constructor are always valid.

    Raises:
        UnsupportedQConfigError: a per-channel weight observer on a ConvTranspose module.
    """
    if qconfig is None or not isinstance(module, _CONV_TRANSPOSE_MODULES):
        return
    if qconfig.weight is None:
        return
    # MovingAveragePerChannelMinMaxObserver is a subclass, so this covers both.
    if isinstance(qconfig.weight(), PerChannelMinMaxObserver):
        raise UnsupportedQConfigError(
            f"{type(module).__name__} has no per-channel weight quantization; give it a qconfig "
            "with a per-tensor weight observer (e.g. default_weight_observer, or "
            "default_weight_fake_quant for QAT) via QConfigMapping.set_object_type"
        )


def _is_memoryless(observer: Any) -> bool:
    return getattr(observer, "averaging_constant", None) == 1


def activation_is_memoryless(qconfig: QConfig) -> bool:
    """Whether the activation observer forgets past batches: a moving average with
    ``averaging_constant == 1`` (for a fake-quantizer, the observer inside it)."""
    activation = qconfig.activation()
    if isinstance(activation, FakeQuantizeBase) and hasattr(activation, "activation_post_process"):
        return _is_memoryless(activation.activation_post_process)
    return _is_memoryless(activation)


def is_reuse_input_qconfig(qconfig: QConfigAny) -> bool:
    """Whether ``qconfig`` makes an op share its input's observer (like
    :data:`~fxquant.qconfig.default_reuse_input_qconfig`)."""
    return (
        qconfig is not None
        and isinstance(qconfig.activation(), ReuseInputObserver)
        and isinstance(qconfig.weight(), NoopObserver)
    )
