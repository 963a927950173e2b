"""Static quantized normalizations: ``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d/2d/3d``.

Weights stay float (the kernels take float affine parameters); ``scale`` / ``zero_point``
buffers hold the output qparams. Constructor signatures are upstream's: the float ``weight``
and ``bias`` come right after the shape arguments.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.quantized.utils import observed_output_qparams

__all__ = ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm"]


def _register_output_qparams(
    module: nn.Module, scale: float, zero_point: int, device: Any, dtype: Any
) -> None:
    module.register_buffer("scale", torch.tensor(scale, device=device, dtype=dtype))
    module.register_buffer("zero_point", torch.tensor(zero_point, device=device, dtype=dtype))


class LayerNorm(nn.LayerNorm):
    """Quantized ``nn.LayerNorm`` (``torch.ops.quantized.layer_norm``)."""

    def __init__(
        self,
        normalized_shape: Any,
        weight: Any,
        bias: Any,
        scale: float,
        zero_point: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            normalized_shape, eps=eps, elementwise_affine=elementwise_affine,
            device=device, dtype=dtype,
        )
        self.weight = weight
        self.bias = bias
        _register_output_qparams(self, scale, zero_point, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.layer_norm(
            input, self.normalized_shape, weight=self.weight, bias=self.bias, eps=self.eps,
            output_scale=self.scale, output_zero_point=self.zero_point,
        )

    def _get_name(self) -> str:
        return "QuantizedLayerNorm"

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> LayerNorm:
        """Build from an observed float ``LayerNorm`` (affine parameters are shared)."""
        scale, zero_point = observed_output_qparams(mod)
        return cls.from_reference(mod, scale, zero_point)

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> LayerNorm:
        return cls(
            mod.normalized_shape, mod.weight, mod.bias, float(scale), int(zero_point),
            mod.eps, mod.elementwise_affine,
        )


class GroupNorm(nn.GroupNorm):
    """Quantized ``nn.GroupNorm`` (``torch.ops.quantized.group_norm``)."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        weight: Any,
        bias: Any,
        scale: float,
        zero_point: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(num_groups, num_channels, eps, affine, device=device, dtype=dtype)
        self.weight = weight
        self.bias = bias
        _register_output_qparams(self, scale, zero_point, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.group_norm(
            input, self.num_groups, self.weight, self.bias, self.eps, self.scale, self.zero_point
        )

    def _get_name(self) -> str:
        return "QuantizedGroupNorm"

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> GroupNorm:
        """Build from an observed float ``GroupNorm`` (affine parameters are shared)."""
        scale, zero_point = observed_output_qparams(mod)
        return cls(
            mod.num_groups, mod.num_channels, mod.weight, mod.bias, scale, zero_point,
            mod.eps, mod.affine,
        )


class _InstanceNorm(nn.modules.instancenorm._InstanceNorm):
    def __init__(
        self,
        num_features: int,
        weight: Any,
        bias: Any,
        scale: float,
        zero_point: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype
        )
        self.weight = weight
        self.bias = bias
        _register_output_qparams(self, scale, zero_point, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, input)
        return torch.ops.quantized.instance_norm(
            input, self.weight, self.bias, self.eps, self.scale, self.zero_point
        )

    def _get_name(self) -> str:
        return f"Quantized{type(self).__name__}"

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Any:
        """Build from an observed float instance norm (affine parameters are shared)."""
        scale, zero_point = observed_output_qparams(mod)
        return cls.from_reference(mod, scale, zero_point)

    @classmethod
    def from_reference(cls, mod: Any, scale: float, zero_point: int) -> Any:
        return cls(
            mod.num_features, mod.weight, mod.bias, float(scale), int(zero_point),
            mod.eps, mod.affine,
        )


class InstanceNorm1d(_InstanceNorm, nn.InstanceNorm1d):
    """Quantized ``nn.InstanceNorm1d``."""


class InstanceNorm2d(_InstanceNorm, nn.InstanceNorm2d):
    """Quantized ``nn.InstanceNorm2d``."""


class InstanceNorm3d(_InstanceNorm, nn.InstanceNorm3d):
    """Quantized ``nn.InstanceNorm3d``."""
