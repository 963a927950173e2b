"""Fused modules, mirroring ``torch.ao.nn.intrinsic``.

The package root holds the fused *float* containers (``ConvReLU2d``, ``ConvBnReLU2d``,
``LinearReLU``, ...) and their marker base ``_FusedModule``; the subpackages ``qat`` (QAT
versions with batch-norm folding) and ``quantized`` (fused quantized kernels) are imported on
first use, so that they may depend on this package without a cycle.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fxquant.nn.intrinsic.modules import (
    BNReLU2d,
    BNReLU3d,
    ConvAdd2d,
    ConvAddReLU2d,
    ConvBn1d,
    ConvBn2d,
    ConvBn3d,
    ConvBnReLU1d,
    ConvBnReLU2d,
    ConvBnReLU3d,
    ConvReLU1d,
    ConvReLU2d,
    ConvReLU3d,
    FusedModuleTypeError,
    LinearBn1d,
    LinearLeakyReLU,
    LinearReLU,
    LinearTanh,
    _FusedModule,
)

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
    "_FusedModule",
]

_SUBPACKAGES = ("qat", "quantized")


def __getattr__(name: str) -> ModuleType:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
