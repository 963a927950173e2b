"""Validation shared by the fake-quantizers: integer ranges, observer capabilities and the
channel axis of per-channel inputs. Each check raises an error that names the problem and
the remedy."""

from __future__ import annotations

import torch
from torch import nn

from fxquant.numerics.dtypes import INT_DTYPE_RANGES, QuantizationRangeError

__all__ = [
    "check_axis_in_range",
    "check_channel_axis",
    "check_observer_honours_qrange",
    "check_observer_interface",
    "check_qrange_fits_dtype",
    "check_qrange_given_together",
]

# What a fake-quantizer reads from its observer.
_OBSERVER_ATTRIBUTES = ("dtype", "qscheme", "quant_min", "quant_max", "calculate_qparams")


def check_qrange_given_together(owner: str, quant_min: int | None, quant_max: int | None) -> None:
    """Both bounds or neither: a lone bound would otherwise be silently ignored."""
    if (quant_min is None) != (quant_max is None):
        raise QuantizationRangeError(
            f"{owner}: give both quant_min and quant_max or neither "
            f"(got quant_min={quant_min}, quant_max={quant_max})"
        )


def check_qrange_fits_dtype(owner: str, quant_min: int, quant_max: int, dtype: torch.dtype) -> None:
    """``[quant_min, quant_max]`` must lie inside the integer range of ``dtype``.

    Floating-point targets (float8, float16) have no integer grid and are not checked.
    """
    full = INT_DTYPE_RANGES.get(dtype)
    if full is None:
        return
    if quant_min < full.qmin or quant_max > full.qmax:
        raise QuantizationRangeError(
            f"{owner}: quant_min={quant_min}, quant_max={quant_max} is outside the range "
            f"[{full.qmin}, {full.qmax}] of {dtype}; narrow the range or choose a wider dtype"
        )


def check_observer_interface(owner: str, observer: nn.Module) -> None:
    """The observer must expose what a fake-quantizer reads from it."""
    missing = [name for name in _OBSERVER_ATTRIBUTES if not hasattr(observer, name)]
    if missing:
        raise TypeError(
            f"{owner} needs an observer with {', '.join(_OBSERVER_ATTRIBUTES)}; "
            f"{type(observer).__name__} lacks {', '.join(missing)}. Use a uniform quantization "
            "observer such as MovingAverageMinMaxObserver."
        )


def check_observer_honours_qrange(
    owner: str, observer: nn.Module, quant_min: int, quant_max: int
) -> None:
    """The observer built with ``quant_min``/``quant_max`` must quantize to that range.

    ``reduce_range=True`` legitimately halves both bounds (``default_fake_quant`` relies on
    it); anything else means the observer ignored the range it was given.
    """
    expected = {(quant_min, quant_max)}
    if getattr(observer, "reduce_range", False):
        expected.add((quant_min // 2, quant_max // 2))
    actual = (observer.quant_min, observer.quant_max)
    if actual not in expected:
        raise QuantizationRangeError(
            f"{owner} was given quant_min={quant_min}, quant_max={quant_max} but its observer "
            f"{type(observer).__name__} quantizes to [{actual[0]}, {actual[1]}]; make the "
            "observer accept quant_min/quant_max keyword arguments, or drop them here"
        )


def check_axis_in_range(owner: str, x: torch.Tensor, ch_axis: int) -> None:
    """``ch_axis`` must be a dimension of ``x``."""
    if not -x.dim() <= ch_axis < x.dim():
        raise IndexError(
            f"{owner}: ch_axis={ch_axis} is out of range for an input of shape "
            f"{tuple(x.shape)}; set ch_axis to the channel dimension"
        )


def check_channel_axis(owner: str, x: torch.Tensor, ch_axis: int, num_channels: int) -> None:
    """``ch_axis`` must be a dimension of ``x`` with one scale per slice along it."""
    check_axis_in_range(owner, x, ch_axis)
    channels = x.shape[ch_axis]
    if channels != num_channels:
        raise ValueError(
            f"{owner} holds {num_channels} per-channel scales but the input of shape "
            f"{tuple(x.shape)} has {channels} channels along axis {ch_axis}; run a batch with "
            "the observer enabled (or load a matching state dict) before fake-quantizing"
        )
