"""Per-token dynamic int8 quantization of linear layers: the qconfig and its marker observer.

``per_token_dynamic_qconfig`` quantizes a linear layer's *activations* at run time with one
scale per token (per row of the input, all leading dimensions kept), and its *weights* ahead
of time per output channel, symmetric int8. Transformer activations have outlier tokens and
channels; a per-tensor activation scale (upstream's ``default_dynamic_qconfig``) spends its
range on them, a per-token scale does not. The integer matmul runs through ``torch._int_mm``
(:class:`fxquant.nn.quantized.dynamic.PerTokenLinear`).

>>> model = fxquant.quantize_dynamic(model, {nn.Linear: per_token_dynamic_qconfig})

The activation constructor builds a :class:`PerTokenDynamicObserver`: a placeholder (it
records nothing, the parameters are computed per call) whose type tells conversion to use the
per-token module; :func:`is_per_token_dynamic_qconfig` asks exactly that.
"""

from __future__ import annotations

from typing import Any

import torch

from fxquant.observers.defaults import default_per_channel_weight_observer
from fxquant.observers.granularity import PerToken
from fxquant.observers.misc import PlaceholderObserver
from fxquant.qconfig.qconfig import QConfig

__all__ = [
    "PerTokenDynamicObserver",
    "is_per_token_dynamic_qconfig",
    "per_token_dynamic_qconfig",
    "per_token_symmetric_dynamic_qconfig",
]

_SYMMETRIC_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_AFFINE_QSCHEMES = (torch.per_tensor_affine, torch.per_channel_affine)


class PerTokenDynamicObserver(PlaceholderObserver):
    """Marks activations that are quantized per token, to int8, at run time.

    Records nothing (as every dynamic-activation placeholder). ``qscheme`` picks the mapping
    of each token's range: ``torch.per_tensor_affine`` (the default: ``[min, max]`` over
    ``[-128, 127]`` with an integer zero point) or ``torch.per_tensor_symmetric``
    (``scale = amax / 127``, zero point 0) -- torch has no per-token qscheme, so the per-tensor names stand for
    the mapping and :attr:`granularity` says that each token gets its own.

    Attributes:
        granularity: ``PerToken()``.
        symmetric: whether the mapping is symmetric.
    """

    def __init__(
        self,
        dtype: torch.dtype = torch.qint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float | None = None,
        is_dynamic: bool = True,
        **kwargs: Any,
    ) -> None:
        if dtype != torch.qint8:
            raise ValueError(
                f"PerTokenDynamicObserver quantizes activations to torch.qint8 (int8 x int8 "
                f"matmul), got dtype={dtype}; use float16_dynamic_qconfig for float16"
            )
        if not is_dynamic:
            raise ValueError(
                "PerTokenDynamicObserver stands for run-time (dynamic) quantization; "
                "is_dynamic=False is not supported"
            )
        if qscheme not in _SYMMETRIC_QSCHEMES + _AFFINE_QSCHEMES:
            raise ValueError(
                f"PerTokenDynamicObserver: qscheme must be torch.per_tensor_symmetric or "
                f"torch.per_tensor_affine, got {qscheme}"
            )
        super().__init__(
            dtype=dtype,
            quant_min=-128 if quant_min is None else quant_min,
            quant_max=127 if quant_max is None else quant_max,
            qscheme=qscheme,
            eps=eps,
            is_dynamic=True,
            **kwargs,
        )
        self.granularity = PerToken()
        self.symmetric = qscheme in _SYMMETRIC_QSCHEMES

    def extra_repr(self) -> str:
        mapping = "symmetric" if self.symmetric else "asymmetric"
        return f"dtype={self.dtype}, per-token {mapping}, is_dynamic=True"


per_token_dynamic_qconfig = QConfig(
    activation=PerTokenDynamicObserver.with_args(qscheme=torch.per_tensor_affine),
    weight=default_per_channel_weight_observer,
)
"""Dynamic int8 linear layers: per-token asymmetric activations (each token's ``[min, max]``
over the full int8 range, with a zero point), per-channel symmetric int8 weights. On
MiniLM-L6 sentence embeddings: mean cosine 0.999 to the float model (upstream's
``default_dynamic_qconfig``: 0.945)."""

per_token_symmetric_dynamic_qconfig = QConfig(
    activation=PerTokenDynamicObserver.with_args(qscheme=torch.per_tensor_symmetric),
    weight=default_per_channel_weight_observer,
)
"""As :data:`per_token_dynamic_qconfig` with symmetric token scales (``amax / 127``, zero
point 0): slightly cheaper, slightly less accurate on one-sided activations (MiniLM-L6: mean
cosine 0.9975)."""


def is_per_token_dynamic_qconfig(qconfig: Any) -> bool:
    """Whether ``qconfig`` asks for per-token dynamic activations
    (:class:`PerTokenDynamicObserver`), i.e. linear layers should become
    :class:`fxquant.nn.quantized.dynamic.PerTokenLinear`.

    ``None`` and qconfigs without an activation constructor answer ``False``.
    """
    activation = getattr(qconfig, "activation", None)
    if activation is None:
        return False
    return isinstance(activation(), PerTokenDynamicObserver)
