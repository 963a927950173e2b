"""Fused float modules: ``Sequential`` containers that mark a pattern for quantization.

``fuse_modules`` replaces a run of modules (conv + bn + relu, linear + relu, ...) by one of
these containers; they compute exactly what the modules did one after the other. Preparation
then swaps each for its QAT or observed version, and conversion for a single quantized kernel
that applies the whole pattern at once (e.g. ``ConvReLU2d`` becomes a quantized conv with the
ReLU folded into its output range).

Every class here checks the *exact* types of its parts (a subclass of ``nn.Conv2d`` is not an
``nn.Conv2d`` to a fused kernel), looking through parametrizations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

__all__ = [
    "BNReLU2d",
    "BNReLU3d",
    "ConvAdd2d",
    "ConvAddReLU2d",
    "ConvBn1d",
    "ConvBn2d",
    "ConvBn3d",
    "ConvBnReLU1d",
    "ConvBnReLU2d",
    "ConvBnReLU3d",
    "ConvReLU1d",
    "ConvReLU2d",
    "ConvReLU3d",
    "FusedModuleTypeError",
    "LinearBn1d",
    "LinearLeakyReLU",
    "LinearReLU",
    "LinearTanh",
]


class FusedModuleTypeError(TypeError, AssertionError):
    """A fused module was built from parts of the wrong types.

    Also an ``AssertionError``, which is what upstream raises, so existing ``except`` clauses
    keep working after migrating.
    """


class _FusedModule(nn.Sequential):
    """Marks a module as a fusion of several (float, QAT or quantized) modules.

    Quantization code asks ``isinstance(m, _FusedModule)`` to know that ``m[0]`` holds the
    weights of the pattern. QAT-fused modules inherit it as a mixin, so it adds no state.
    """


class _TypedFusion(_FusedModule):
    """A fused container whose parts must have exactly the types in ``_PARTS``."""

    _PARTS: ClassVar[tuple[type[nn.Module], ...]] = ()

    def __init__(self, *modules: nn.Module) -> None:
        got = tuple(type_before_parametrizations(m) for m in modules)
        if got != self._PARTS:
            expected = ", ".join(t.__name__ for t in self._PARTS)
            actual = ", ".join(t.__name__ for t in got)
            raise FusedModuleTypeError(
                f"{type(self).__name__} fuses ({expected}) but got ({actual}); pass modules "
                f"of exactly these types, in this order."
            )
        super().__init__(*modules)


class ConvReLU1d(_TypedFusion):
    """``Conv1d`` followed by ``ReLU``."""

    _PARTS = (nn.Conv1d, nn.ReLU)

    def __init__(self, conv: nn.Module, relu: nn.Module) -> None:
        super().__init__(conv, relu)


class ConvReLU2d(_TypedFusion):
    """``Conv2d`` followed by ``ReLU``."""

    _PARTS = (nn.Conv2d, nn.ReLU)

    def __init__(self, conv: nn.Module, relu: nn.Module) -> None:
        super().__init__(conv, relu)


class ConvReLU3d(_TypedFusion):
    """``Conv3d`` followed by ``ReLU``."""

    _PARTS = (nn.Conv3d, nn.ReLU)

    def __init__(self, conv: nn.Module, relu: nn.Module) -> None:
        super().__init__(conv, relu)


class LinearReLU(_TypedFusion):
    """``Linear`` followed by ``ReLU``."""

    _PARTS = (nn.Linear, nn.ReLU)

    def __init__(self, linear: nn.Module, relu: nn.Module) -> None:
        super().__init__(linear, relu)


class ConvBn1d(_TypedFusion):
    """``Conv1d`` followed by ``BatchNorm1d``."""

    _PARTS = (nn.Conv1d, nn.BatchNorm1d)

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__(conv, bn)


class ConvBn2d(_TypedFusion):
    """``Conv2d`` followed by ``BatchNorm2d``."""

    _PARTS = (nn.Conv2d, nn.BatchNorm2d)

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__(conv, bn)


class ConvBn3d(_TypedFusion):
    """``Conv3d`` followed by ``BatchNorm3d``."""

    _PARTS = (nn.Conv3d, nn.BatchNorm3d)

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__(conv, bn)


class ConvBnReLU1d(_TypedFusion):
    """``Conv1d``, ``BatchNorm1d``, ``ReLU``."""

    _PARTS = (nn.Conv1d, nn.BatchNorm1d, nn.ReLU)

    def __init__(self, conv: nn.Module, bn: nn.Module, relu: nn.Module) -> None:
        super().__init__(conv, bn, relu)


class ConvBnReLU2d(_TypedFusion):
    """``Conv2d``, ``BatchNorm2d``, ``ReLU``."""

    _PARTS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)

    def __init__(self, conv: nn.Module, bn: nn.Module, relu: nn.Module) -> None:
        super().__init__(conv, bn, relu)


class ConvBnReLU3d(_TypedFusion):
    """``Conv3d``, ``BatchNorm3d``, ``ReLU``."""

    _PARTS = (nn.Conv3d, nn.BatchNorm3d, nn.ReLU)

    def __init__(self, conv: nn.Module, bn: nn.Module, relu: nn.Module) -> None:
        super().__init__(conv, bn, relu)


class BNReLU2d(_TypedFusion):
    """``BatchNorm2d`` followed by ``ReLU``."""

    _PARTS = (nn.BatchNorm2d, nn.ReLU)

    def __init__(self, batch_norm: nn.Module, relu: nn.Module) -> None:
        super().__init__(batch_norm, relu)


class BNReLU3d(_TypedFusion):
    """``BatchNorm3d`` followed by ``ReLU``."""

    _PARTS = (nn.BatchNorm3d, nn.ReLU)

    def __init__(self, batch_norm: nn.Module, relu: nn.Module) -> None:
        super().__init__(batch_norm, relu)


class LinearBn1d(_TypedFusion):
    """``Linear`` followed by ``BatchNorm1d``."""

    _PARTS = (nn.Linear, nn.BatchNorm1d)

    def __init__(self, linear: nn.Module, bn: nn.Module) -> None:
        super().__init__(linear, bn)


class LinearLeakyReLU(_TypedFusion):
    """``Linear`` followed by ``LeakyReLU``."""

    _PARTS = (nn.Linear, nn.LeakyReLU)

    def __init__(self, linear: nn.Module, leaky_relu: nn.Module) -> None:
        super().__init__(linear, leaky_relu)


class LinearTanh(_TypedFusion):
    """``Linear`` followed by ``Tanh``."""

    _PARTS = (nn.Linear, nn.Tanh)

    def __init__(self, linear: nn.Module, tanh: nn.Module) -> None:
        super().__init__(linear, tanh)


class ConvAdd2d(_FusedModule):
    """``add(conv(x1), x2)``: a ``Conv2d`` whose output is added to a second input.

    ``add`` is any callable taking two tensors (``torch.add``, ``operator.add``...); it is
    kept as an attribute, not a child module.
    """

    def __init__(self, conv: nn.Module, add: Any) -> None:
        super().__init__(conv)
        self.add = add

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # two inputs, unlike Sequential
        """``add(conv(x1), x2)``."""
        return self.add(self[0](x1), x2)


class ConvAddReLU2d(_FusedModule):
    """``relu(add(conv(x1), x2))``."""

    def __init__(self, conv: nn.Module, add: Any, relu: Any) -> None:
        super().__init__(conv)
        self.add = add
        self.relu = relu

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # two inputs, unlike Sequential
        """``relu(add(conv(x1), x2))``."""
        return self.relu(self.add(self[0](x1), x2))
