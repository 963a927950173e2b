"""What an inserted observer/fake-quantizer stands for at convert time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fxquant.engine.derived import DerivedObserverOrFakeQuantize
from fxquant.engine.errors import NotCalibratedError
from fxquant.fake_quantize import FakeQuantizeBase
from fxquant.numerics.dtypes import (
    SUPPORTED_QDTYPES,
    calculate_qmin_qmax,
    is_float_qdtype,
    storage_dtype,
)
from fxquant.numerics.qparams import PER_CHANNEL_QSCHEMES
from fxquant.observers import (
    FixedQParamsObserver,
    PlaceholderObserver,
    is_activation_post_process,
)
from fxquant.observers.base import range_is_uninitialized

__all__ = ["QuantizeDecision", "checked_qparams", "decide", "has_statistics", "is_observer_module"]


def is_observer_module(module: nn.Module) -> bool:
    return is_activation_post_process(module) or isinstance(module, DerivedObserverOrFakeQuantize)


@dataclass(frozen=True, kw_only=True)
class QuantizeDecision:
    """How convert replaces one observer: ``kind`` is ``"identity"`` (leave float),
    ``"cast"`` (float16 and friends), ``"dynamic"``, ``"per_tensor"`` or ``"per_channel"``."""

    kind: str
    dtype: torch.dtype  # the plain storage dtype the q/dq ops take
    quant_min: int = 0
    quant_max: int = 0
    qscheme: torch.qscheme | None = None
    ch_axis: int | None = None


def _observer_of(module: nn.Module) -> nn.Module:
    if isinstance(module, FakeQuantizeBase):
        inner = module.activation_post_process
        assert isinstance(inner, nn.Module)
        return inner
    return module


def has_statistics(module: nn.Module) -> bool:
    """Whether ``calculate_qparams`` would answer from data rather than a default."""
    obs = _observer_of(module)
    if isinstance(obs, (FixedQParamsObserver, PlaceholderObserver)):
        return True
    if isinstance(obs, DerivedObserverOrFakeQuantize):
        return all(has_statistics(o) for o in obs.obs_or_fqs)
    min_val, max_val = getattr(obs, "min_val", None), getattr(obs, "max_val", None)
    if isinstance(min_val, torch.Tensor) and isinstance(max_val, torch.Tensor):
        return not range_is_uninitialized(min_val, max_val)
    return True


def decide(module: nn.Module) -> QuantizeDecision:
    dtype = getattr(module, "dtype", torch.float32)
    is_dynamic = bool(getattr(module, "is_dynamic", False))
    if dtype not in SUPPORTED_QDTYPES:
        return QuantizeDecision(kind="identity", dtype=dtype)
    if is_float_qdtype(dtype):
        return QuantizeDecision(kind="cast", dtype=dtype)
    quant_min, quant_max = getattr(module, "quant_min", None), getattr(module, "quant_max", None)
    if quant_min is None or quant_max is None:
        quant_min, quant_max = calculate_qmin_qmax(None, None, False, dtype, False)
    qscheme = getattr(module, "qscheme", None) or torch.per_tensor_affine
    if is_dynamic:
        kind, ch_axis = "dynamic", None
    elif qscheme in PER_CHANNEL_QSCHEMES:
        kind, ch_axis = "per_channel", int(getattr(module, "ch_axis"))  # noqa: B009  # not typed on nn.Module
    else:
        kind, ch_axis = "per_tensor", None
    return QuantizeDecision(
        kind=kind, dtype=storage_dtype(dtype), quant_min=int(quant_min), quant_max=int(quant_max),
        qscheme=qscheme, ch_axis=ch_axis,
    )


def checked_qparams(module: nn.Module, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The observer's (scale, zero_point); :class:`NotCalibratedError` if it saw no data."""
    if not has_statistics(module):
        raise NotCalibratedError(
            f"the observer at {where} has seen no data: run calibration data through the "
            "prepared model (or train it, for QAT) before convert_pt2e"
        )
    scale, zero_point = module.calculate_qparams()  # type: ignore[operator]  # an observer
    return scale, zero_point
