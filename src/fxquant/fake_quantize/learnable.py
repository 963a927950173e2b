"""Learnable fake quantization (LSQ / LSQ+): scale and zero point are trained by gradient
descent alongside the weights.

Forward is ordinary fake quantization with the current parameters. Backward (torch's
``_fake_quantize_learnable_per_*_affine`` kernels), with ``z`` the zero point rounded and
clamped to the range, ``q = round(x / s) + z``, ``q_c = clamp(q, qmin, qmax)`` and ``g`` the
gradient factor, per element (summed over each parameter's elements)::

    in range (q == q_c):  dx = dy,   ds = g * dy * (q - z - x / s),   dz = 0
    clamped  (q != q_c):  dx = 0,    ds = g * dy * (q_c - z),         dz = -g * dy * s

``use_grad_scaling`` sets ``g = 1 / sqrt(numel(x) * quant_max)`` (Esser et al., "Learned Step
Size Quantization", ICLR 2020), which keeps the step-size gradient on the scale of the
weight gradients; otherwise ``g = 1``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.nn import Parameter

from fxquant.fake_quantize._checks import (
    check_channel_axis,
    check_observer_interface,
    check_qrange_fits_dtype,
)
from fxquant.fake_quantize.base import FakeQuantizeBase
from fxquant.numerics.dtypes import check_ordered_range

__all__ = ["LearnableFakeQuantize", "_LearnableFakeQuantize"]

logger = logging.getLogger(__name__)

_SYMMETRIC_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_PER_CHANNEL_QSCHEMES = (torch.per_channel_symmetric, torch.per_channel_affine)


class LearnableFakeQuantize(FakeQuantizeBase):
    """Fake quantization whose ``scale`` and ``zero_point`` are ``nn.Parameter`` s.

    Three modes (each a method returning to a consistent set of switches):

    - :meth:`enable_static_estimate`: the observer sets the parameters every batch (no
      learning); output fake-quantized. This is the initial state.
    - :meth:`enable_param_learning`: parameters are learned, the observer is idle.
    - :meth:`enable_static_observation`: the observer accumulates statistics but neither the
      parameters nor the output change (output = input).

    Args:
        observer: observer constructor; receives ``quant_min``/``quant_max`` and
            ``observer_kwargs``.
        quant_min, quant_max: the integer range (``quant_min < quant_max``).
        scale, zero_point: initial values of the parameters.
        channel_len: number of channels for per-channel parameters; -1 for per tensor.
        use_grad_scaling: scale the parameter gradients by ``1 / sqrt(numel * quant_max)``.
    """

    static_enabled: torch.Tensor
    learning_enabled: torch.Tensor
    eps: torch.Tensor

    def __init__(
        self,
        observer: Any,
        quant_min: int = 0,
        quant_max: int = 255,
        scale: float = 1.0,
        zero_point: float = 0.0,
        channel_len: int = -1,
        use_grad_scaling: bool = False,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_ordered_range(quant_min, quant_max, owner)
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.use_grad_scaling = use_grad_scaling
        self.scale = Parameter(_initial_param(owner, scale, channel_len))
        self.zero_point = Parameter(_initial_param(owner, zero_point, channel_len))
        observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.activation_post_process = observer(**observer_kwargs)
        obs = self.activation_post_process
        check_observer_interface(owner, obs)
        check_qrange_fits_dtype(owner, quant_min, quant_max, obs.dtype)
        self.dtype: torch.dtype = obs.dtype
        self.qscheme: torch.qscheme = obs.qscheme
        self.ch_axis: int = getattr(obs, "ch_axis", -1)
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("static_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("learning_enabled", torch.tensor([0], dtype=torch.uint8))
        # floor(log2(number of levels)): 8 for [0, 255]
        self.bitwidth = (quant_max - quant_min + 1).bit_length() - 1
        self.register_buffer("eps", torch.tensor([torch.finfo(torch.float32).eps]))

    # ---- modes ------------------------------------------------------------------------

    def enable_param_learning(self) -> LearnableFakeQuantize:
        """Learn the parameters by backprop; the observer stops updating them."""
        self.toggle_qparam_learning(enabled=True).toggle_fake_quant(
            enabled=True
        ).toggle_observer_update(enabled=False)
        return self

    def enable_static_estimate(self) -> None:
        """Let the observer set the parameters each batch; no learning; fake-quantize."""
        self.toggle_qparam_learning(enabled=False).toggle_fake_quant(
            enabled=True
        ).toggle_observer_update(enabled=True)

    def enable_static_observation(self) -> None:
        """Let the observer set the parameters each batch, without fake quantization."""
        self.toggle_qparam_learning(enabled=False).toggle_fake_quant(
            enabled=False
        ).toggle_observer_update(enabled=True)

    # ---- individual switches ----------------------------------------------------------

    def toggle_observer_update(self, enabled: bool = True) -> LearnableFakeQuantize:
        self.static_enabled[0] = int(enabled)
        return self

    def enable_observer(self, enabled: bool = True) -> None:
        """Here "observing" means the observer overwrites the parameters each batch."""
        self.toggle_observer_update(enabled)

    def toggle_qparam_learning(self, enabled: bool = True) -> LearnableFakeQuantize:
        self.learning_enabled[0] = int(enabled)
        self.scale.requires_grad = enabled
        self.zero_point.requires_grad = enabled
        return self

    def toggle_fake_quant(self, enabled: bool = True) -> LearnableFakeQuantize:
        self.fake_quant_enabled[0] = int(enabled)
        return self

    def observe_quant_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Log (at INFO level) and return the current scale and zero point."""
        scale, zero_point = self.scale.detach(), self.zero_point.detach()
        logger.info("%s scale: %s, zero point: %s", type(self).__name__, scale, zero_point)
        return scale, zero_point

    # ---- quantization -----------------------------------------------------------------

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        """``(scale, zero_point)`` for conversion: the scale clamped to at least ``eps`` (in
        place), the zero point rounded and clamped to the range, as int64."""
        self.scale.data.clamp_(min=self.eps.item())
        scale = self.scale.detach()
        zero_point = (
            self.zero_point.detach().round().clamp(self.quant_min, self.quant_max).long()
        )
        return scale, zero_point

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if self.static_enabled[0] == 1:
            self._take_observer_estimate(X)
        else:
            # A learned scale must stay positive.
            self.scale.data.clamp_(min=self.eps.item())
        if self.fake_quant_enabled[0] == 1:
            X = self._fake_quantize(X)
        return X

    def _take_observer_estimate(self, X: torch.Tensor) -> None:
        self.activation_post_process(X.detach())
        scale, zero_point = self.activation_post_process.calculate_qparams()
        self.scale.data.copy_(scale.to(self.scale.device))
        self.zero_point.data.copy_(zero_point.to(self.zero_point.device))

    def _fake_quantize(self, X: torch.Tensor) -> torch.Tensor:
        if self.qscheme in _SYMMETRIC_QSCHEMES:
            self.zero_point.data.zero_()
        # g = 1 / sqrt(numel * quant_max) with LSQ gradient scaling
        grad_factor = 1.0 / (X.numel() * self.quant_max) ** 0.5 if self.use_grad_scaling else 1.0
        if self.qscheme in _PER_CHANNEL_QSCHEMES:
            check_channel_axis(type(self).__name__, X, self.ch_axis, self.scale.numel())
            ch_axis = self.ch_axis % X.dim()  # the kernel accepts only non-negative axes
            return torch._fake_quantize_learnable_per_channel_affine(
                X, self.scale, self.zero_point, ch_axis, self.quant_min, self.quant_max,
                grad_factor,
            )
        return torch._fake_quantize_learnable_per_tensor_affine(
            X, self.scale, self.zero_point, self.quant_min, self.quant_max, grad_factor
        )


def _initial_param(owner: str, value: float, channel_len: int) -> torch.Tensor:
    if channel_len == -1:
        return torch.tensor([value])
    if not (isinstance(channel_len, int) and channel_len > 0):
        raise ValueError(
            f"{owner}: channel_len must be a positive int (or -1 for per tensor), "
            f"got {channel_len!r}"
        )
    return torch.tensor([value] * channel_len)


# The name upstream's eager-mode QAT uses (torch.ao.quantization._learnable_fake_quantize).
_LearnableFakeQuantize = LearnableFakeQuantize
