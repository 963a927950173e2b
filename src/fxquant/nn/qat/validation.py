"""Checks shared by the QAT modules: a qconfig must be given, ``from_float`` gets the module
type it converts.

Errors derive from ``AssertionError`` too, which is what upstream raises, so existing
``except`` clauses keep working after migrating.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

__all__ = [
    "QATModuleError",
    "require_float_module",
    "require_float_qparams_weight",
    "require_qat_qconfig",
]


class QATModuleError(ValueError, AssertionError):
    """A QAT module cannot be built: no qconfig, wrong module type, unsuitable weight
    observer."""


def require_qat_qconfig(qconfig: Any, owner: str) -> None:
    """Raise :class:`QATModuleError` unless ``qconfig`` is set (a QAT module fake-quantizes
    its weight with ``qconfig.weight()``)."""
    if not qconfig:
        raise QATModuleError(
            f"{owner} needs a qconfig to build its weight fake-quantizer; pass "
            f"qconfig=fxquant.get_default_qat_qconfig('x86') (or set module.qconfig and use "
            f"prepare_qat)"
        )


def require_float_module(mod: nn.Module, expected: type[nn.Module], owner: str) -> Any:
    """Check that ``mod`` is exactly an ``expected`` with a qconfig; return that qconfig."""
    got = type_before_parametrizations(mod)
    if got is not expected:
        raise QATModuleError(
            f"{owner}.from_float converts {expected.__module__}.{expected.__name__}, got "
            f"{got.__module__}.{got.__name__}"
        )
    qconfig = getattr(mod, "qconfig", None)
    if not qconfig:
        raise QATModuleError(
            f"{owner}.from_float: the {got.__name__} has no qconfig; set module.qconfig "
            f"(prepare_qat does it from the qconfig mapping) before converting"
        )
    return qconfig


def require_float_qparams_weight(qconfig: Any, owner: str) -> None:
    """Embedding weights are quantized per row with float zero points
    (``torch.per_channel_affine_float_qparams``); refuse any other weight observer."""
    qscheme = qconfig.weight().qscheme
    if qscheme != torch.per_channel_affine_float_qparams:
        raise QATModuleError(
            f"{owner} quantizes its weight per row with float zero points, so its weight "
            f"observer needs qscheme torch.per_channel_affine_float_qparams, got {qscheme}; use "
            f"fxquant.default_embedding_qat_qconfig"
        )
