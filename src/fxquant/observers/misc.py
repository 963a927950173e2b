"""Observers that record no range: fixed parameters, placeholders carrying a dtype,
debug recorders, and the "reuse my input's observer" marker."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from fxquant.observers.base import ObserverBase

__all__ = [
    "FixedQParamsObserver",
    "NoopObserver",
    "ObserverUsageError",
    "PlaceholderObserver",
    "RecordingObserver",
    "ReuseInputObserver",
]


class ObserverUsageError(RuntimeError):
    """An observer was asked for something it does not compute."""


def _no_qparams(observer: ObserverBase, why: str) -> ObserverUsageError:
    return ObserverUsageError(
        f"calculate_qparams should not be called for {type(observer).__name__}: {why}"
    )


class FixedQParamsObserver(ObserverBase):
    """Always reports the same ``scale``/``zero_point``: for ops whose output range is known
    in advance (sigmoid: [0, 1] → scale 1/256, zero point 0; tanh: [-1, 1] → 2/256, 128)."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        quant_min: int = 0,
        quant_max: int = 255,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if is_dynamic:
            raise NotImplementedError(f"{type(self).__name__} does not support dynamic quantization")
        if not scale > 0:
            raise ValueError(f"{type(self).__name__}: scale must be positive, got {scale}")
        if not quant_min <= zero_point <= quant_max:
            raise ValueError(
                f"{type(self).__name__}: zero_point {zero_point} is outside "
                f"[{quant_min}, {quant_max}]"
            )
        super().__init__(dtype=dtype, is_dynamic=is_dynamic, **kwargs)
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.qscheme = qscheme
        self.register_buffer("scale", torch.tensor([scale], dtype=torch.float))
        self.register_buffer("zero_point", torch.tensor([zero_point], dtype=torch.int))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        return self.scale, self.zero_point


class PlaceholderObserver(ObserverBase):
    """Records nothing; carries ``dtype`` (and ``is_dynamic``) to the convert step. Used for
    float16 and for dynamic quantization, whose parameters are computed at run time."""

    def __init__(
        self,
        dtype: torch.dtype = torch.float32,
        custom_op_name: str = "",
        compute_dtype: torch.dtype | None = None,
        quant_min: int | None = None,
        quant_max: int | None = None,
        qscheme: torch.qscheme | None = None,
        eps: float | None = None,
        is_dynamic: bool = False,
    ) -> None:
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)
        self.qscheme = torch.per_tensor_affine if qscheme is None else qscheme
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.eps = torch.finfo(torch.float32).eps if eps is None else eps
        self.custom_op = custom_op_name
        if compute_dtype:
            # Deprecated spelling of is_dynamic=True. Upstream warns but leaves is_dynamic
            # unchanged (a bug); we honour the request.
            warnings.warn(
                "compute_dtype is deprecated: use is_dynamic=True", DeprecationWarning, stacklevel=2
            )
            self.is_dynamic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, is_dynamic={self.is_dynamic}"

    def calculate_qparams(self) -> Any:  # type: ignore[override]  # no kwargs
        raise _no_qparams(self, "it records no statistics; its dtype is used as is")


class RecordingObserver(ObserverBase):
    """Debugging aid: keeps a copy of every tensor it sees (``get_tensor_value()``)."""

    def __init__(self, dtype: torch.dtype = torch.quint8) -> None:
        super().__init__(dtype=dtype, is_dynamic=False)
        self.tensor_val: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tensor_val.append(x.clone())
        return x

    def calculate_qparams(self) -> Any:  # type: ignore[override]  # no kwargs
        raise _no_qparams(self, "it is a debugging recorder; read get_tensor_value()")

    def get_tensor_value(self) -> list[torch.Tensor | None]:
        return self.tensor_val


class NoopObserver(ObserverBase):
    """Does nothing; passes ``dtype`` (float16 by default) to the convert step."""

    def __init__(self, dtype: torch.dtype = torch.float16, custom_op_name: str = "") -> None:
        super().__init__(dtype=dtype, is_dynamic=False)
        self.custom_op = custom_op_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def calculate_qparams(self) -> Any:  # type: ignore[override]  # no kwargs
        raise _no_qparams(self, "it records no statistics")


class ReuseInputObserver(ObserverBase):
    """Marks an op (reshape, view, ...) whose output reuses the observer of its input: graph
    passes share the input's observer instead of inserting one. Never computes qparams."""

    def __init__(self) -> None:
        super().__init__(torch.quint8, is_dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def calculate_qparams(self) -> Any:  # type: ignore[override]  # no kwargs
        raise _no_qparams(self, "the op shares its input's observer")
