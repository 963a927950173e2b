"""The base of every fake-quantizer: two switches (observe, fake-quantize) kept as buffers.

A fake-quantizer sits where a quantize/dequantize pair will go after conversion. During
quantization-aware training its ``forward`` (a) updates statistics of the tensor when the
observer is enabled and (b) returns ``dequantize(quantize(x))`` in float when fake
quantization is enabled, with a gradient that lets training proceed through the rounding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fxquant.observers.base import _PartialWrapper, _with_args, _with_callable_args

__all__ = ["FakeQuantizeBase"]


class FakeQuantizeBase(ABC, nn.Module):
    """Base class of fake-quantize modules.

    The switches are ``uint8`` buffers of one element (not Python bools) so that they are
    saved in state dicts and broadcast by DistributedDataParallel; NCCL has no bool type.
    Subclasses implement ``forward`` and ``calculate_qparams``.
    """

    fake_quant_enabled: torch.Tensor
    observer_enabled: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.uint8))

    @abstractmethod
    def forward(self, x: Any) -> Any: ...

    @abstractmethod
    def calculate_qparams(self, **kwargs: Any) -> Any: ...

    def enable_fake_quant(self, enabled: bool = True) -> None:
        """Switch fake quantization on (or off with ``enabled=False``)."""
        self.fake_quant_enabled[0] = 1 if enabled else 0

    def disable_fake_quant(self) -> None:
        """Make ``forward`` return its input unchanged (statistics may still update)."""
        self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> None:
        """Switch statistics collection on (or off with ``enabled=False``)."""
        self.observer_enabled[0] = 1 if enabled else 0

    def disable_observer(self) -> None:
        """Freeze the quantization parameters at their current values."""
        self.enable_observer(False)

    @classmethod
    def with_args(cls, **kwargs: Any) -> _PartialWrapper:
        """A constructor of ``cls`` with ``kwargs`` bound; each call builds a new module.

        >>> ctor = FakeQuantize.with_args(quant_min=-128, quant_max=127, dtype=torch.qint8)
        >>> ctor() is not ctor()
        True
        """
        return _with_args(cls, **kwargs)

    @classmethod
    def with_callable_args(cls, **kwargs: Callable[[], Any]) -> _PartialWrapper:
        """A constructor of ``cls`` whose ``kwargs`` are zero-argument callables, evaluated
        anew for every module built."""
        return _with_callable_args(cls, **kwargs)
