"""``ReferenceQuantizedModule``: float weights plus weight qparams, quantize-dequantize in forward.

A reference module computes what a quantized kernel would compute, in float: its weight goes
through quantize -> dequantize with the stored qparams (``get_weight``) before the float op.
Lowering reads ``get_quantized_weight()`` to build the packed module.

The q/dq math lives in :class:`~fxquant.nn.quantized.reference.weight_qdq.WeightQParams`.

State dict keys (upstream's): ``weight``, ``bias``, ``weight_scale``, ``weight_zero_point``,
``weight_axis``, ``weight_qscheme``, ``weight_dtype``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from fxquant.nn.quantized.reference.weight_qdq import (
    PER_CHANNEL_QSCHEMES,
    QUANTIZED_DTYPES,
    WeightQParams,
)

__all__ = [
    "ReferenceQuantizedModule",
    "initialization_skipped",
    "skip_initialization",
    "weight_qparams_from_observer",
]

_SKIP_INITIALIZATION: ContextVar[bool] = ContextVar("fxquant_skip_initialization", default=False)


@contextmanager
def skip_initialization() -> Iterator[None]:
    """Inside the block, reference modules skip the float module's random initialisation of
    their weight and bias: ``from_float`` replaces both right after construction, and the
    random fill is most of the cost of building a large reference conv/linear."""
    token = _SKIP_INITIALIZATION.set(True)
    try:
        yield
    finally:
        _SKIP_INITIALIZATION.reset(token)


def initialization_skipped() -> bool:
    """Whether a reference module being built now should leave its parameters uninitialised."""
    return _SKIP_INITIALIZATION.get()

_SUPPORTED_QSCHEMES = (
    None,
    torch.per_tensor_affine,
    torch.per_channel_affine,
    torch.per_channel_affine_float_qparams,
)


def weight_qparams_from_observer(observer: Any) -> dict[str, Any]:
    """The ``weight_qparams`` dict a reference module takes, from an observer that has seen the
    weight (symmetric qschemes become their affine twins: quantized tensors have no symmetric
    kind)."""
    qscheme = getattr(observer, "qscheme", None)
    if qscheme is None or getattr(observer, "dtype", None) in (torch.float, torch.float16):
        return {"qscheme": None, "dtype": observer.dtype}
    qparams: dict[str, Any] = {"dtype": observer.dtype}
    if qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        qparams["qscheme"] = torch.per_tensor_affine
    elif qscheme in (torch.per_channel_affine, torch.per_channel_symmetric):
        qparams["qscheme"] = torch.per_channel_affine
        qparams["axis"] = observer.ch_axis
    elif qscheme == torch.per_channel_affine_float_qparams:
        qparams["qscheme"] = qscheme
        qparams["axis"] = observer.ch_axis
    else:
        raise ValueError(f"unsupported weight qscheme {qscheme}")
    qparams["scale"], qparams["zero_point"] = observer.calculate_qparams()
    qparams["quant_min"] = observer.quant_min
    qparams["quant_max"] = observer.quant_max
    return qparams


def _as_buffer(value: Any, dtype: torch.dtype, device: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return torch.tensor(value, dtype=dtype, device=device)


class ReferenceQuantizedModule(nn.Module):
    """Mixin for reference modules: weight qparams as buffers, q/dq of the weight."""

    weight: torch.Tensor
    weight_scale: torch.Tensor
    weight_zero_point: torch.Tensor
    weight_axis: torch.Tensor

    def _init_weight_qparams(self, weight_qparams: dict[str, Any] | None, device: Any) -> None:
        if weight_qparams is None:
            weight_qparams = {
                "qscheme": torch.per_tensor_affine, "dtype": torch.quint8,
                "scale": 1.0, "zero_point": 0,
            }
        self.weight_qscheme: torch.qscheme | None = weight_qparams["qscheme"]
        self.weight_dtype: torch.dtype = weight_qparams["dtype"]
        if self.weight_qscheme not in _SUPPORTED_QSCHEMES:
            raise ValueError(
                f"{self._get_name()}: weight qscheme {self.weight_qscheme} is not supported; use "
                f"per_tensor_affine, per_channel_affine or per_channel_affine_float_qparams"
            )
        if self.weight_dtype in QUANTIZED_DTYPES:
            zp = weight_qparams["zero_point"]
            zp_dtype = zp.dtype if isinstance(zp, torch.Tensor) else torch.int
            self.register_buffer(
                "weight_scale", _as_buffer(weight_qparams["scale"], torch.float, device)
            )
            self.register_buffer("weight_zero_point", _as_buffer(zp, zp_dtype, device))
            axis = weight_qparams.get("axis", 0) if self.weight_qscheme in PER_CHANNEL_QSCHEMES else 0
            self.register_buffer("weight_axis", _as_buffer(axis, torch.int, device))
        else:
            # float weights (e.g. float16): placeholders so the buffers always exist
            self.register_buffer("weight_scale", torch.tensor(1.0, dtype=torch.float, device=device))
            self.register_buffer("weight_zero_point", torch.tensor(0, dtype=torch.int, device=device))
            self.register_buffer("weight_axis", torch.tensor(0, dtype=torch.int, device=device))
        self.is_decomposed: bool = weight_qparams.get("is_decomposed", False)
        # a Python int so that export does not have to trace a .item()
        self.weight_axis_int: int = int(self.weight_axis.item())
        self.weight_quant_min: int | None = weight_qparams.get("quant_min")
        self.weight_quant_max: int | None = weight_qparams.get("quant_max")

    # ---- q/dq of the weight -------------------------------------------------------------

    def weight_qparams(self) -> WeightQParams:
        """The weight's qparams as one value (read from the buffers on every call, so that
        loading a state dict takes effect)."""
        return WeightQParams(
            qscheme=self.weight_qscheme, dtype=self.weight_dtype, scale=self.weight_scale,
            zero_point=self.weight_zero_point, axis=self.weight_axis_int,
            is_decomposed=self.is_decomposed, quant_min=self.weight_quant_min,
            quant_max=self.weight_quant_max,
        )

    def get_weight(self) -> torch.Tensor:
        """The weight after quantize -> dequantize (what the quantized kernel will see)."""
        return self.weight_qparams().fake_quantize(self.weight)

    def get_quantized_weight(self) -> torch.Tensor:
        """The quantized weight: a quantized tensor, or integers when ``is_decomposed``."""
        try:
            return self.weight_qparams().quantize(self.weight)
        except ValueError as e:
            raise ValueError(f"{self._get_name()}: {e}") from e

    # ---- serialization ------------------------------------------------------------------

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight_qscheme"] = self.weight_qscheme
        destination[prefix + "weight_dtype"] = self.weight_dtype

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
        self.weight_qscheme = state_dict.pop(prefix + "weight_qscheme")
        self.weight_dtype = state_dict.pop(prefix + "weight_dtype")
        for name in ("weight_scale", "weight_zero_point", "weight_axis"):
            # the qparams may change shape (per tensor <-> per channel): take them as saved
            if prefix + name in state_dict:
                setattr(self, name, state_dict.pop(prefix + name))
        self.weight_axis_int = int(self.weight_axis.item())
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )
