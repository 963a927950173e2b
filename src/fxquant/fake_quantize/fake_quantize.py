"""``FakeQuantize``: an observer plus fake quantization with the observer's parameters.

Output, per tensor or per slice along ``ch_axis``::

    x_out = (clamp(round(x / scale) + zero_point, quant_min, quant_max) - zero_point) * scale

with a straight-through gradient: ``dx = dy`` where the rounded value was not clamped, 0
where it was. Integer targets run torch's fused kernels (``torch.fake_quantize_per_tensor_affine``
/ ``torch.fake_quantize_per_channel_affine``), as upstream does, so results are bit-exact.
"""

from __future__ import annotations

from typing import Any

import torch

from fxquant.fake_quantize._checks import (
    check_channel_axis,
    check_observer_honours_qrange,
    check_observer_interface,
    check_qrange_fits_dtype,
    check_qrange_given_together,
)
from fxquant.fake_quantize.base import FakeQuantizeBase
from fxquant.fake_quantize.cast import fake_quantize_float_cast
from fxquant.numerics.dtypes import QuantizationRangeError, is_float_qdtype
from fxquant.observers.minmax import MovingAverageMinMaxObserver

__all__ = ["FakeQuantize"]

_PER_TENSOR_QSCHEMES = frozenset({torch.per_tensor_affine, torch.per_tensor_symmetric})
_PER_CHANNEL_QSCHEMES = frozenset(
    {torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams}
)


class FakeQuantize(FakeQuantizeBase):
    """Simulates quantize + dequantize during training, with parameters from an observer.

    Args:
        observer: observer class or ``with_args`` constructor; built as
            ``observer(**observer_kwargs, quant_min=..., quant_max=..., is_dynamic=...)``.
        quant_min, quant_max: the integer range (both or neither); passed on to the observer.
        is_dynamic: stands for dynamic quantization (parameters chosen per batch at run time).
        **observer_kwargs: further observer arguments (``dtype``, ``qscheme``, ``ch_axis``...).

    Attributes:
        activation_post_process: the observer.
        scale, zero_point: the parameters in use (buffers, refreshed while observing).
        dtype, qscheme, ch_axis, is_per_channel, is_dynamic: copied from the observer.

    >>> fq = FakeQuantize(quant_min=0, quant_max=255, dtype=torch.quint8)
    >>> y = fq(torch.randn(8))          # observes, then fake-quantizes with the new qparams
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        observer: Any = MovingAverageMinMaxObserver,
        quant_min: int | None = None,
        quant_max: int | None = None,
        is_dynamic: bool = False,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_qrange_given_together(owner, quant_min, quant_max)
        if quant_min is not None and quant_max is not None:
            if quant_min > quant_max:
                raise QuantizationRangeError(
                    f"{owner}: quant_min ({quant_min}) must not exceed quant_max ({quant_max})"
                )
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        observer_kwargs["is_dynamic"] = is_dynamic
        self.activation_post_process = observer(**observer_kwargs)
        obs = self.activation_post_process
        check_observer_interface(owner, obs)
        if quant_min is not None and quant_max is not None:
            check_qrange_fits_dtype(owner, quant_min, quant_max, obs.dtype)
            check_observer_honours_qrange(owner, obs, quant_min, quant_max)
        # Kept for compatibility; the observer's own range is what forward() uses.
        self.quant_min: int = obs.quant_min
        self.quant_max: int = obs.quant_max
        self.is_dynamic: bool = obs.is_dynamic
        self.dtype: torch.dtype = obs.dtype
        self.qscheme: torch.qscheme = obs.qscheme
        self.ch_axis: int = getattr(obs, "ch_axis", -1)
        if self.qscheme not in _PER_TENSOR_QSCHEMES | _PER_CHANNEL_QSCHEMES:
            raise ValueError(
                f"{owner} supports per-tensor and per-channel qschemes only, got "
                f"{self.qscheme}; configure the observer with one of those"
            )
        self.is_per_channel: bool = self.qscheme in _PER_CHANNEL_QSCHEMES
        # Float-qparams (embedding tables) keep a float offset instead of an integer zero point.
        zero_point_dtype = (
            torch.float if self.qscheme == torch.per_channel_affine_float_qparams else torch.int
        )
        self.register_buffer("scale", torch.tensor([1.0], dtype=torch.float))
        self.register_buffer("zero_point", torch.tensor([0], dtype=zero_point_dtype))

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        """The observer's current ``(scale, zero_point)``."""
        return self.activation_post_process.calculate_qparams()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1:
            self._observe(X)
        if self.fake_quant_enabled[0] == 1:
            X = self._fake_quantize(X)
        return X

    def _observe(self, X: torch.Tensor) -> None:
        self.activation_post_process(X.detach())
        scale, zero_point = self.calculate_qparams()
        self._set_qparams(scale, zero_point)

    def _set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        # The buffers start as one element; per-channel observers produce one per channel.
        scale = scale.to(self.scale.device)
        zero_point = zero_point.to(self.zero_point.device)
        if self.scale.shape != scale.shape:
            self.scale.resize_(scale.shape)
            self.zero_point.resize_(zero_point.shape)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)

    def _fake_quantize(self, X: torch.Tensor) -> torch.Tensor:
        obs = self.activation_post_process
        ch_axis = self.ch_axis if self.is_per_channel else None
        if ch_axis is not None:
            check_channel_axis(type(self).__name__, X, ch_axis, self.scale.numel())
            ch_axis %= X.dim()  # torch's kernel accepts only non-negative axes
        if is_float_qdtype(self.dtype):
            return fake_quantize_float_cast(X, self.scale, self.dtype, ch_axis)
        if ch_axis is not None:
            return torch.fake_quantize_per_channel_affine(
                X, self.scale, self.zero_point, ch_axis, obs.quant_min, obs.quant_max
            )
        return torch.fake_quantize_per_tensor_affine(
            X, self.scale, self.zero_point, obs.quant_min, obs.quant_max
        )

    def extra_repr(self) -> str:
        obs = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, "
            f"quant_min={obs.quant_min}, quant_max={obs.quant_max}, "
            f"dtype={self.dtype}, qscheme={self.qscheme}, ch_axis={self.ch_axis}, "
            f"scale={self.scale}, zero_point={self.zero_point}"
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A checkpoint may hold per-channel parameters while this module still has its
        # one-element initial buffers: take the saved shapes before the default copy.
        for name in ("scale", "zero_point"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                getattr(self, name).resize_(saved.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
