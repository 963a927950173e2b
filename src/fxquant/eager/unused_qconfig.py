"""Report qconfigs that quantize nothing: set on modules that the flow has no quantized
version of.

Eager mode quantizes only the module types of its mapping; any other module keeps running in
float whatever its qconfig says. Upstream ignores that silently, so a qconfig put on, say, an
``nn.GELU`` or (for ``quantize_dynamic``) an ``nn.Conv2d`` looks applied but does nothing.

A qconfig counts as *set by the user* where it starts: on a module whose parent has no
qconfig (or on the model itself). Such a module is reported when neither it nor any of its
submodules is of a quantizable type. (Modules that merely inherit a qconfig, such as the ReLUs
of a quantized network, are never reported.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from fxquant.observers.base import QuantizationWarning

__all__ = ["UnusedQConfig", "find_unused_qconfigs", "warn_unused_qconfigs"]


@dataclass(frozen=True, kw_only=True)
class UnusedQConfig:
    """A module whose qconfig has no effect, and why."""

    name: str  # qualified name ("" for the model itself)
    module_type: type
    reason: str

    def message(self, flow: str) -> str:
        where = repr(self.name) if self.name else "the model"
        return (
            f"{flow}: the qconfig on {where} ({self.module_type.__name__}) has no effect: "
            f"{self.reason}; it stays in float. Remove the qconfig, or pass a mapping that "
            "names a quantized class for it."
        )


def _has_qconfig(module: nn.Module) -> bool:
    return getattr(module, "qconfig", None) is not None


def _subtree_is_quantizable(module: nn.Module, is_quantizable: Callable[[nn.Module], bool]) -> bool:
    return any(is_quantizable(m) for m in module.modules())


def _reason(module: nn.Module, kind: str) -> str:
    type_name = type_before_parametrizations(module).__name__
    if len(module._modules) == 0:
        return f"there is no {kind} quantized version of {type_name}"
    return f"none of its submodules has a {kind} quantized version"


def find_unused_qconfigs(
    model: nn.Module,
    quantizable_types: Collection[Any],
    *,
    kind: str = "static",
) -> list[UnusedQConfig]:
    """The user-set qconfigs of ``model`` (after propagation) that quantize nothing.

    Args:
        model: a model whose modules carry ``qconfig`` attributes (``propagate_qconfig_``).
        quantizable_types: the module classes the flow can quantize (its mapping's keys).
        kind: the flow's kind of quantization, for the reason text ("static", "dynamic").
    """
    types = set(quantizable_types) - {nn.Sequential}

    def is_quantizable(m: nn.Module) -> bool:
        return type_before_parametrizations(m) in types

    found: list[UnusedQConfig] = []

    def visit(module: nn.Module, name: str, parent_has_qconfig: bool) -> None:
        user_set = _has_qconfig(module) and not parent_has_qconfig
        if user_set and not _subtree_is_quantizable(module, is_quantizable):
            found.append(UnusedQConfig(
                name=name, module_type=type(module), reason=_reason(module, kind)
            ))
            return
        for child_name, child in module.named_children():
            visit(child, f"{name}.{child_name}" if name else child_name, _has_qconfig(module))

    visit(model, "", False)
    return found


def warn_unused_qconfigs(
    model: nn.Module, quantizable_types: Collection[Any], *, flow: str, kind: str
) -> list[UnusedQConfig]:
    """:func:`find_unused_qconfigs`, with a ``QuantizationWarning`` for each entry."""
    found = find_unused_qconfigs(model, quantizable_types, kind=kind)
    for entry in found:
        warnings.warn(entry.message(flow), QuantizationWarning, stacklevel=3)
    return found
