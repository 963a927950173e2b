"""Module-level QAT switches, meant for ``model.apply(...)``.

>>> model.apply(disable_observer)    # freeze every scale/zero point in the model
>>> model.apply(enable_fake_quant)   # and keep simulating quantization with them

Each switch acts on fake-quantizers and leaves every other module untouched.
"""

from __future__ import annotations

from torch import nn

from fxquant.fake_quantize.base import FakeQuantizeBase

__all__ = ["disable_fake_quant", "disable_observer", "enable_fake_quant", "enable_observer"]


def disable_fake_quant(mod: nn.Module) -> None:
    """Turn fake quantization off in ``mod`` if it is a fake-quantizer."""
    if isinstance(mod, FakeQuantizeBase):
        mod.disable_fake_quant()


def enable_fake_quant(mod: nn.Module) -> None:
    """Turn fake quantization on in ``mod`` if it is a fake-quantizer."""
    if isinstance(mod, FakeQuantizeBase):
        mod.enable_fake_quant()


def disable_observer(mod: nn.Module) -> None:
    """Stop statistics collection in ``mod`` if it is a fake-quantizer."""
    if isinstance(mod, FakeQuantizeBase):
        mod.disable_observer()


def enable_observer(mod: nn.Module) -> None:
    """Resume statistics collection in ``mod`` if it is a fake-quantizer."""
    if isinstance(mod, FakeQuantizeBase):
        mod.enable_observer()
