"""Quantized fused modules (``torch.ao.nn.intrinsic.quantized``'s names): one quantized kernel
per fused pattern (conv + relu, conv + add (+ relu), linear + relu / leaky relu / tanh,
batch norm + relu). ``dynamic`` (dynamic ``LinearReLU``) is imported on first access."""

from __future__ import annotations

import importlib
from types import ModuleType

from fxquant.nn.intrinsic.quantized.bn_relu import BNReLU2d, BNReLU3d
from fxquant.nn.intrinsic.quantized.conv_add import ConvAdd2d, ConvAddReLU2d
from fxquant.nn.intrinsic.quantized.conv_relu import ConvReLU1d, ConvReLU2d, ConvReLU3d
from fxquant.nn.intrinsic.quantized.linear_relu import LinearLeakyReLU, LinearReLU, LinearTanh

__all__ = [
    "BNReLU2d",
    "BNReLU3d",
    "ConvAdd2d",
    "ConvAddReLU2d",
    "ConvReLU1d",
    "ConvReLU2d",
    "ConvReLU3d",
    "LinearLeakyReLU",
    "LinearReLU",
    "LinearTanh",
]


def __getattr__(name: str) -> ModuleType:
    if name == "dynamic":
        return importlib.import_module(f"{__name__}.dynamic")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
