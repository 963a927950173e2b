"""Dynamic quantized ``Linear``: float in, float out, weights quantized ahead of time.

int8 (``dtype=torch.qint8``): the weight is a packed ``torch.qint8`` tensor; each call
quantizes the input per tensor (``torch.ops.quantized.linear_dynamic``, range reduced to 7
bits as fbgemm requires, from state-dict version 4 on). float16: the weight is packed as
float16 (``linear_dynamic_fp16``).

The state dict is upstream's (the static ``Linear``'s layout, version 4), so it loads into
``torch.ao.nn.quantized.dynamic.Linear`` and back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import fxquant.nn.intrinsic.modules.fused as nni
from fxquant.nn._errors import check_float_input
from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.qat.dynamic import Linear as QATDynamicLinear
from fxquant.nn.quantized.dynamic.weights import DynamicDTypeError, dynamic_weight_observer
from fxquant.nn.quantized.linear import Linear as StaticLinear
from fxquant.nn.quantized.utils import quantize_weight

__all__ = ["Linear"]

_FLOAT_LINEARS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.modules.linear.NonDynamicallyQuantizableLinear,
    nni.LinearReLU,
    QATDynamicLinear,
)
_LINEAR_DYNAMIC = packed_kernel(torch.ops.quantized.linear_dynamic.default)
_LINEAR_DYNAMIC_FP16 = packed_kernel(torch.ops.quantized.linear_dynamic_fp16.default)


class Linear(StaticLinear):
    """Dynamic quantized ``nn.Linear`` (same constructor as upstream's).

    Args:
        in_features, out_features: as ``nn.Linear``.
        bias_: whether there is a bias.
        dtype: ``torch.qint8`` (int8 weights, dynamic int8 activations) or ``torch.float16``.

    >>> m = Linear.from_float(float_linear)     # float_linear.qconfig = default_dynamic_qconfig
    >>> y = m(torch.randn(128, 20))
    """

    # version 4: the int8 kernel runs with reduce_range=True
    _version = 4

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_: bool = True,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__(in_features, out_features, bias_, dtype=dtype)
        self.version: int | None = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_input(self, x)
        packed = self._packed_params._packed_params
        if self._packed_params.dtype == torch.qint8:
            reduce_range = self.version is not None and self.version >= 4
            y = _LINEAR_DYNAMIC(x, packed, reduce_range)
        else:
            y = _LINEAR_DYNAMIC_FP16(x, packed)
        return y.to(x.dtype)

    def _get_name(self) -> str:
        return "DynamicQuantizedLinear"

    def extra_repr(self) -> str:
        dtype = self._packed_params.dtype
        text = f"in_features={self.in_features}, out_features={self.out_features}, dtype={dtype}"
        if dtype == torch.qint8:
            text += f", qscheme={self.weight().qscheme()}"
        return text

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
        # the saved version decides the kernel's reduce_range (see forward)
        self.version = local_metadata.get("version", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize a float ``nn.Linear`` (or fused ``LinearReLU`` -- only its linear is
        taken -- or a dynamic QAT ``Linear``).

        The weight observer is ``mod.qconfig.weight()`` (``default_dynamic_qconfig``'s when
        the qconfig or its weight is ``None``); its dtype picks int8 or float16.
        """
        if type(mod) not in _FLOAT_LINEARS:
            names = ", ".join(t.__name__ for t in _FLOAT_LINEARS)
            raise DynamicDTypeError(
                f"{cls.__name__}.from_float converts {names}, got {type(mod).__name__}"
            )
        if not hasattr(mod, "qconfig"):
            raise DynamicDTypeError(
                f"{cls.__name__}.from_float: the {type(mod).__name__} has no qconfig attribute; "
                f"set module.qconfig (quantize_dynamic does it) before converting"
            )
        qconfig = mod.qconfig  # the fused container's, which its parts inherit
        if isinstance(mod, nni.LinearReLU):
            mod = mod[0]
        assert isinstance(mod, nn.Linear)
        observer = dynamic_weight_observer(qconfig, cls.__name__)
        if observer.dtype == torch.qint8:
            observer(mod.weight)
            weight = quantize_weight(mod.weight.float(), observer)
        else:
            weight = mod.weight.float()
        qlinear = cls(mod.in_features, mod.out_features, dtype=observer.dtype)
        qlinear.set_weight_bias(weight, mod.bias)
        return qlinear

    @classmethod
    def from_reference(cls, ref_qlinear: Any) -> Any:  # type: ignore[override]  # no output qparams
        """Build from a reference quantized ``Linear`` (its quantized weight and bias)."""
        qlinear = cls(
            ref_qlinear.in_features, ref_qlinear.out_features, dtype=ref_qlinear.weight_dtype
        )
        qlinear.set_weight_bias(ref_qlinear.get_quantized_weight(), ref_qlinear.bias)
        return qlinear
