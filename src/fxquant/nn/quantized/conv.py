"""Static quantized convolutions: ``Conv1d``, ``Conv2d``, ``Conv3d``.

Each class is a row of one table: the float module it converts, the prepack function and the
kernel it runs (``torch.ops.quantized.conv{1,2,3}d``). Fused subclasses (``ConvReLU2d``,
``ConvAdd2d`` in :mod:`fxquant.nn.intrinsic.quantized`) only change the kernel.

State dict layout (upstream's): ``weight`` (quantized), ``bias`` (float or ``None``),
``scale``, ``zero_point``.

Depthwise 2-d convolutions (channel multiplier 1) under the ``x86`` engine are packed for
oneDNN (:func:`packs_for_onednn`). torch's ``x86`` engine packs convolutions with more than
100 groups for fbgemm, whose depthwise kernel (a) falls back to a generic loop unless the
padding is ``kernel // 2`` (among other conditions), as for the unpadded stride-2
convolutions after a TF-style ``ZeroPad2d`` in EfficientNet-Lite0: 2-24 ms instead of
0.03-0.2 ms per layer at batch 1 (``benchmarks/fx_depthwise.py``); and (b) multiplies uint8
by int8 in saturating 16-bit pairs, so activations above 127 (the full-range X86 and oneDNN
qconfigs; ``reduce_range`` exists for this) come out up to tens of steps wrong. oneDNN
computes the exact integers at every shape and is as fast or faster; it rounds exact ties to
even where fbgemm rounds up, so a value can differ from upstream's module by one step.
``quantized::conv2d`` dispatches on the
packed object, so the weight runs on oneDNN whatever the engine at call time; every pack
site (construction, ``set_weight_bias``, ``load_state_dict``, deep copy and pickling via
``__getstate__``/``__setstate__``) goes through the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair, _single, _triple

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.engine import HAS_ONEDNN, onednn_engine
from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.utils import (
    FromFloatError,
    WeightedQuantizedModule,
    fold_bn_into_weights,
    output_qparams,
    quantize_weight,
    require_type,
    unwrap_fused,
)

__all__ = ["Conv1d", "Conv2d", "Conv3d", "packs_for_onednn", "prepack_conv"]

_SUPPORTED_PADDING_MODES = {"zeros", "reflect"}
# set while _new_like builds a module whose real weight is packed right after: packing the
# placeholder zero weight first is a second full prepack per conv at convert
_PLACEHOLDER_PACKING_SKIPPED: ContextVar[bool] = ContextVar("fxquant_skip_placeholder_pack", default=False)
_SHAPE_NAMES = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def _weight_is_symmetric(weight: torch.Tensor) -> bool:
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return bool((weight.q_per_channel_zero_points() == 0).all())
    return int(weight.q_zero_point()) == 0


def packs_for_onednn(
    weight: torch.Tensor, conv: tuple[Sequence[int], Sequence[int], Sequence[int], int], ndim: int
) -> bool:
    """Whether a quantized conv weight is packed for oneDNN instead of the current engine
    (``conv`` is ``(stride, padding, dilation, groups)``): under the ``x86`` engine, for a 2-d
    depthwise convolution (``groups > 1``, one input channel per group) with a symmetric
    ``torch.qint8`` weight and a channel multiplier of 1 (with 2, fbgemm is 8x faster), when
    oneDNN is available. See the module docstring for why."""
    groups = conv[3]
    return (
        HAS_ONEDNN
        and ndim == 2
        and groups > 1
        and weight.dim() == 4
        and weight.size(1) == 1
        and weight.dtype == torch.qint8
        and torch.backends.quantized.engine == "x86"
        and _weight_is_symmetric(weight)
        and weight.size(0) == groups  # channel multiplier 1 (with 2, fbgemm is 8x faster)
    )


def prepack_conv(
    prepack: Any,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv: tuple[Sequence[int], Sequence[int], Sequence[int], int],
    ndim: int,
) -> Any:
    """``prepack(weight, bias, stride, padding, dilation, groups)`` for the current engine, or
    for oneDNN when :func:`packs_for_onednn` says so (the engine is restored after)."""
    stride, padding, dilation, groups = conv
    args = (weight, bias, list(stride), list(padding), list(dilation), groups)
    if not packs_for_onednn(weight, conv, ndim):
        return prepack(*args)
    with onednn_engine():
        return prepack(*args)


def reverse_repeat_padding(padding: Sequence[int]) -> list[int]:
    """``(p0, p1)`` -> ``[p1, p1, p0, p0]``: ``F.pad``'s last-dim-first order."""
    out: list[int] = []
    for p in reversed(padding):
        out += [p, p]
    return out


def resolve_padding(
    padding: str | Sequence[int], kernel_size: Sequence[int], dilation: Sequence[int],
    ntuple: Any,
) -> tuple[int, ...]:
    """Integer padding for a quantized kernel; ``"valid"``/``"same"`` become numbers.

    ``"same"`` (stride 1) needs ``dilation * (kernel - 1)`` padding in total per dim; the
    quantized kernels pad symmetrically, so that total must be even.
    """
    if not isinstance(padding, str):
        return tuple(ntuple(padding))
    if padding == "valid":
        return (0,) * len(kernel_size)
    totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
    if padding != "same" or any(t % 2 for t in totals):
        raise ValueError(
            f"quantized convolution supports padding='same' only when it is symmetric "
            f"(odd kernel sizes), got padding={padding!r} with kernel_size={tuple(kernel_size)}; "
            f"pass explicit integer padding instead"
        )
    return tuple(t // 2 for t in totals)


class _ConvNd(WeightedQuantizedModule):
    """Shared body of the quantized convolutions; subclasses fill in the class table."""

    _NDIM: ClassVar[int]
    _NTUPLE: ClassVar[Any]
    _FLOAT_MODULE: ClassVar[Any]
    _PREPACK: ClassVar[Any]
    _OP: ClassVar[Any]
    _TRANSPOSED: ClassVar[bool] = False

    def _init(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        output_padding: tuple[int, ...],
        groups: int,
        bias: bool,
        padding_mode: str = "zeros",
        device: Any = None,
    ) -> None:
        super().__init__()
        if out_channels <= 0:
            raise ValueError(f"out_channels must be greater than 0, got {out_channels}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        if padding_mode not in _SUPPORTED_PADDING_MODES:
            raise ValueError(
                f"padding_mode={padding_mode!r} is not supported by quantized convolution; "
                f"use one of {sorted(_SUPPORTED_PADDING_MODES)}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.transposed = self._TRANSPOSED
        self.output_padding = output_padding
        self.groups = groups
        self.padding_mode = padding_mode
        if self.transposed:
            weight_shape = [in_channels, out_channels // groups]
        else:
            weight_shape = [out_channels, in_channels // groups]
        if not _PLACEHOLDER_PACKING_SKIPPED.get():
            qweight = torch._empty_affine_quantized(
                weight_shape + list(kernel_size), scale=1, zero_point=0, dtype=torch.qint8,
                device=device,
            )
            bias_float = torch.zeros(out_channels, dtype=torch.float, device=device) if bias else None
            self.set_weight_bias(qweight, bias_float)
        self.scale = 1.0
        self.zero_point = 0

    # ---- packed weights -----------------------------------------------------------------

    def _kernel_padding(self) -> tuple[int, ...]:
        # non-zero padding modes pad the input explicitly, so the kernel pads nothing
        return self.padding if self.padding_mode == "zeros" else (0,) * self._NDIM

    def set_weight_bias(self, w: torch.Tensor, b: torch.Tensor | None) -> None:
        """Pack a quantized weight and float bias for the current engine (depthwise 2-d
        under ``x86``: for oneDNN, see :func:`packs_for_onednn`)."""
        self._packed_params = prepack_conv(
            type(self)._PREPACK, w, b, (self.stride, self._kernel_padding(), self.dilation, self.groups),
            self._NDIM,
        )

    def _weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._packed_params.unpack()

    def weight(self) -> torch.Tensor:
        """The quantized weight (unpacked)."""
        return self._weight_bias()[0]

    def bias(self) -> torch.Tensor | None:
        """The float bias, or ``None``."""
        return self._weight_bias()[1]

    # ---- forward ------------------------------------------------------------------------

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        check_quantized_input(self, x)
        if x.dim() != self._NDIM + 2:
            raise ValueError(
                f"{self._get_name()} expects input of shape {_SHAPE_NAMES[self._NDIM]}, "
                f"got shape {tuple(x.shape)}"
            )
        if self.padding_mode != "zeros":
            x = F.pad(x, reverse_repeat_padding(self.padding), mode=self.padding_mode)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare_input(x)
        return type(self)._OP(x, self._packed_params, self.scale, self.zero_point)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, scale={self.scale}, zero_point={self.zero_point}"
        )
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias() is None:
            s += ", bias=False"
        return s

    # ---- serialization ------------------------------------------------------------------

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        w, b = self._weight_bias()
        destination[prefix + "weight"] = w
        destination[prefix + "bias"] = b
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
        self.set_weight_bias(state_dict.pop(prefix + "weight"), state_dict.pop(prefix + "bias"))
        self.scale = float(state_dict.pop(prefix + "scale"))
        self.zero_point = int(state_dict.pop(prefix + "zero_point"))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    def __getstate__(self) -> dict[str, Any]:
        # the packed weight's own pickling repacks for the engine at load time, bypassing
        # packs_for_onednn: carry the unpacked weight and bias and repack in __setstate__
        state = self.__dict__.copy()
        state["_packed_params"] = self._weight_bias()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weight, bias = state.pop("_packed_params")
        super().__setstate__(state)
        self.set_weight_bias(weight, bias)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def _new_like(cls, conv: Any) -> Any:
        """An empty quantized conv with ``conv``'s hyper-parameters."""
        padding = resolve_padding(conv.padding, conv.kernel_size, conv.dilation, cls._NTUPLE)
        token = _PLACEHOLDER_PACKING_SKIPPED.set(True)  # every caller packs the real weight next
        try:
            return cls(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
            )
        finally:
            _PLACEHOLDER_PACKING_SKIPPED.reset(token)

    @classmethod
    def get_qconv(
        cls, mod: Any, activation_post_process: Any, weight_post_process: Any = None
    ) -> Any:
        """Quantize ``mod``'s weight with ``weight_post_process`` and build the module;
        output qparams come from ``activation_post_process`` unless it is float/absent."""
        if weight_post_process is None:
            weight_post_process = mod.qconfig.weight()
        weight_post_process(mod.weight)
        if weight_post_process.dtype != torch.qint8:
            raise FromFloatError(
                f"{cls.__name__}.from_float: the weight observer must produce torch.qint8, "
                f"got {weight_post_process.dtype}; use a qint8 weight observer in the qconfig"
            )
        qweight = quantize_weight(mod.weight.float(), weight_post_process)
        qconv = cls._new_like(mod)
        qconv.set_weight_bias(qweight, mod.bias)
        if activation_post_process is not None and activation_post_process.dtype != torch.float:
            qconv.scale, qconv.zero_point = output_qparams(activation_post_process)
        return qconv

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize an observed float conv, a QAT conv (``ConvBn*`` folded first) or a fused
        float conv of this class's ``_FLOAT_MODULE`` type."""
        if hasattr(mod, "weight_fake_quant"):
            fold_bn_into_weights(mod)
            if not hasattr(mod, "activation_post_process"):
                raise FromFloatError(
                    f"{cls.__name__}.from_float: the QAT module {type(mod).__name__} has no "
                    f"activation_post_process; prepare it with prepare_qat() first"
                )
            return cls.get_qconv(mod, mod.activation_post_process, mod.weight_fake_quant)
        require_type(mod, cls._FLOAT_MODULE, cls.__name__)
        if getattr(mod, "qconfig", None) is None:
            raise FromFloatError(
                f"{cls.__name__}.from_float: {type(mod).__name__} has no qconfig; set "
                f"module.qconfig (or use prepare/convert) before converting"
            )
        activation_post_process = getattr(mod, "activation_post_process", None)
        conv = unwrap_fused(mod)
        qconfig = getattr(conv, "qconfig", None) or mod.qconfig
        return cls.get_qconv(conv, activation_post_process, qconfig.weight())

    @classmethod
    def from_reference(cls, ref_qconv: Any, output_scale: float, output_zero_point: int) -> Any:
        """Build from a reference conv (float weight + weight qparams) and output qparams;
        fused reference modules pass their first child."""
        ref_conv = unwrap_fused(ref_qconv)
        qconv = cls._new_like(ref_conv)
        qconv.set_weight_bias(ref_conv.get_quantized_weight(), ref_conv.bias)
        qconv.scale = float(output_scale)
        qconv.zero_point = int(output_zero_point)
        return qconv


class Conv1d(_ConvNd):
    """Quantized ``nn.Conv1d`` (``torch.ops.quantized.conv1d``); quint8 input and output."""

    _NDIM = 1
    _NTUPLE = _single
    _FLOAT_MODULE: ClassVar[Any] = nn.Conv1d
    _PREPACK = torch.ops.quantized.conv1d_prepack
    _OP = packed_kernel(torch.ops.quantized.conv1d.default)

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        kernel, dil = _single(kernel_size), _single(dilation)
        super()._init(
            in_channels, out_channels, kernel, _single(stride),
            resolve_padding(padding, kernel, dil, _single), dil, _single(0), groups, bias,
            padding_mode, device,
        )

    def _get_name(self) -> str:
        return "QuantizedConv1d"

    def _weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        # 1-d weights are packed as 2-d; the dedicated unpack restores the 3-d shape
        return torch.ops.quantized.conv1d_unpack(self._packed_params)


class Conv2d(_ConvNd):
    """Quantized ``nn.Conv2d`` (``torch.ops.quantized.conv2d``); quint8 input and output.

    >>> m = Conv2d(3, 8, 3, padding=1)
    >>> x = torch.quantize_per_tensor(torch.randn(1, 3, 8, 8), 0.05, 128, torch.quint8)
    >>> m(x).shape
    torch.Size([1, 8, 8, 8])
    """

    _NDIM = 2
    _NTUPLE = _pair
    _FLOAT_MODULE: ClassVar[Any] = nn.Conv2d
    _PREPACK = torch.ops.quantized.conv2d_prepack
    _OP = packed_kernel(torch.ops.quantized.conv2d.new)

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        kernel, dil = _pair(kernel_size), _pair(dilation)
        super()._init(
            in_channels, out_channels, kernel, _pair(stride),
            resolve_padding(padding, kernel, dil, _pair), dil, _pair(0), groups, bias,
            padding_mode, device,
        )

    def _get_name(self) -> str:
        return "QuantizedConv2d"


class Conv3d(_ConvNd):
    """Quantized ``nn.Conv3d`` (``torch.ops.quantized.conv3d``); quint8 input and output."""

    _NDIM = 3
    _NTUPLE = _triple
    _FLOAT_MODULE: ClassVar[Any] = nn.Conv3d
    _PREPACK = torch.ops.quantized.conv3d_prepack
    _OP = packed_kernel(torch.ops.quantized.conv3d.new)

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
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if padding_mode == "reflect":
            raise ValueError("quantized Conv3d does not support padding_mode='reflect'")
        kernel, dil = _triple(kernel_size), _triple(dilation)
        super()._init(
            in_channels, out_channels, kernel, _triple(stride),
            resolve_padding(padding, kernel, dil, _triple), dil, _triple(0), groups, bias,
            padding_mode, device,
        )

    def _get_name(self) -> str:
        return "QuantizedConv3d"
