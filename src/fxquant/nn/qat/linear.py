"""QAT ``Linear``: ``nn.Linear`` whose weight goes through a fake-quantizer in forward."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrize import is_parametrized, transfer_parametrizations_and_params

from fxquant.nn.intrinsic.modules.fused import LinearReLU
from fxquant.nn.qat.validation import (
    QATModuleError,
    require_float_module,
    require_qat_qconfig,
)

__all__ = ["Linear"]


class Linear(nn.Linear):
    """``nn.Linear`` that computes with ``weight_fake_quant(weight)``.

    Attributes:
        qconfig: the qconfig it was built with.
        weight_fake_quant: ``qconfig.weight()``, applied to the weight on every call.

    >>> m = Linear(4, 3, qconfig=fxquant.get_default_qat_qconfig("x86"))
    >>> y = m(torch.randn(2, 4))
    """

    _FLOAT_MODULE: type[nn.Module] = nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        qconfig: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__(in_features, out_features, bias, **factory_kwargs)
        require_qat_qconfig(qconfig, f"qat.{type(self).__name__}")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight(factory_kwargs=factory_kwargs)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight_fake_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Build the QAT module from a float ``nn.Linear`` (or a fused ``LinearReLU``) that
        carries a ``qconfig``. The QAT module shares the float module's parameters (and
        their parametrizations)."""
        owner = f"qat.{cls.__name__}"
        qconfig = require_float_module(mod, cls._FLOAT_MODULE, owner)
        linear = mod[0] if isinstance(mod, LinearReLU) else mod
        if not isinstance(linear, nn.Linear):
            raise QATModuleError(f"{owner}.from_float: expected a Linear, got {type(linear)}")
        qat_linear = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None, qconfig=qconfig
        )
        for name in ("weight", "bias"):
            if is_parametrized(linear, name):
                transfer_parametrizations_and_params(linear, qat_linear, name)
            else:
                setattr(qat_linear, name, getattr(linear, name))
        return qat_linear

    def to_float(self) -> nn.Module:
        """A plain ``nn.Linear`` with copies of the trained weight and bias."""
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        linear.weight = nn.Parameter(self.weight.detach())
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach())
        linear.train(self.training)
        return linear
