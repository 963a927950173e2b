"""Static quantized ``Linear`` and the packed-weight holder shared with the dynamic one.

Weights live pre-packed for the active engine (``torch.ops.quantized.linear_prepack``); the
state dict holds them unpacked, in upstream's layout (version 3)::

    <prefix>scale, <prefix>zero_point                      output qparams (tensors)
    <prefix>_packed_params.dtype                           torch.qint8 or torch.float16
    <prefix>_packed_params._packed_params                  (weight, bias) tuple

so a state dict saved from ``torch.ao.nn.quantized.Linear`` loads here and back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.utils import (
    FromFloatError,
    WeightedQuantizedModule,
    fold_bn_into_weights,
    output_qparams,
    quantize_weight,
    repr_without_packed_params,
    require_observed,
    require_type,
    split_fused,
)

__all__ = ["Linear", "LinearPackedParams"]

_PACKED_DTYPES = (torch.qint8, torch.float16)
_LINEAR = packed_kernel(torch.ops.quantized.linear.default)


class LinearPackedParams(nn.Module):
    """Holds a linear layer's weight and bias packed for the quantized engine.

    ``dtype=torch.qint8`` packs a quantized weight (static and dynamic int8 linear);
    ``dtype=torch.float16`` packs a float weight for the fp16 dynamic linear.
    """

    _version = 3

    def __init__(self, dtype: torch.dtype = torch.qint8) -> None:
        super().__init__()
        if dtype not in _PACKED_DTYPES:
            raise ValueError(f"LinearPackedParams supports torch.qint8 and torch.float16, got {dtype}")
        self.dtype = dtype
        if dtype == torch.qint8:
            weight = torch._empty_affine_quantized([1, 1], scale=1.0, zero_point=0, dtype=torch.qint8)
        else:
            weight = torch.zeros([1, 1], dtype=torch.float)
        self.set_weight_bias(weight, None)

    def set_weight_bias(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Pack ``weight`` (quantized for qint8, float for float16) and the float ``bias``."""
        if self.dtype == torch.qint8:
            self._packed_params = torch.ops.quantized.linear_prepack(weight, bias)
        else:
            self._packed_params = torch.ops.quantized.linear_prepack_fp16(weight, bias)

    def _weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.dtype == torch.qint8:
            return torch.ops.quantized.linear_unpack(self._packed_params)
        return torch.ops.quantized.linear_unpack_fp16(self._packed_params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "dtype"] = self.dtype
        destination[prefix + "_packed_params"] = self._weight_bias()

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
        version = local_metadata.get("version")
        # version 1 had no dtype entry (always qint8); versions 1-2 stored weight and bias
        # as separate entries instead of the (weight, bias) tuple.
        self.dtype = torch.qint8 if version is None or version < 2 else state_dict.pop(prefix + "dtype")
        if version is None or version < 3:
            weight, bias = state_dict.pop(prefix + "weight"), state_dict.pop(prefix + "bias")
        else:
            weight, bias = state_dict.pop(prefix + "_packed_params")
        self.set_weight_bias(weight, bias)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    def __repr__(self) -> str:
        return repr(self._weight_bias())


class Linear(WeightedQuantizedModule):
    """Quantized ``nn.Linear``: quantized input, quantized output (``torch.ops.quantized.linear``).

    ``scale`` and ``zero_point`` are the output's qparams. Build one with :meth:`from_float`
    from an observed float ``nn.Linear`` (or a QAT ``Linear``/``LinearBn1d``).

    >>> m = Linear(20, 30)
    >>> x = torch.quantize_per_tensor(torch.randn(4, 20), 0.1, 128, torch.quint8)
    >>> m(x).shape
    torch.Size([4, 30])
    """

    _version = 3
    _FLOAT_MODULE: Any = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_: bool = True,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__()
        if dtype not in _PACKED_DTYPES:
            raise ValueError(f"quantized Linear supports torch.qint8 and torch.float16, got {dtype}")
        self.in_features = in_features
        self.out_features = out_features
        bias = torch.zeros(out_features, dtype=torch.float) if bias_ else None
        if dtype == torch.qint8:
            weight = torch._empty_affine_quantized(
                [out_features, in_features], scale=1, zero_point=0, dtype=torch.qint8
            )
        else:
            weight = torch.zeros([out_features, in_features], dtype=torch.float)
        self._packed_params = LinearPackedParams(dtype)
        self._packed_params.set_weight_bias(weight, bias)
        self.scale = 1.0
        self.zero_point = 0

    def _get_name(self) -> str:
        return "QuantizedLinear"

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"scale={self.scale}, zero_point={self.zero_point}, qscheme={self.weight().qscheme()}"
        )

    def __repr__(self) -> str:
        return repr_without_packed_params(self, LinearPackedParams)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, x)
        return _LINEAR(x, self._packed_params._packed_params, self.scale, self.zero_point)

    # ---- serialization: output qparams as tensors next to the packed-params child ----------

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "scale"] = torch.tensor(self.scale)
        destination[prefix + "zero_point"] = torch.tensor(self.zero_point)

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
        self.scale = float(state_dict.pop(prefix + "scale"))
        self.zero_point = int(state_dict.pop(prefix + "zero_point"))
        version = local_metadata.get("version")
        if version is None or version == 1:
            # version 1 kept weight and bias on the module itself
            state_dict[prefix + "_packed_params.weight"] = state_dict.pop(prefix + "weight")
            state_dict[prefix + "_packed_params.bias"] = state_dict.pop(prefix + "bias")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    # ---- weights ------------------------------------------------------------------------

    def _weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._packed_params._weight_bias()

    def weight(self) -> torch.Tensor:
        """The quantized weight (unpacked)."""
        return self._weight_bias()[0]

    def bias(self) -> torch.Tensor | None:
        """The float bias, or ``None``."""
        return self._weight_bias()[1]

    def set_weight_bias(self, w: torch.Tensor, b: torch.Tensor | None) -> None:
        """Re-pack a new quantized weight and float bias."""
        self._packed_params.set_weight_bias(w, b)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def _float_module_types(cls) -> tuple[type, ...]:
        types = cls._FLOAT_MODULE
        return types if isinstance(types, tuple) else (types,)

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize an observed float ``Linear`` (or QAT ``Linear``/``LinearBn1d``/fused).

        The weight observer is ``mod.qconfig.weight()`` (QAT modules: ``mod.weight_fake_quant``);
        the output qparams come from ``mod.activation_post_process``. With
        ``use_precomputed_fake_quant=True`` the weight observer is not run again.
        """
        follower: Any = None
        if hasattr(mod, "weight_fake_quant"):
            fold_bn_into_weights(mod)
            require_observed(mod, cls.__name__, qconfig=False)
            linear = mod
            weight_post_process = mod.weight_fake_quant
        else:
            require_type(mod, cls._float_module_types(), cls.__name__)
            require_observed(mod, cls.__name__)
            linear, follower = split_fused(mod)
            qconfig = getattr(linear, "qconfig", None) or mod.qconfig
            weight_post_process = qconfig.weight()
        if not use_precomputed_fake_quant:
            weight_post_process(linear.weight)
        if weight_post_process.dtype != torch.qint8:
            raise FromFloatError(
                f"{cls.__name__}.from_float: the weight observer must produce torch.qint8, "
                f"got {weight_post_process.dtype}; use a qint8 weight observer in the qconfig"
            )
        qweight = quantize_weight(linear.weight.float(), weight_post_process)
        qlinear = cls._from_parts(linear, qweight, follower)
        qlinear.scale, qlinear.zero_point = output_qparams(mod.activation_post_process)
        return qlinear

    @classmethod
    def _from_parts(
        cls, linear: Any, qweight: torch.Tensor, follower: Any = None
    ) -> Any:
        """A module of this class holding ``qweight`` and ``linear``'s bias. ``follower`` is
        the module fused after the linear (subclasses read e.g. its ``negative_slope``)."""
        qlinear = cls(int(linear.in_features), int(linear.out_features), dtype=torch.qint8)
        qlinear.set_weight_bias(qweight, linear.bias)
        return qlinear

    @classmethod
    def from_reference(cls, ref_qlinear: Any, output_scale: float, output_zero_point: int) -> Any:
        """Build from a reference ``Linear`` (float weight + weight qparams), or a fused
        reference module whose first child is one, and the output qparams."""
        ref_linear, follower = split_fused(ref_qlinear)
        qlinear = cls._from_parts(ref_linear, ref_linear.get_quantized_weight(), follower)
        qlinear.scale = float(output_scale)
        qlinear.zero_point = int(output_zero_point)
        return qlinear
