"""An observer whose parameters are derived from other observers (e.g. a bias quantized
with scale = input scale × weight scale)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fxquant.observers.base import ObserverBase

__all__ = ["DerivedObserverOrFakeQuantize"]


class DerivedObserverOrFakeQuantize(ObserverBase):
    """Records nothing itself; ``calculate_qparams()`` asks ``derive_qparams_fn`` to combine
    the observers it derives from."""

    def __init__(
        self,
        dtype: torch.dtype,
        obs_or_fqs: list[Any],
        derive_qparams_fn: Callable[[list[Any]], tuple[Tensor, Tensor]],
        quant_min: int | None = None,
        quant_max: int | None = None,
        qscheme: torch.qscheme | None = None,
        ch_axis: int | None = None,
    ) -> None:
        super().__init__(dtype)
        # a plain list: the sources are registered (and saved) where they are inserted
        self.obs_or_fqs = obs_or_fqs
        self.derive_qparams_fn = derive_qparams_fn
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.qscheme = qscheme
        self.ch_axis = ch_axis

    def forward(self, x: Tensor) -> Tensor:
        return x

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]  # no kwargs
        return self.derive_qparams_fn(self.obs_or_fqs)
