"""Quantized, QAT, fused and reference modules, mirroring ``torch.ao.nn``'s layout.

Subpackages: ``quantized`` (static quantized modules, with ``quantized.dynamic`` and
``quantized.reference``), ``qat``, ``intrinsic`` (fused, QAT-fused and quantized-fused
modules) and ``quantizable``. They are imported on first use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["intrinsic", "qat", "quantizable", "quantized"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
