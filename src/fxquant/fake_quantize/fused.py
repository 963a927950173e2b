"""``FusedMovingAvgObsFakeQuantize``: moving-average observation, qparam update and fake
quantization in one kernel (``torch.fused_moving_avg_obs_fake_quant``).

Per call, with averaging constant ``c`` (statistics per tensor, or per slice along
``ch_axis``)::

    if observing:  min_t = min_{t-1} + c * (min(X) - min_{t-1})   (min(X) on the first call)
                   max_t likewise;  (scale, zero_point) = qparams(min_t, max_t)
    if fake-quantizing:  x_out = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale

The kernel updates the observer's ``min_val``/``max_val`` and this module's
``scale``/``zero_point`` in place, so ``calculate_qparams`` and state dicts stay consistent.
"""

from __future__ import annotations

from typing import Any

import torch

from fxquant.fake_quantize._checks import check_axis_in_range, check_channel_axis
from fxquant.fake_quantize.fake_quantize import FakeQuantize
from fxquant.observers.minmax import (
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)

__all__ = ["FusedMovingAvgObsFakeQuantize"]

_SYMMETRIC_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)


class FusedMovingAvgObsFakeQuantize(FakeQuantize):
    """A faster :class:`FakeQuantize` for moving-average min/max observers.

    Accepts the arguments of :class:`FakeQuantize`; the observer must be a
    ``MovingAverageMinMaxObserver`` or ``MovingAveragePerChannelMinMaxObserver``. The
    switches are ``int64`` buffers here, as the fused kernel requires.
    """

    def __init__(
        self,
        observer: Any = MovingAverageMinMaxObserver,
        quant_min: int = 0,
        quant_max: int = 255,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__(observer, quant_min, quant_max, **observer_kwargs)
        obs = self.activation_post_process
        if not isinstance(obs, (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver)):
            raise TypeError(
                f"{type(self).__name__} works only with MovingAverageMinMaxObserver or "
                f"MovingAveragePerChannelMinMaxObserver, got {type(obs).__name__}; use "
                "FakeQuantize for other observers"
            )
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.long))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.long))
        self.is_symmetric_quant: bool = obs.qscheme in _SYMMETRIC_QSCHEMES

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        """The observer's current ``(scale, zero_point)``."""
        return self.activation_post_process.calculate_qparams()

    def extra_repr(self) -> str:
        obs = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, "
            f"scale={self.scale}, zero_point={self.zero_point}, dtype={self.dtype}, "
            f"quant_min={obs.quant_min}, quant_max={obs.quant_max}, "
            f"qscheme={self.qscheme}, reduce_range={obs.reduce_range}"
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        obs = self.activation_post_process
        ch_axis = self.ch_axis
        if self.is_per_channel:
            owner = type(self).__name__
            check_axis_in_range(owner, X, ch_axis)
            if self.observer_enabled[0] == 0 and self.fake_quant_enabled[0] == 1:
                # Observing sizes the per-channel buffers; without it they must already match.
                check_channel_axis(owner, X, ch_axis, self.scale.numel())
            ch_axis %= X.dim()
            if ch_axis != 0:
                raise NotImplementedError(
                    f"{owner}: the fused kernel quantizes per channel only along axis 0, got "
                    f"ch_axis={self.ch_axis} for an input of shape {tuple(X.shape)}; use "
                    "FakeQuantize with MovingAveragePerChannelMinMaxObserver for other axes"
                )
        return torch.fused_moving_avg_obs_fake_quant(
            X,
            self.observer_enabled,
            self.fake_quant_enabled,
            obs.min_val,
            obs.max_val,
            self.scale,
            self.zero_point,
            obs.averaging_constant,
            obs.quant_min,
            obs.quant_max,
            ch_axis,
            self.is_per_channel,
            self.is_symmetric_quant,
        )
