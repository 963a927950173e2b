"""The quantized multi-head attention: an observed quantizable
:class:`~fxquant.nn.quantizable.MultiheadAttention` after eager ``convert`` (quantized
projections and scaling inside, quantized tensors in and out, the attention itself in float).
Mirrors ``torch.ao.nn.quantized.MultiheadAttention``; meant to be re-exported as
``fxquant.nn.quantized.MultiheadAttention``.

``bias_k`` / ``bias_v`` (``add_bias_kv=True``) become quint8 tensors with per-tensor
parameters chosen from their own values (upstream quantizes ``bias_v`` with parameters
computed from the already quantized ``bias_k``). The unused float packed projections
(``in_proj_weight``, ``in_proj_bias`` and, for ``kdim``/``vdim`` != ``embed_dim``,
``q/k/v_proj_weight``) are removed.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from fxquant.nn.quantizable.activation import MultiheadAttention as QuantizableMultiheadAttention
from fxquant.nn.quantizable.rnn import QuantizableModuleError
from fxquant.observers import FixedQParamsObserver

__all__ = ["MultiheadAttention"]

_UNUSED_FLOAT_PARAMETERS = (
    "in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight",
)


class MultiheadAttention(QuantizableMultiheadAttention):
    """Quantized multi-head attention, reached only through ``from_observed`` (``convert``
    calls it with the default custom-module configuration)."""

    _FLOAT_MODULE = QuantizableMultiheadAttention

    def _get_name(self) -> str:
        return "QuantizedMultiheadAttention"

    @classmethod
    def from_float(cls, other: Any, qconfig: Any = None) -> Any:
        raise NotImplementedError(
            "the quantized MultiheadAttention is built from an observed quantizable one: "
            "prepare the float model (nn.MultiheadAttention becomes "
            "fxquant.nn.quantizable.MultiheadAttention), calibrate, then convert"
        )

    @classmethod
    def from_observed(cls, other: Any) -> Any:
        """Convert an observed (calibrated) quantizable attention to quantized modules."""
        if not isinstance(other, QuantizableMultiheadAttention):
            raise QuantizableModuleError(
                f"{cls.__name__}.from_observed converts "
                f"fxquant.nn.quantizable.MultiheadAttention, got {type(other).__name__}"
            )
        # eager mode's convert is above this package; import it where it is needed
        from fxquant.eager import convert

        observed = copy.deepcopy(other)
        if hasattr(observed.q_scaling_product, "activation_post_process"):
            # mul_scalar is never observed (its output grid follows from its input's); give
            # convert the values upstream ends up with (1.0, 0) without an uncalibrated warning
            observed.q_scaling_product.activation_post_process = FixedQParamsObserver(
                scale=1.0, zero_point=0
            )
        converted = convert(observed, inplace=True, remove_qconfig=True)
        converted.__class__ = cls
        for name in ("bias_k", "bias_v"):
            param = converted._parameters.pop(name, None)
            if param is not None:
                setattr(converted, name, _quantize_per_tensor(param.detach()))
        for name in _UNUSED_FLOAT_PARAMETERS:
            converted._parameters.pop(name, None)
        return converted


def _quantize_per_tensor(x: torch.Tensor) -> torch.Tensor:
    """quint8 with the per-tensor parameters of ``x``'s range (as upstream does for bias_k)."""
    scale, zero_point = torch._choose_qparams_per_tensor(x, reduce_range=False)
    return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
