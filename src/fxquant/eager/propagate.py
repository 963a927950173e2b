"""``propagate_qconfig_``: give every submodule the qconfig that applies to it.

Precedence, weakest first: the parent's qconfig, an entry for the module's type in
``qconfig_dict``, an entry for its qualified name, and finally a ``qconfig`` attribute already
set on the module. The result is stored as ``module.qconfig`` on every module (``None`` means
"keep in float"), with constructors that build observers on the module's device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from fxquant.qconfig.device import qconfig_on_module_device
from fxquant.qconfig.properties import assert_valid_qconfig

__all__ = ["propagate_qconfig_", "validate_qconfig_dict"]

QConfigDict = Mapping[Any, Any]


def _is_qconfig_like(value: Any) -> bool:
    # A QConfig (ours or upstream's) is a named tuple of two constructors.
    return value is None or (hasattr(value, "activation") and hasattr(value, "weight"))


def validate_qconfig_dict(qconfig_dict: QConfigDict) -> None:
    """Check that every key is a module type or a qualified name and every value a qconfig.

    Raises:
        TypeError: naming the offending entry.
    """
    for key, value in qconfig_dict.items():
        if not isinstance(key, (str, type)):
            raise TypeError(
                f"qconfig_dict key {key!r} must be a module type (e.g. nn.Linear) or a "
                "submodule's qualified name (e.g. 'encoder.fc1')"
            )
        if not _is_qconfig_like(value):
            raise TypeError(
                f"qconfig_dict[{getattr(key, '__name__', key)!r}] is {value!r}, not a QConfig; "
                "use a QConfig such as fxquant.default_dynamic_qconfig, or None to keep it "
                "in float"
            )


def _is_non_traceable(name: str, child: nn.Module, custom_config: QConfigDict) -> bool:
    return name in custom_config.get("non_traceable_module_name", []) or type(child) in (
        custom_config.get("non_traceable_module_class", [])
    )


def _propagate(
    module: nn.Module,
    qconfig_dict: QConfigDict,
    parent_qconfig: Any,
    prefix: str,
    custom_config: QConfigDict,
) -> None:
    qconfig = qconfig_dict.get(type_before_parametrizations(module), parent_qconfig)
    qconfig = qconfig_dict.get(prefix, qconfig)
    qconfig = getattr(module, "qconfig", qconfig)
    assert_valid_qconfig(qconfig, module)
    qconfig = qconfig_on_module_device(qconfig, module)
    module.qconfig = qconfig
    for name, child in module.named_children():
        # A non-traceable child (FX custom config) keeps whatever qconfig it already has.
        if _is_non_traceable(name, child, custom_config):
            continue
        child_prefix = f"{prefix}.{name}" if prefix else name
        _propagate(child, qconfig_dict, qconfig, child_prefix, custom_config)


def propagate_qconfig_(
    module: nn.Module,
    qconfig_dict: QConfigDict | None = None,
    prepare_custom_config_dict: QConfigDict | None = None,
) -> None:
    """Set ``qconfig`` on ``module`` and all its submodules, in place.

    Args:
        module: the model.
        qconfig_dict: module type or qualified name -> qconfig (``None`` keeps that part in
            float). A module's own ``qconfig`` attribute wins over the dict, a name wins over
            a type, and anything unspecified inherits its parent's qconfig.
        prepare_custom_config_dict: ``"non_traceable_module_name"`` / ``"non_traceable_module_
            class"`` lists: those children are not given their parent's qconfig.

    Raises:
        TypeError: a ``qconfig_dict`` entry is not a type/name -> qconfig pair.
        UnsupportedQConfigError: a module cannot use its qconfig (per-channel ConvTranspose).

    Example::

        propagate_qconfig_(model, {nn.Linear: default_dynamic_qconfig, "head": None})
    """
    qconfig_dict = {} if qconfig_dict is None else qconfig_dict
    validate_qconfig_dict(qconfig_dict)
    _propagate(module, qconfig_dict, None, "", prepare_custom_config_dict or {})
