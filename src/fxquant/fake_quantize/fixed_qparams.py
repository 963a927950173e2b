"""``FixedQParamsFakeQuantize``: fake quantization with parameters fixed in advance.

For ops whose output range is known (sigmoid: [0, 1], tanh: [-1, 1]) the scale and zero
point come from a :class:`~fxquant.observers.misc.FixedQParamsObserver`; observing never
changes them.
"""

from __future__ import annotations

from typing import Any

import torch

from fxquant.fake_quantize.fake_quantize import FakeQuantize
from fxquant.observers.misc import FixedQParamsObserver

__all__ = ["FixedQParamsFakeQuantize"]


class FixedQParamsFakeQuantize(FakeQuantize):
    """Per-tensor fake quantization with the fixed ``scale``/``zero_point`` of its observer.

    Args:
        observer: a ``FixedQParamsObserver`` constructor, e.g.
            ``default_fixed_qparams_range_0to1_observer``.

    ``scale`` and ``zero_point`` are the observer's own buffers (shared, not copies).
    """

    def __init__(self, observer: Any) -> None:
        super().__init__(observer=observer)
        owner = type(self).__name__
        if not isinstance(self.activation_post_process, FixedQParamsObserver):
            raise TypeError(
                f"{owner} needs a FixedQParamsObserver constructor, got one that builds "
                f"{type(self.activation_post_process).__name__}; use FakeQuantize for "
                "observers that measure their range"
            )
        if self.is_per_channel:
            raise ValueError(
                f"{owner} supports per-tensor quantization only, got qscheme {self.qscheme}"
            )
        self._observer_ctr = observer
        self.scale = self.activation_post_process.scale
        self.zero_point = self.activation_post_process.zero_point

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        """The fixed ``(scale, zero_point)``."""
        return self.scale, self.zero_point

    def extra_repr(self) -> str:
        obs = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, "
            f"scale={self.scale}, zero_point={self.zero_point}, "
            f"dtype={self.dtype}, quant_min={obs.quant_min}, quant_max={obs.quant_max}, "
            f"qscheme={self.qscheme}"
        )
