"""QAT ``LinearBn1d``: linear + batch norm, the BN folded into the fake-quantized weight.

As for the conv-BN modules (:mod:`.conv_fused`), the weight is scaled by the BN factor of the
running statistics before fake-quantization and the output scaled back before the BN::

    s   = gamma / sqrt(running_var + eps)
    out = bn(linear(x, fake_quant(w * s), 0) / s + b)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init
from torch.nn.utils.fusion import fuse_linear_bn_weights

import fxquant.nn.intrinsic.modules.fused as nni
from fxquant.nn.qat.validation import require_float_module, require_qat_qconfig

__all__ = ["LinearBn1d"]


class LinearBn1d(nn.Linear, nni._FusedModule):
    """QAT ``Linear`` + ``BatchNorm1d``.

    Attributes:
        bn: the batch norm (its running statistics scale the weight).
        freeze_bn: whether the BN statistics are frozen (see :meth:`freeze_bn_stats`).
        weight_fake_quant: ``qconfig.weight()``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        eps: float = 1e-05,
        momentum: float | None = 0.1,
        freeze_bn: bool = False,
        qconfig: Any = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias)
        require_qat_qconfig(qconfig, f"qat.{type(self).__name__}")
        self.qconfig = qconfig
        self.freeze_bn = freeze_bn if self.training else True
        self.bn = nn.BatchNorm1d(out_features, eps, momentum, True, True)
        self.weight_fake_quant = qconfig.weight()
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_bn_parameters()
        if self.training and not freeze_bn:
            self.update_bn_stats()
        else:
            self.freeze_bn_stats()

    def reset_running_stats(self) -> None:
        self.bn.reset_running_stats()

    def reset_bn_parameters(self) -> None:
        """Fresh BN statistics, ``gamma ~ U(0, 1)``, ``beta = 0``."""
        self.bn.reset_running_stats()
        init.uniform_(self.bn.weight)
        init.zeros_(self.bn.bias)

    def update_bn_stats(self) -> LinearBn1d:
        """Let the batch norm update its running statistics."""
        self.freeze_bn = False
        self.bn.training = True
        return self

    def freeze_bn_stats(self) -> LinearBn1d:
        """Freeze the running statistics."""
        self.freeze_bn = True
        self.bn.training = False
        return self

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.bn.running_var is None:
            raise RuntimeError(f"{type(self).__name__}: its batch norm has no running_var")
        running_std = torch.sqrt(self.bn.running_var + self.bn.eps)
        scale_factor = self.bn.weight / running_std
        weight_shape = [-1, 1]
        output_shape = [1, -1]
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape(weight_shape))
        if self.bias is not None:
            zero_bias = torch.zeros_like(self.bias)
        else:
            zero_bias = torch.zeros(self.out_features, device=scaled_weight.device)
        linear_out = F.linear(input, scaled_weight, zero_bias)
        linear_out_orig = linear_out / scale_factor.reshape(output_shape)
        if self.bias is not None:
            linear_out_orig = linear_out_orig + self.bias.reshape(output_shape)
        return self.bn(linear_out_orig)

    def train(self, mode: bool = True) -> LinearBn1d:
        """Set training mode, but leave a frozen batch norm in eval mode."""
        self.training = mode
        if not self.freeze_bn:
            for module in self.children():
                module.train(mode)
        return self

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> LinearBn1d:
        """Build the QAT module from a fused float ``LinearBn1d`` with a ``qconfig``; it
        shares the float linear's and BN's parameters and statistics."""
        qconfig = require_float_module(mod, nni.LinearBn1d, f"qat.{cls.__name__}")
        linear: Any = mod[0]  # type: ignore[index]  # a fused Sequential
        bn: Any = mod[1]  # type: ignore[index]
        qat = cls(
            linear.in_features, linear.out_features, linear.bias is not None, bn.eps,
            bn.momentum, False, qconfig,
        )  # fmt: skip
        qat.weight = linear.weight
        qat.bias = linear.bias
        qat.bn.weight = bn.weight
        qat.bn.bias = bn.bias
        qat.bn.running_mean = bn.running_mean
        qat.bn.running_var = bn.running_var
        qat.bn.num_batches_tracked = bn.num_batches_tracked
        return qat

    def to_float(self) -> nn.Module:
        """A float ``nn.Linear`` with the batch norm folded into its weight and bias."""
        linear = nn.Linear(self.in_features, self.out_features)
        if self.bn.running_var is None or self.bn.running_mean is None:
            raise RuntimeError(f"{type(self).__name__}: its batch norm has no running statistics")
        linear.weight, linear.bias = fuse_linear_bn_weights(
            self.weight, self.bias, self.bn.running_mean, self.bn.running_var, self.bn.eps,
            self.bn.weight, self.bn.bias,
        )  # fmt: skip
        return linear
