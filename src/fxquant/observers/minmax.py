"""Min/max observers: the running range of a tensor, per tensor or per channel, exact or as
an exponential moving average.

Moving average (c = ``averaging_constant``)::

    min_0 = min(X_0);   min_t = min_{t-1} + c * (min(X_t) - min_{t-1})     (same for max)
"""

from __future__ import annotations

from typing import Any

import torch

from fxquant.numerics.qparams import PER_CHANNEL_QSCHEMES
from fxquant.observers.base import (
    UniformQuantizationObserverBase,
    check_finite_minmax,
    warn_empty_input,
)

__all__ = [
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "PerChannelMinMaxObserver",
]

_PER_TENSOR_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)


def _reject_symmetric_reduced_quint8(obs: UniformQuantizationObserverBase) -> None:
    # A symmetric quint8 range is centred on 128; halving it would leave zero_point outside.
    if (
        obs.qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
        and obs.reduce_range
        and obs.dtype == torch.quint8
    ):
        raise NotImplementedError(
            "reduce_range is not supported with symmetric quint8 quantization; use qint8 or "
            "an explicit quant_min/quant_max"
        )


class MinMaxObserver(UniformQuantizationObserverBase):
    """Tracks the running minimum and maximum of everything it sees (per tensor).

    >>> obs = MinMaxObserver(dtype=torch.quint8)
    >>> _ = obs(torch.tensor([-1.0, 3.0]))
    >>> obs.calculate_qparams()
    (tensor([0.0157]), tensor([64]))
    """

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if qscheme not in _PER_TENSOR_QSCHEMES:
            raise NotImplementedError(
                f"{type(self).__name__} supports only per_tensor_affine and per_tensor_symmetric "
                f"(got {qscheme}); use PerChannelMinMaxObserver for per-channel schemes"
            )
        super().__init__(
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )
        factory_kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.register_buffer("min_val", torch.tensor(float("inf"), **factory_kwargs))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **factory_kwargs))
        _reject_symmetric_reduced_quint8(self)

    def _batch_minmax(self, x_orig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if x_orig.numel() == 0:
            warn_empty_input(self)
            return None
        x = x_orig.detach().to(self.min_val.dtype)
        min_cur, max_cur = torch.aminmax(x)
        check_finite_minmax(self, min_cur, max_cur)
        return min_cur, max_cur

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Widen the running range by ``x_orig``'s range; return ``x_orig`` unchanged."""
        batch = self._batch_minmax(x_orig)
        if batch is not None:
            self.min_val.copy_(torch.min(batch[0], self.min_val))
            self.max_val.copy_(torch.max(batch[1], self.max_val))
        return x_orig

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        return self._calculate_qparams(self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"

    def reset_min_max_vals(self) -> None:
        """Forget the statistics (back to the state before any data)."""
        self.min_val.copy_(torch.tensor(float("inf")))
        self.max_val.copy_(torch.tensor(float("-inf")))


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Per-tensor range as an exponential moving average of each batch's min and max
    (used by QAT, where weights and activations drift during training)."""

    def __init__(
        self,
        averaging_constant: float = 0.01,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        # Dynamic quantization recomputes the range per call: only an averaging constant of 1
        # (each batch replaces the running range) means that.
        if is_dynamic and averaging_constant != 1:
            raise NotImplementedError(
                f"{type(self).__name__} supports dynamic quantization only with "
                f"averaging_constant=1 (got {averaging_constant})"
            )
        _check_averaging_constant(averaging_constant)
        self.averaging_constant = averaging_constant
        super().__init__(
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        batch = self._batch_minmax(x_orig)
        if batch is None:
            return x_orig
        min_cur, max_cur = batch
        if self.min_val == float("inf") and self.max_val == float("-inf"):
            min_val, max_val = min_cur, max_cur
        else:
            c = self.averaging_constant
            min_val = self.min_val + c * (min_cur - self.min_val)
            max_val = self.max_val + c * (max_cur - self.max_val)
        self.min_val.copy_(min_val)
        self.max_val.copy_(max_val)
        return x_orig


def _check_averaging_constant(c: float) -> None:
    if not 0.0 < c <= 1.0:
        raise ValueError(f"averaging_constant must be in (0, 1], got {c}")


class PerChannelMinMaxObserver(UniformQuantizationObserverBase):
    """Tracks the running min and max of each slice along ``ch_axis`` (weights: axis 0 for
    conv/linear output channels)."""

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        ch_axis: int = 0,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if qscheme not in PER_CHANNEL_QSCHEMES:
            raise NotImplementedError(
                f"{type(self).__name__} supports only per_channel_affine, per_channel_symmetric "
                f"and per_channel_affine_float_qparams (got {qscheme}); use MinMaxObserver for "
                "per-tensor schemes"
            )
        if is_dynamic:
            raise NotImplementedError(f"{type(self).__name__} does not support dynamic quantization")
        super().__init__(
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )
        factory_kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.ch_axis = ch_axis
        self.register_buffer("min_val", torch.tensor([], **factory_kwargs))
        self.register_buffer("max_val", torch.tensor([], **factory_kwargs))
        _reject_symmetric_reduced_quint8(self)

    def _batch_minmax(self, x_orig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if x_orig.numel() == 0:
            warn_empty_input(self)
            return None
        x = x_orig.detach()
        if not -x.dim() <= self.ch_axis < x.dim():
            raise IndexError(
                f"{type(self).__name__}: ch_axis={self.ch_axis} is out of range for a tensor of "
                f"shape {tuple(x.shape)}; set ch_axis to the channel dimension"
            )
        # (C, everything else): one row per channel
        y = x.movedim(self.ch_axis, 0).to(self.min_val.dtype).flatten(start_dim=1)
        min_cur, max_cur = torch.aminmax(y, dim=1)
        check_finite_minmax(self, min_cur, max_cur)
        if self.min_val.numel() not in (0, min_cur.numel()):
            raise ValueError(
                f"{type(self).__name__} saw {min_cur.numel()} channels along axis {self.ch_axis} "
                f"but earlier batches had {self.min_val.numel()}"
            )
        return min_cur, max_cur

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        batch = self._batch_minmax(x_orig)
        if batch is not None:
            min_cur, max_cur = batch
            if self.min_val.numel() == 0:
                min_val, max_val = min_cur, max_cur
            else:
                min_val = torch.min(min_cur, self.min_val)
                max_val = torch.max(max_cur, self.max_val)
            self._store(min_val, max_val)
        return x_orig

    def _store(self, min_val: torch.Tensor, max_val: torch.Tensor) -> None:
        self.min_val.resize_(min_val.shape)
        self.max_val.resize_(max_val.shape)
        self.min_val.copy_(min_val)
        self.max_val.copy_(max_val)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        return self._calculate_qparams(self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"

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
        # The buffers start empty; resize them to the saved number of channels first.
        # Checkpoints before version 3 named them min_vals / max_vals.
        version = local_metadata.get("version")
        old = version is not None and version < 3
        for saved, buf in (("min_vals" if old else "min_val", self.min_val),
                           ("max_vals" if old else "max_val", self.max_val)):
            key = prefix + saved
            if key in state_dict:
                buf.resize_(state_dict[key].shape)
                if old:
                    state_dict[prefix + saved[:-1]] = state_dict.pop(key)
            elif strict:
                missing_keys.append(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    def reset_min_max_vals(self) -> None:
        self.min_val = torch.empty(0, device=self.min_val.device)
        self.max_val = torch.empty(0, device=self.max_val.device)


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel range as an exponential moving average (QAT per-channel weights)."""

    def __init__(
        self,
        averaging_constant: float = 0.01,
        ch_axis: int = 0,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if is_dynamic:
            raise NotImplementedError(f"{type(self).__name__} does not support dynamic quantization")
        _check_averaging_constant(averaging_constant)
        super().__init__(
            ch_axis=ch_axis,
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )
        self.averaging_constant = averaging_constant

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        batch = self._batch_minmax(x_orig)
        if batch is not None:
            min_cur, max_cur = batch
            if self.min_val.numel() == 0:
                min_val, max_val = min_cur, max_cur
            else:
                c = self.averaging_constant
                min_val = self.min_val + c * (min_cur - self.min_val)
                max_val = self.max_val + c * (max_cur - self.max_val)
            self._store(min_val, max_val)
        return x_orig
