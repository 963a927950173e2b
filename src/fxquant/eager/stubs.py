"""Markers that delimit the quantized region of an eager-mode model.

``QuantStub`` marks where float tensors enter the quantized region and ``DeQuantStub`` where
they leave it. Before conversion both are identities (``prepare`` attaches an observer to
``QuantStub`` to record the input range); ``convert`` swaps them for the quantized modules
``Quantize`` and ``DeQuantize``.

Example::

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.fc, self.dequant = QuantStub(), nn.Linear(4, 4), DeQuantStub()

        def forward(self, x):
            return self.dequant(self.fc(self.quant(x)))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["DeQuantStub", "QuantStub", "QuantWrapper"]


class QuantStub(nn.Module):
    """Where a float tensor enters the quantized region; an identity until ``convert``.

    Args:
        qconfig: the qconfig of this stub; when omitted it is inherited from the parent
            module by ``propagate_qconfig_``.
    """

    def __init__(self, qconfig: Any | None = None) -> None:
        super().__init__()
        if qconfig:
            self.qconfig = qconfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DeQuantStub(nn.Module):
    """Where a quantized tensor leaves the quantized region; an identity until ``convert``.

    Args:
        qconfig: the qconfig of this stub; when omitted it is inherited from the parent.
    """

    def __init__(self, qconfig: Any | None = None) -> None:
        super().__init__()
        if qconfig:
            self.qconfig = qconfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class QuantWrapper(nn.Module):
    """``module`` between a ``QuantStub`` and a ``DeQuantStub``, as children ``quant``,
    ``module`` and ``dequant``.

    The stubs take ``module``'s ``qconfig`` (if any), and the wrapper takes its training mode.

    >>> wrapped = QuantWrapper(nn.Linear(4, 4))
    """

    quant: QuantStub
    dequant: DeQuantStub
    module: nn.Module

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        qconfig = getattr(module, "qconfig", None)
        self.add_module("quant", QuantStub(qconfig))
        self.add_module("dequant", DeQuantStub(qconfig))
        self.add_module("module", module)
        self.train(module.training)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = self.quant(X)
        X = self.module(X)
        return self.dequant(X)
