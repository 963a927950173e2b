"""QAT conv + batch norm (+ ReLU): ``ConvBn1d/2d/3d`` and ``ConvBnReLU1d/2d/3d``.

During QAT the batch norm is simulated as it will be folded into the conv of the quantized
model: the weight is scaled by the BN factor *before* fake-quantization, so training sees the
rounding of the folded weight, and the conv output is scaled back so that the BN still
normalises with batch statistics (Krishnamoorthi 2018, arXiv:1806.08342, section 3.2)::

    gamma, var, eps = bn.weight, bn.running_var, bn.eps
    s     = gamma / sqrt(var + eps)                    # one factor per output channel
    y     = conv(x, fake_quant(w * s), bias=0) / s     # == conv(x, w) up to the rounding
    out   = bn(y + b)                                  # b: the conv's own bias

``freeze_bn_stats`` stops updating the running statistics (and makes the BN use them);
``update_bn_stats`` resumes. ``to_float`` returns the conv with the BN folded in.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init
from torch.nn.modules.utils import _pair, _single, _triple
from torch.nn.utils.fusion import fuse_conv_bn_weights

import fxquant.nn.intrinsic.modules.fused as nni
from fxquant.nn.qat.validation import require_float_module, require_qat_qconfig

__all__ = [
    "ConvBn1d",
    "ConvBn2d",
    "ConvBn3d",
    "ConvBnReLU1d",
    "ConvBnReLU2d",
    "ConvBnReLU3d",
    "freeze_bn_stats",
    "update_bn_stats",
]

_FloatConv = type[nn.Conv1d] | type[nn.Conv2d] | type[nn.Conv3d]
_BN_BY_DIM: dict[int, type[nn.modules.batchnorm._BatchNorm]] = {
    1: nn.BatchNorm1d,
    2: nn.BatchNorm2d,
    3: nn.BatchNorm3d,
}
# version 1 kept the BN parameters on the module itself; version 2 has a ``bn`` child
_V1_NAMES = {
    "bn.weight": "gamma",
    "bn.bias": "beta",
    "bn.running_mean": "running_mean",
    "bn.running_var": "running_var",
    "bn.num_batches_tracked": "num_batches_tracked",
}


def _channel_shapes(weight: torch.Tensor) -> tuple[list[int], list[int]]:
    """Broadcast shapes of a per-output-channel vector against the weight ``(C, 1, ...)``
    and against the conv output ``(1, C, 1, ...)``."""
    weight_shape = [1] * weight.dim()
    weight_shape[0] = -1
    output_shape = [1] * weight.dim()
    output_shape[1] = -1
    return weight_shape, output_shape


class _ConvBnNd(nn.modules.conv._ConvNd, nni._FusedModule):
    _version = 2
    _FLOAT_MODULE: ClassVar[type[nn.Module]]
    _FLOAT_CONV_MODULE: ClassVar[_FloatConv]
    _FLOAT_BN_MODULE: ClassVar[type[nn.Module]]
    _FLOAT_RELU_MODULE: ClassVar[type[nn.Module] | None] = None
    _FUSED_FLOAT_MODULE: ClassVar[type[nn.Module] | None] = None

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
        bias: bool | None,
        padding_mode: Any,
        eps: float = 1e-05,
        momentum: float | None = 0.1,
        freeze_bn: bool = False,
        qconfig: Any = None,
        dim: int = 2,
    ) -> None:
        nn.modules.conv._ConvNd.__init__(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation,
            transposed, output_padding, groups, False, padding_mode,
        )  # fmt: skip
        require_qat_qconfig(qconfig, f"qat.{type(self).__name__}")
        self.qconfig = qconfig
        self.freeze_bn = freeze_bn if self.training else True
        self.bn = _BN_BY_DIM[dim](out_channels, eps, momentum, True, True)
        self.weight_fake_quant = qconfig.weight()
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_bn_parameters()
        # after reset_bn_parameters, which touches the same BN state
        if self.training and not freeze_bn:
            self.update_bn_stats()
        else:
            self.freeze_bn_stats()
        self._enable_slow_path_for_better_numerical_stability = False

    def reset_running_stats(self) -> None:
        self.bn.reset_running_stats()

    def reset_bn_parameters(self) -> None:
        """Fresh BN statistics, ``gamma ~ U(0, 1)``, ``beta = 0``, and the conv bias
        re-initialised as ``nn.Conv`` does."""
        self.bn.reset_running_stats()
        init.uniform_(self.bn.weight)
        init.zeros_(self.bn.bias)
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def update_bn_stats(self) -> _ConvBnNd:
        """Let the batch norm update its running statistics (training mode)."""
        self.freeze_bn = False
        self.bn.training = True
        return self

    def freeze_bn_stats(self) -> _ConvBnNd:
        """Freeze the running statistics; the batch norm then normalises with them."""
        self.freeze_bn = True
        self.bn.training = False
        return self

    def _bn_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(running_std, gamma / running_std)``."""
        if self.bn.running_var is None:
            raise RuntimeError(f"{type(self).__name__}: its batch norm has no running_var")
        running_std = torch.sqrt(self.bn.running_var + self.bn.eps)
        return running_std, self.bn.weight / running_std

    def _forward(self, input: torch.Tensor) -> torch.Tensor:
        if self._enable_slow_path_for_better_numerical_stability:
            return self._forward_slow(input)
        return self._forward_approximate(input)

    def _forward_approximate(self, input: torch.Tensor) -> torch.Tensor:
        """One conv with the folded, fake-quantized weight, scaled back, then the BN."""
        _, scale_factor = self._bn_scale()
        weight_shape, output_shape = _channel_shapes(self.weight)
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape(weight_shape))
        # the conv's own bias is added after undoing the scaling
        if self.bias is not None:
            zero_bias = torch.zeros_like(self.bias, dtype=input.dtype)
        else:
            zero_bias = torch.zeros(
                self.out_channels, device=scaled_weight.device, dtype=input.dtype
            )
        conv = self._conv_forward(input, scaled_weight, zero_bias)
        conv_orig = conv / scale_factor.reshape(output_shape)
        if self.bias is not None:
            conv_orig = conv_orig + self.bias.reshape(output_shape)
        return self.bn(conv_orig)

    def _forward_slow(self, input: torch.Tensor) -> torch.Tensor:
        """Two convs, exact also when ``gamma == 0`` (arXiv:1806.08342, appendix).

        With ``Y0 = conv(X, W)`` (no bias), ``r = gamma``::

            train:     Z = conv(X, fq(r W / running_std)) * running_std / std(Y0)
                           - r * mean(Y0) / std(Y0) + beta
            inference: Z = conv(X, fq(r W / running_std)) - r (running_mean - b) / running_std
                           + beta
        """
        if self.bn.running_mean is None:
            raise RuntimeError(f"{type(self).__name__}: its batch norm has no running_mean")
        weight_shape, output_shape = _channel_shapes(self.weight)
        zero_bias = torch.zeros(self.out_channels, device=self.weight.device, dtype=input.dtype)
        if self.bn.training:
            conv_out = self._conv_forward(input, self.weight, zero_bias)
            with torch.no_grad():  # the BN only updates its running statistics here
                self.bn(
                    conv_out if self.bias is None else conv_out + self.bias.reshape(output_shape)
                )
        running_std, scale_factor = self._bn_scale()
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape(weight_shape))
        conv_bn = self._conv_forward(input, scaled_weight, zero_bias)
        if self.bn.training:
            avg_dims = [0, *range(2, self.weight.dim())]
            batch_mean = conv_out.mean(avg_dims)
            batch_var = torch.square(conv_out - batch_mean.reshape(output_shape)).mean(avg_dims)
            batch_std = torch.sqrt(batch_var + self.bn.eps)
            conv_bn *= (running_std / batch_std).reshape(output_shape)
            fused_mean, fused_std = batch_mean, batch_std
        else:
            fused_mean = self.bn.running_mean - (self.bias if self.bias is not None else 0)
            fused_std = running_std
        fused_bias = self.bn.bias - self.bn.weight * fused_mean / fused_std
        conv_bn += fused_bias.reshape(output_shape)
        if self.bias is not None:
            # keeps the conv bias in the autograd graph (DDP requires every parameter used)
            conv_bn += (self.bias - self.bias).reshape(output_shape)
        return conv_bn

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._forward(input)

    def train(self, mode: bool = True) -> _ConvBnNd:
        """Set training mode, but leave a frozen batch norm in eval mode."""
        self.training = mode
        if not self.freeze_bn:
            for module in self.children():
                module.train(mode)
        return self

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
        version = local_metadata.get("version", None)
        if version is None or version == 1:
            for v2_name, v1_name in _V1_NAMES.items():
                if prefix + v1_name in state_dict:
                    state_dict[prefix + v2_name] = state_dict.pop(prefix + v1_name)
                elif prefix + v2_name not in state_dict and strict:
                    missing_keys.append(prefix + v2_name)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Build the QAT module from a fused float ``ConvBn*`` / ``ConvBnReLU*`` with a
        ``qconfig``; it shares the float conv's and BN's parameters and statistics."""
        qconfig = require_float_module(mod, cls._FLOAT_MODULE, f"qat.{cls.__name__}")
        conv: Any = mod[0]  # type: ignore[index]  # a fused Sequential
        bn: Any = mod[1]  # type: ignore[index]
        # the concrete classes (ConvBn1d/2d/3d...) take this positional signature
        build: Any = cls
        qat_convbn = build(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            bn.eps,
            bn.momentum,
            False,
            qconfig,
        )
        qat_convbn.weight = conv.weight
        qat_convbn.bias = conv.bias
        qat_convbn.bn.weight = bn.weight
        qat_convbn.bn.bias = bn.bias
        qat_convbn.bn.running_mean = bn.running_mean
        qat_convbn.bn.running_var = bn.running_var
        qat_convbn.bn.num_batches_tracked = bn.num_batches_tracked
        return qat_convbn

    def to_float(self) -> nn.Module:
        """The float conv with the batch norm folded into its weight and bias (followed by a
        ReLU, as ``ConvReLU*d``, for the ``ConvBnReLU`` modules)."""
        # the tuples have the conv's dimensionality, which the type system cannot see
        args: list[Any] = [
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, self.groups, self.bias is not None, self.padding_mode,
        ]  # fmt: skip
        conv = self._FLOAT_CONV_MODULE(*args)
        conv.weight = nn.Parameter(self.weight.detach())
        if self.bias is not None:
            conv.bias = nn.Parameter(self.bias.detach())
        if self.bn.running_var is None or self.bn.running_mean is None:
            raise RuntimeError(f"{type(self).__name__}: its batch norm has no running statistics")
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, self.bn.running_mean, self.bn.running_var, self.bn.eps,
            self.bn.weight, self.bn.bias,
        )  # fmt: skip
        if self._FLOAT_RELU_MODULE is None or self._FUSED_FLOAT_MODULE is None:
            conv.train(self.training)
            return conv
        fused = self._FUSED_FLOAT_MODULE(conv, self._FLOAT_RELU_MODULE())
        fused.train(self.training)
        return fused


class ConvBn1d(_ConvBnNd, nn.Conv1d):
    """QAT ``Conv1d`` + ``BatchNorm1d`` with the BN folded into the fake-quantized weight."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBn1d
    _FLOAT_CONV_MODULE: ClassVar[_FloatConv] = nn.Conv1d
    _FLOAT_BN_MODULE: ClassVar[type[nn.Module]] = nn.BatchNorm1d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool | None = None,
        padding_mode: str = "zeros",
        eps: float = 1e-05,
        momentum: float | None = 0.1,
        freeze_bn: bool = False,
        qconfig: Any = None,
    ) -> None:
        _ConvBnNd.__init__(
            self, in_channels, out_channels, _single(kernel_size), _single(stride),
            _single(padding), _single(dilation), False, _single(0), groups, bias, padding_mode,
            eps, momentum, freeze_bn, qconfig, dim=1,
        )  # fmt: skip


class ConvBnReLU1d(ConvBn1d):
    """QAT ``Conv1d`` + ``BatchNorm1d`` + ``ReLU``."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBnReLU1d
    _FLOAT_RELU_MODULE: ClassVar[type[nn.Module] | None] = nn.ReLU
    _FUSED_FLOAT_MODULE: ClassVar[type[nn.Module] | None] = nni.ConvReLU1d

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(self._forward(input))


class ConvBn2d(_ConvBnNd, nn.Conv2d):
    """QAT ``Conv2d`` + ``BatchNorm2d`` with the BN folded into the fake-quantized weight."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBn2d
    _FLOAT_CONV_MODULE: ClassVar[_FloatConv] = nn.Conv2d
    _FLOAT_BN_MODULE: ClassVar[type[nn.Module]] = nn.BatchNorm2d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool | None = None,
        padding_mode: str = "zeros",
        eps: float = 1e-05,
        momentum: float | None = 0.1,
        freeze_bn: bool = False,
        qconfig: Any = None,
    ) -> None:
        _ConvBnNd.__init__(
            self, in_channels, out_channels, _pair(kernel_size), _pair(stride),
            _pair(padding), _pair(dilation), False, _pair(0), groups, bias, padding_mode,
            eps, momentum, freeze_bn, qconfig, dim=2,
        )  # fmt: skip


class ConvBnReLU2d(ConvBn2d):
    """QAT ``Conv2d`` + ``BatchNorm2d`` + ``ReLU``."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBnReLU2d
    _FLOAT_RELU_MODULE: ClassVar[type[nn.Module] | None] = nn.ReLU
    _FUSED_FLOAT_MODULE: ClassVar[type[nn.Module] | None] = nni.ConvReLU2d

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(self._forward(input))


class ConvBn3d(_ConvBnNd, nn.Conv3d):
    """QAT ``Conv3d`` + ``BatchNorm3d`` with the BN folded into the fake-quantized weight."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBn3d
    _FLOAT_CONV_MODULE: ClassVar[_FloatConv] = nn.Conv3d
    _FLOAT_BN_MODULE: ClassVar[type[nn.Module]] = nn.BatchNorm3d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool | None = None,
        padding_mode: str = "zeros",
        eps: float = 1e-05,
        momentum: float | None = 0.1,
        freeze_bn: bool = False,
        qconfig: Any = None,
    ) -> None:
        _ConvBnNd.__init__(
            self, in_channels, out_channels, _triple(kernel_size), _triple(stride),
            _triple(padding), _triple(dilation), False, _triple(0), groups, bias, padding_mode,
            eps, momentum, freeze_bn, qconfig, dim=3,
        )  # fmt: skip


class ConvBnReLU3d(ConvBn3d):
    """QAT ``Conv3d`` + ``BatchNorm3d`` + ``ReLU``."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBnReLU3d
    _FLOAT_RELU_MODULE: ClassVar[type[nn.Module] | None] = nn.ReLU
    _FUSED_FLOAT_MODULE: ClassVar[type[nn.Module] | None] = nni.ConvReLU3d

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(self._forward(input))


# The modules that ``freeze_bn_stats`` / ``update_bn_stats`` act on (as upstream: the
# conv-BN family; exact types, so that user subclasses opt in explicitly).
_CONV_BN_TYPES: frozenset[type[nn.Module]] = frozenset(
    {ConvBn1d, ConvBn2d, ConvBn3d, ConvBnReLU1d, ConvBnReLU2d, ConvBnReLU3d}
)


def update_bn_stats(mod: nn.Module) -> None:
    """Resume updating BN statistics in a QAT conv-BN module (for ``model.apply``)."""
    if type(mod) in _CONV_BN_TYPES:
        mod.update_bn_stats()  # type: ignore[operator]


def freeze_bn_stats(mod: nn.Module) -> None:
    """Freeze BN statistics in a QAT conv-BN module (for ``model.apply``), typically a few
    epochs before the end of QAT."""
    if type(mod) in _CONV_BN_TYPES:
        mod.freeze_bn_stats()  # type: ignore[operator]
