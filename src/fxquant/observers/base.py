"""Observer base classes and the ``with_args`` / ``with_callable_args`` constructor factories.

An observer is an ``nn.Module`` that records statistics of the tensors passing through it
(``forward`` returns its input unchanged) and turns them into quantization parameters in
``calculate_qparams()``. The arithmetic that turns a range into a scale and zero point lives in
:mod:`fxquant.numerics.qparams`; observers only decide *which* range.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from fxquant.numerics.dtypes import (
    SUPPORTED_QDTYPES,
    UnsupportedDTypeError,
    calculate_qmin_qmax,
    validate_qmin_qmax,
)
from fxquant.numerics.qparams import AFFINE_QSCHEMES, choose_qparams

__all__ = [
    "NonFiniteInputError",
    "ObserverBase",
    "QuantizationWarning",
    "UniformQuantizationObserverBase",
    "check_finite_minmax",
    "range_is_uninitialized",
    "warn_empty_input",
]

_FLOAT32_EPS = torch.finfo(torch.float32).eps


class QuantizationWarning(UserWarning):
    """Something in calibration or configuration that will likely cost accuracy."""


class NonFiniteInputError(ValueError):
    """An observed tensor contained NaN or Inf."""


class _PartialWrapper:
    """A constructor with some arguments bound.

    ``with_args`` binds values; ``with_callable_args`` binds zero-argument callables that are
    called anew for every instance (e.g. a fresh per-instance tensor). Keyword arguments given
    at call time win over both.
    """

    def __init__(self, p: partial) -> None:
        self.p = p
        self.callable_args: dict[str, Callable[[], Any]] = {}

    def __call__(self, *args: Any, **keywords: Any) -> Any:
        for name, make in self.callable_args.items():
            if name not in keywords:
                keywords[name] = make()
        return self.p(*args, **keywords)

    def __repr__(self) -> str:
        return f"{self.p!r}{self.callable_args!r}"

    def with_args(self, **kwargs: Any) -> _PartialWrapper:
        return _with_args(self, **kwargs)

    def with_callable_args(self, **kwargs: Callable[[], Any]) -> _PartialWrapper:
        result = _PartialWrapper(self.p)
        result.callable_args = {**self.callable_args, **kwargs}
        return result


def _with_args(cls_or_self: Any, **kwargs: Any) -> _PartialWrapper:
    """A factory of ``cls_or_self`` with ``kwargs`` bound; each call makes a new instance.

    >>> factory = MinMaxObserver.with_args(dtype=torch.qint8)
    >>> factory() is not factory()
    True
    """
    return _PartialWrapper(partial(cls_or_self, **kwargs))


def _with_callable_args(cls_or_self: Any, **kwargs: Callable[[], Any]) -> _PartialWrapper:
    """A factory whose ``kwargs`` are callables evaluated at each construction."""
    return _PartialWrapper(partial(cls_or_self)).with_callable_args(**kwargs)


class ObserverBase(ABC, nn.Module):
    """Base of every observer: carries the target ``dtype`` and whether quantization is
    dynamic (parameters computed at run time rather than from calibration)."""

    def __init__(self, dtype: torch.dtype, is_dynamic: bool = False) -> None:
        super().__init__()
        self.dtype = dtype
        self.is_dynamic = is_dynamic

    @abstractmethod
    def forward(self, x: Any) -> Any: ...

    @abstractmethod
    def calculate_qparams(self, **kwargs: Any) -> Any: ...

    with_args = classmethod(_with_args)
    with_callable_args = classmethod(_with_callable_args)


def warn_empty_input(observer: nn.Module) -> None:
    warnings.warn(
        f"{type(observer).__name__} received an empty tensor; it was skipped and the "
        "statistics are unchanged",
        QuantizationWarning,
        stacklevel=3,
    )


def check_finite_minmax(observer: nn.Module, min_val: torch.Tensor, max_val: torch.Tensor) -> None:
    """Raise :class:`NonFiniteInputError` if a batch's min/max came out NaN or Inf.

    Checking the reduced range (not every element) keeps the cost to a few scalars: NaN
    propagates through min/max and Inf shows up as the extreme.
    """
    if min_val.numel() == 1 and max_val.numel() == 1:
        # per-tensor ranges: two Python floats are far cheaper than two tensor reductions
        if math.isfinite(float(min_val)) and math.isfinite(float(max_val)):
            return
    elif bool(torch.isfinite(min_val).all()) and bool(torch.isfinite(max_val).all()):
        return
    raise NonFiniteInputError(
        f"{type(observer).__name__} observed a tensor containing NaN or Inf "
        f"(batch min={_short(min_val)}, max={_short(max_val)}). Quantization parameters "
        "computed from it would be meaningless: check the calibration data and the model's "
        "float outputs (e.g. torch.isfinite(x).all()) before calibrating."
    )


def _short(t: torch.Tensor) -> str:
    flat = t.flatten().tolist()
    return str(flat[0]) if len(flat) == 1 else f"{flat[:4]}{'...' if len(flat) > 4 else ''}"


class UniformQuantizationObserverBase(ObserverBase):
    """Base of observers that quantize uniformly (affine or symmetric, per tensor or per
    channel): validates dtype/qscheme/range and computes qparams from a min/max range.

    Args:
        dtype: quantized dtype (``torch.quint8``, ``torch.qint8``, ``torch.int8``, ...).
        qscheme: ``torch.per_tensor_affine``, ``per_tensor_symmetric``, ``per_channel_affine``,
            ``per_channel_symmetric`` or ``per_channel_affine_float_qparams``.
        reduce_range: drop one bit of range (deprecated upstream; prefer quant_min/quant_max).
        quant_min, quant_max: a custom integer range (both or neither).
        eps: the smallest scale allowed.
    """

    # Version 3 of the state-dict layout (matches upstream's, so checkpoints load across).
    _version = 3

    eps: torch.Tensor

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = _FLOAT32_EPS,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        factory_kwargs = torch.nn.factory_kwargs(factory_kwargs)
        super().__init__(dtype=dtype, is_dynamic=is_dynamic, **kwargs)
        if qscheme not in AFFINE_QSCHEMES:
            raise ValueError(
                f"{type(self).__name__} does not support qscheme {qscheme}; use one of "
                "per_tensor_affine, per_tensor_symmetric, per_channel_affine, "
                "per_channel_symmetric, per_channel_affine_float_qparams"
            )
        if dtype not in SUPPORTED_QDTYPES:
            raise UnsupportedDTypeError(
                f"{type(self).__name__} cannot observe for dtype {dtype}; supported: "
                f"{', '.join(sorted(str(d) for d in SUPPORTED_QDTYPES))}"
            )
        if (quant_min is None) != (quant_max is None):
            raise ValueError(
                f"give both quant_min and quant_max or neither (got quant_min={quant_min}, "
                f"quant_max={quant_max})"
            )
        self.qscheme = qscheme
        if reduce_range:
            warnings.warn(
                "reduce_range is deprecated: pass quant_min and quant_max for the range you want",
                stacklevel=2,
            )
        self.reduce_range = reduce_range
        self.register_buffer("eps", torch.tensor([eps], **factory_kwargs))
        self.has_customized_qrange = quant_min is not None and quant_max is not None
        if self.has_customized_qrange:
            assert quant_min is not None and quant_max is not None
            validate_qmin_qmax(quant_min, quant_max)
        self.quant_min, self.quant_max = calculate_qmin_qmax(
            quant_min, quant_max, self.has_customized_qrange, dtype, reduce_range
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
        # version 1 checkpoints predate the eps buffer
        if local_metadata.get("version", None) in (None, 1):
            state_dict[prefix + "eps"] = torch.tensor([_FLOAT32_EPS])
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _calculate_qparams(
        self, min_val: torch.Tensor, max_val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for the range, or ``(1.0, 0)`` with a warning if the
        observer has seen no data yet (so a forgotten calibration is visible)."""
        if range_is_uninitialized(min_val, max_val):
            warnings.warn(
                f"{type(self).__name__}.calculate_qparams() was called before the observer "
                "saw any data; returning scale=1.0, zero_point=0. Run calibration data through "
                "the model before converting it.",
                QuantizationWarning,
                stacklevel=3,
            )
            device = min_val.device
            return torch.tensor([1.0], device=device), torch.tensor([0], device=device)
        return choose_qparams(
            min_val,
            max_val,
            quant_min=self.quant_min,
            quant_max=self.quant_max,
            dtype=self.dtype,
            qscheme=self.qscheme,
            eps=self.eps,
            has_customized_qrange=self.has_customized_qrange,
        )

    def reset_min_max_vals(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot reset its min/max values")


def range_is_uninitialized(min_val: torch.Tensor, max_val: torch.Tensor) -> bool:
    """True for a range no data has set yet (empty, or still at its (+inf, -inf) start)."""
    if min_val.numel() == 0 or max_val.numel() == 0:
        return True
    # MinMax observers start at (+inf, -inf); per-channel ones start empty.
    return bool((min_val == float("inf")).all() and (max_val == float("-inf")).all())
