"""QAT ``Conv1d`` / ``Conv2d`` / ``Conv3d``: convolutions whose weight goes through a
fake-quantizer in forward."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.modules.utils import _pair, _single, _triple

from fxquant.nn.intrinsic.modules.fused import _FusedModule
from fxquant.nn.qat.validation import require_float_module, require_qat_qconfig

__all__ = ["Conv1d", "Conv2d", "Conv3d"]

_FloatConv = type[nn.Conv1d] | type[nn.Conv2d] | type[nn.Conv3d]


class _ConvNd(nn.modules.conv._ConvNd):
    """Shared body: build the fake-quantizer, run the conv with the fake-quantized weight,
    convert from and to float modules."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]]
    _FLOAT_CONV_MODULE: ClassVar[_FloatConv]
    _FLOAT_RELU_MODULE: ClassVar[type[nn.Module] | None] = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...],
        padding: Any,
        dilation: tuple[int, ...],
        transposed: bool,
        output_padding: tuple[int, ...],
        groups: int,
        bias: bool,
        padding_mode: Any,
        qconfig: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        nn.modules.conv._ConvNd.__init__(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation,
            transposed, output_padding, groups, bias, padding_mode, **factory_kwargs,
        )  # fmt: skip
        require_qat_qconfig(qconfig, f"qat.{type(self).__name__}")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight(factory_kwargs=factory_kwargs)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Build the QAT module from a float conv (or fused conv + ReLU) with a ``qconfig``;
        it shares the float module's weight and bias."""
        qconfig = require_float_module(mod, cls._FLOAT_MODULE, f"qat.{cls.__name__}")
        conv: Any = mod[0] if isinstance(mod, _FusedModule) else mod
        # the concrete class (Conv1d/2d/3d) takes the keyword signature below
        build: Any = cls
        qat_conv = build(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            qconfig=qconfig,
        )
        qat_conv.weight = conv.weight
        qat_conv.bias = conv.bias
        return qat_conv

    def _float_conv(self) -> nn.modules.conv._ConvNd:
        # the tuples have the conv's dimensionality, which the type system cannot see
        args: list[Any] = [
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, self.groups, self.bias is not None, self.padding_mode,
        ]  # fmt: skip
        conv = self._FLOAT_CONV_MODULE(*args)
        conv.weight = nn.Parameter(self.weight.detach())
        if self.bias is not None:
            conv.bias = nn.Parameter(self.bias.detach())
        return conv

    def to_float(self) -> nn.Module:
        """The float conv with copies of the trained parameters (fused with its ReLU for the
        conv + ReLU QAT modules)."""
        conv = self._float_conv()
        if self._FLOAT_RELU_MODULE is None:
            conv.train(self.training)
            return conv
        fused = self._FLOAT_MODULE(conv, self._FLOAT_RELU_MODULE())
        fused.train(self.training)
        return fused


class Conv1d(_ConvNd, nn.Conv1d):
    """QAT ``nn.Conv1d``: the weight is fake-quantized by ``weight_fake_quant`` in forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.Conv1d
    _FLOAT_CONV_MODULE: ClassVar[_FloatConv] = nn.Conv1d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        qconfig: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, _single(kernel_size), stride=_single(stride),
            padding=padding if isinstance(padding, str) else _single(padding),
            dilation=_single(dilation), transposed=False, output_padding=_single(0),
            groups=groups, bias=bias, padding_mode=padding_mode, qconfig=qconfig,
            device=device, dtype=dtype,
        )  # fmt: skip


class Conv2d(_ConvNd, nn.Conv2d):
    """QAT ``nn.Conv2d``: the weight is fake-quantized by ``weight_fake_quant`` in forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.Conv2d
    _FLOAT_CONV_MODULE: ClassVar[_FloatConv] = nn.Conv2d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        qconfig: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, _pair(kernel_size), stride=_pair(stride),
            padding=padding if isinstance(padding, str) else _pair(padding),
            dilation=_pair(dilation), transposed=False, output_padding=_pair(0),
            groups=groups, bias=bias, padding_mode=padding_mode, qconfig=qconfig,
            device=device, dtype=dtype,
        )  # fmt: skip


class Conv3d(_ConvNd, nn.Conv3d):
    """QAT ``nn.Conv3d``: the weight is fake-quantized by ``weight_fake_quant`` in forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.Conv3d
    _FLOAT_CONV_MODULE: ClassVar[_FloatConv] = nn.Conv3d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        qconfig: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, _triple(kernel_size), stride=_triple(stride),
            padding=padding if isinstance(padding, str) else _triple(padding),
            dilation=_triple(dilation), transposed=False, output_padding=_triple(0),
            groups=groups, bias=bias, padding_mode=padding_mode, qconfig=qconfig,
            device=device, dtype=dtype,
        )  # fmt: skip
