"""Quantized ``Dropout``: identity (quantized models run in inference mode)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Dropout"]


class Dropout(nn.Dropout):
    """A placeholder so that float models with dropout convert; returns its input."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input

    def _get_name(self) -> str:
        return "QuantizedDropout"

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Dropout:
        """Build from a float ``Dropout`` (keeps ``p`` and ``inplace``)."""
        return cls(float(mod.p), bool(mod.inplace))

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> Dropout:
        return cls(float(mod.p), bool(mod.inplace))
