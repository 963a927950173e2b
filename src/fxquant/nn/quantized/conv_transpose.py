"""Static quantized transposed convolutions: ``ConvTranspose1d``, ``ConvTranspose2d``,
``ConvTranspose3d`` (``torch.ops.quantized.conv_transpose{1,2,3}d``).

Kernel availability depends on the engine (upstream's notes: 1-d was written for qnnpack,
3-d for fbgemm; the x86 engine on recent builds runs 1-d and 2-d); a missing kernel raises
torch's error from the prepack call. Only ``padding_mode="zeros"`` exists.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.modules.utils import _pair, _single, _triple

from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.conv import _ConvNd
from fxquant.nn.quantized.utils import FromFloatError, require_type

__all__ = ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]


class _ConvTransposeNd(_ConvNd):
    _TRANSPOSED = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if padding_mode != "zeros":
            raise ValueError(
                f"{type(self).__name__} supports only padding_mode='zeros', got {padding_mode!r}"
            )
        nt = type(self)._NTUPLE
        super()._init(
            in_channels, out_channels, nt(kernel_size), nt(stride), nt(padding), nt(dilation),
            nt(output_padding), groups, bias, padding_mode, device,
        )

    def set_weight_bias(self, w: torch.Tensor, b: torch.Tensor | None) -> None:
        """Pack a quantized weight (``in, out/groups, *kernel``) and float bias."""
        self._packed_params = type(self)._PREPACK(
            w, b, self.stride, self.padding, self.output_padding, self.dilation, self.groups
        )

    def _input_padding(
        self, kernel_size: list[int], dilation: list[int], padding: list[int]
    ) -> list[int]:
        """Padding of the equivalent direct convolution: ``d * (k - 1) - p`` per dim."""
        return [d * (k - 1) - p for k, d, p in zip(kernel_size, dilation, padding)]

    @classmethod
    def _new_like(cls, conv: Any) -> Any:
        return cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.output_padding, conv.groups, conv.bias is not None, conv.dilation,
            conv.padding_mode,
        )

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize an observed float transposed conv (weight observer from ``mod.qconfig``)."""
        require_type(mod, cls._FLOAT_MODULE, cls.__name__)
        if getattr(mod, "qconfig", None) is None:
            raise FromFloatError(
                f"{cls.__name__}.from_float: {type(mod).__name__} has no qconfig; set "
                f"module.qconfig (or use prepare/convert) before converting"
            )
        weight_post_process = mod.qconfig.weight()
        if weight_post_process.qscheme not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise FromFloatError(
                f"{cls.__name__}.from_float: the quantized transposed-conv kernels take "
                f"per-tensor weights only, but the qconfig's weight observer is "
                f"{weight_post_process.qscheme}; use a per-tensor weight observer for "
                f"{type(mod).__name__} (the default qconfig mappings do)"
            )
        return cls.get_qconv(mod, getattr(mod, "activation_post_process", None), weight_post_process)


class ConvTranspose1d(_ConvTransposeNd):
    """Quantized ``nn.ConvTranspose1d``."""

    _NDIM = 1
    _NTUPLE = _single
    _FLOAT_MODULE: ClassVar[Any] = nn.ConvTranspose1d
    _PREPACK = torch.ops.quantized.conv_transpose1d_prepack
    _OP = packed_kernel(torch.ops.quantized.conv_transpose1d.default)

    def _get_name(self) -> str:
        return "QuantizedConvTranspose1d"

    def _weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.ops.quantized.conv_transpose1d_unpack(self._packed_params)


class ConvTranspose2d(_ConvTransposeNd):
    """Quantized ``nn.ConvTranspose2d``."""

    _NDIM = 2
    _NTUPLE = _pair
    _FLOAT_MODULE: ClassVar[Any] = nn.ConvTranspose2d
    _PREPACK = torch.ops.quantized.conv_transpose2d_prepack
    _OP = packed_kernel(torch.ops.quantized.conv_transpose2d.default)

    def _get_name(self) -> str:
        return "QuantizedConvTranspose2d"


class ConvTranspose3d(_ConvTransposeNd):
    """Quantized ``nn.ConvTranspose3d``."""

    _NDIM = 3
    _NTUPLE = _triple
    _FLOAT_MODULE: ClassVar[Any] = nn.ConvTranspose3d
    _PREPACK = torch.ops.quantized.conv_transpose3d_prepack
    _OP = packed_kernel(torch.ops.quantized.conv_transpose3d.default)

    def _get_name(self) -> str:
        return "QuantizedConvTranspose3d"
