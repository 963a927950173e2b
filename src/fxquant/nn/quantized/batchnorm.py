"""Static quantized ``BatchNorm2d`` / ``BatchNorm3d`` (``torch.ops.quantized.batch_norm{2,3}d``).

The float statistics and affine parameters are kept as they are; ``scale`` / ``zero_point``
buffers hold the output qparams. State dict keys are ``nn.BatchNorm``'s plus those two.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.quantized.utils import FromFloatError, unwrap_fused

__all__ = ["BatchNorm2d", "BatchNorm3d"]

_SHAPE_NAMES = {4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}


class _BatchNorm(nn.modules.batchnorm._BatchNorm):
    _NDIM: ClassVar[int]
    _OP: ClassVar[Any]

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
        device: Any = None, dtype: Any = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, True, True, device=device, dtype=dtype)
        self.register_buffer("scale", torch.tensor(1.0, device=device, dtype=dtype))
        self.register_buffer("zero_point", torch.tensor(0, device=device, dtype=dtype))

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != self._NDIM:
            raise ValueError(
                f"{self._get_name()} expects input of shape {_SHAPE_NAMES[self._NDIM]}, "
                f"got shape {tuple(input.shape)}"
            )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return type(self)._OP(
            input, self.weight, self.bias, self.running_mean, self.running_var, self.eps,
            self.scale, self.zero_point,
        )

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Any:
        """Build from an observed float batch norm (or fused ``BNReLU``): statistics are
        shared with ``mod``, output qparams come from its ``activation_post_process``."""
        if not hasattr(getattr(mod, "activation_post_process", None), "calculate_qparams"):
            raise FromFloatError(
                f"{cls.__name__}.from_float: {type(mod).__name__} has no output observer "
                f"(activation_post_process); run prepare() and calibrate it first"
            )
        bn = unwrap_fused(mod)
        scale, zero_point = mod.activation_post_process.calculate_qparams()
        new_mod = cls(int(bn.num_features), float(bn.eps))
        new_mod.weight = bn.weight
        new_mod.bias = bn.bias
        new_mod.running_mean = bn.running_mean
        new_mod.running_var = bn.running_var
        new_mod.scale = scale
        new_mod.zero_point = zero_point
        return new_mod

    @classmethod
    def from_reference(cls, bn: Any, output_scale: Any, output_zero_point: Any) -> Any:
        """Build from a float batch norm (or fused ``BNReLU``) and the output qparams."""
        bn = unwrap_fused(bn)
        qbn = cls(
            int(bn.num_features), float(bn.eps), float(bn.momentum),
            device=bn.weight.device, dtype=bn.weight.dtype,
        )
        qbn.weight = bn.weight
        qbn.bias = bn.bias
        qbn.running_mean = bn.running_mean
        qbn.running_var = bn.running_var
        # tensors or Python numbers (upstream accepts only tensors here)
        qbn.scale = torch.as_tensor(output_scale)
        qbn.zero_point = torch.as_tensor(output_zero_point)
        return qbn


class BatchNorm2d(_BatchNorm):
    """Quantized ``nn.BatchNorm2d``."""

    _NDIM = 4
    _OP = torch.ops.quantized.batch_norm2d

    def _get_name(self) -> str:
        return "QuantizedBatchNorm2d"


class BatchNorm3d(_BatchNorm):
    """Quantized ``nn.BatchNorm3d``."""

    _NDIM = 5
    _OP = torch.ops.quantized.batch_norm3d

    def _get_name(self) -> str:
        return "QuantizedBatchNorm3d"
