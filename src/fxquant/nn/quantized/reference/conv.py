"""Reference quantized convolutions: the float conv with a quantize-dequantized weight.

``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``, each a subclass of its float module (same
constructor plus ``weight_qparams``), so padding modes and ``output_size`` work as in float.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxquant.nn.quantized.reference.utils import (
    ReferenceQuantizedModule,
    initialization_skipped,
    skip_initialization,
)

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
]


class _ConvNd(ReferenceQuantizedModule):
    """Shared ``from_float`` and forward of the reference convolutions."""

    _IS_REFERENCE = True
    # provided by the float conv class each reference conv also derives from
    bias: torch.Tensor | None
    stride: Any
    padding: Any
    dilation: Any
    kernel_size: Any
    groups: int
    _conv_forward: Any
    _output_padding: Any

    def reset_parameters(self) -> None:
        if not initialization_skipped():  # from_float assigns the float conv's own weight
            super().reset_parameters()  # type: ignore[misc]  # the float conv's, next in the MRO

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.ConvNd._conv_forward handles padding modes; it gets the q/dq'd weight
        return self._conv_forward(x, self.get_weight(), self.bias)

    def _get_name(self) -> str:
        return f"Quantized{type(self).__name__}(Reference)"

    @classmethod
    def _hyper_parameters(cls, conv: Any) -> list[Any]:
        return [
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
        ]

    @classmethod
    def from_float(cls, float_conv: Any, weight_qparams: dict[str, Any]) -> Any:
        """Wrap ``float_conv``'s weight and bias (shared, detached) with ``weight_qparams``."""
        with skip_initialization():
            ref = cls(
                *cls._hyper_parameters(float_conv), device=float_conv.weight.device,
                dtype=float_conv.weight.dtype, weight_qparams=weight_qparams,
            )
        ref.weight = nn.Parameter(float_conv.weight.detach())
        if float_conv.bias is not None:
            ref.bias = nn.Parameter(float_conv.bias.detach())
        return ref


class _ConvTransposeNd(_ConvNd):
    _FUNCTIONAL: Any

    @classmethod
    def _hyper_parameters(cls, conv: Any) -> list[Any]:
        return [
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.output_padding, conv.groups, conv.bias is not None, conv.dilation,
            conv.padding_mode,
        ]

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size,
            num_spatial_dims=len(self.kernel_size), dilation=self.dilation,
        )
        return type(self)._FUNCTIONAL(
            x, self.get_weight(), self.bias, self.stride, self.padding, output_padding,
            self.groups, self.dilation,
        )


def _conv_init(
    float_cls: Any, self: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
    weight_qparams: dict[str, Any] | None,
) -> None:
    float_cls.__init__(self, *args, **kwargs)
    self._init_weight_qparams(weight_qparams, kwargs.get("device"))


class Conv1d(_ConvNd, nn.Conv1d):
    """Reference quantized ``nn.Conv1d``."""

    def __init__(self, *args: Any, weight_qparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        _conv_init(nn.Conv1d, self, args, kwargs, weight_qparams)


class Conv2d(_ConvNd, nn.Conv2d):
    """Reference quantized ``nn.Conv2d``."""

    def __init__(self, *args: Any, weight_qparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        _conv_init(nn.Conv2d, self, args, kwargs, weight_qparams)


class Conv3d(_ConvNd, nn.Conv3d):
    """Reference quantized ``nn.Conv3d``."""

    def __init__(self, *args: Any, weight_qparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        _conv_init(nn.Conv3d, self, args, kwargs, weight_qparams)


class ConvTranspose1d(_ConvTransposeNd, nn.ConvTranspose1d):
    """Reference quantized ``nn.ConvTranspose1d``."""

    _FUNCTIONAL = F.conv_transpose1d

    def __init__(self, *args: Any, weight_qparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        _conv_init(nn.ConvTranspose1d, self, args, kwargs, weight_qparams)


class ConvTranspose2d(_ConvTransposeNd, nn.ConvTranspose2d):
    """Reference quantized ``nn.ConvTranspose2d``."""

    _FUNCTIONAL = F.conv_transpose2d

    def __init__(self, *args: Any, weight_qparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        _conv_init(nn.ConvTranspose2d, self, args, kwargs, weight_qparams)


class ConvTranspose3d(_ConvTransposeNd, nn.ConvTranspose3d):
    """Reference quantized ``nn.ConvTranspose3d``."""

    _FUNCTIONAL = F.conv_transpose3d

    def __init__(self, *args: Any, weight_qparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        _conv_init(nn.ConvTranspose3d, self, args, kwargs, weight_qparams)
