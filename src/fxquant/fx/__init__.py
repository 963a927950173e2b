"""Internals of FX graph mode quantization (``fxquant.quantize_fx``): tracing, fusion,
QConfigMapping → engine annotations, reference conversion and lowering.

The public entry points live in :mod:`fxquant.quantize_fx`; the custom configs are public here
(upstream path ``torch.ao.quantization.fx.custom_config``).
"""

from fxquant.fx.custom_config import ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig
from fxquant.fx.custom_module import CustomModuleError
from fxquant.fx.equalization import EqualizationError
from fxquant.fx.example_values import ExampleInputError
from fxquant.fx.standalone import StandaloneModuleError
from fxquant.fx.tracer import FxTraceError

__all__ = [
    "ConvertCustomConfig",
    "CustomModuleError",
    "EqualizationError",
    "ExampleInputError",
    "FuseCustomConfig",
    "FxTraceError",
    "PrepareCustomConfig",
    "StandaloneModuleError",
]
