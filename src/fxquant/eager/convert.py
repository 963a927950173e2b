"""``convert`` and ``swap_module``: replace observed modules by their quantized versions.

Every module with a qconfig whose type is in the mapping is replaced by
``mapping[type].from_float(module)`` (which reads the module's observer), children first.
Fused modules and observed custom modules are swapped as one unit. The user's forward hooks
move to the new module; the observer hooks do not.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from fxquant.eager import mappings
from fxquant.eager.custom_modules import get_default_custom_config_dict
from fxquant.eager.errors import EagerModeError
from fxquant.eager.hooks import is_observer_hook, remove_observer_hooks
from fxquant.eager.weight_qparams import get_qparam_dict
from fxquant.observers.state import is_activation_post_process

__all__ = ["convert", "swap_module"]


def _from_float(qmod: Any, mod: nn.Module, use_precomputed_fake_quant: bool) -> nn.Module:
    if getattr(qmod, "_IS_REFERENCE", False):
        # Reference modules keep float weights plus the weight's qparams.
        qconfig: Any = mod.qconfig
        weight_observer = qconfig.weight()
        weight_observer(mod.weight)
        return qmod.from_float(mod, get_qparam_dict(weight_observer))
    if "use_precomputed_fake_quant" in inspect.signature(qmod.from_float).parameters:
        return qmod.from_float(mod, use_precomputed_fake_quant=use_precomputed_fake_quant)
    return qmod.from_float(mod)


def _move_hooks_and_device(mod: nn.Module, new_mod: nn.Module) -> None:
    # Pre-hooks will see quantized inputs and post-hooks quantized outputs from now on.
    for pre_hook in mod._forward_pre_hooks.values():
        if not is_observer_hook(pre_hook):
            new_mod.register_forward_pre_hook(pre_hook)
    for hook in mod._forward_hooks.values():
        if not is_observer_hook(hook):
            new_mod.register_forward_hook(hook)
    devices = {t.device for t in [*mod.parameters(), *mod.buffers()]} - {torch.device("meta")}
    if len(devices) > 1:
        raise EagerModeError(
            f"swap_module works on modules on one device, but {type(mod).__name__} has "
            f"parameters on {sorted(str(d) for d in devices)}"
        )
    if devices:
        new_mod.to(next(iter(devices)))


def swap_module(
    mod: nn.Module,
    mapping: Mapping[Any, Any],
    custom_module_class_mapping: Mapping[Any, Any],
    use_precomputed_fake_quant: bool = False,
) -> nn.Module:
    """The quantized version of ``mod``, or ``mod`` itself if it is not to be swapped.

    ``mod`` is swapped when it has a qconfig and its type is in ``custom_module_class_mapping``
    (via ``from_observed``) or in ``mapping`` (via ``from_float``).
    """
    if getattr(mod, "qconfig", None) is None:
        return mod
    mod_type = type_before_parametrizations(mod)
    if mod_type in custom_module_class_mapping:
        new_mod = custom_module_class_mapping[mod_type].from_observed(mod)
    elif mod_type in mapping:
        qmod = mappings.specialize_for_qconfig(mapping[mod_type], mod.qconfig)
        new_mod = _from_float(qmod, mod, use_precomputed_fake_quant)
    else:
        return mod
    _move_hooks_and_device(mod, new_mod)
    return new_mod


def _convert(
    module: nn.Module,
    mapping: Mapping[Any, Any],
    custom_classes: Mapping[Any, Any],
    use_precomputed_fake_quant: bool,
) -> None:
    swapped: dict[str, nn.Module] = {}
    for name, child in module.named_children():
        is_unit = isinstance(child, mappings.fused_module_base()) or (
            type_before_parametrizations(child) in custom_classes
        )
        if not is_unit:
            _convert(child, mapping, custom_classes, use_precomputed_fake_quant)
        swapped[name] = swap_module(child, mapping, custom_classes, use_precomputed_fake_quant)
    for name, new_child in swapped.items():
        module._modules[name] = new_child


def _remove_activation_post_process(module: nn.Module) -> None:
    observer = getattr(module, "activation_post_process", None)
    if observer is not None and is_activation_post_process(observer):
        delattr(module, "activation_post_process")
    remove_observer_hooks(module)


def _remove_qconfig(module: nn.Module) -> None:
    """Delete ``qconfig`` attributes, observers and observer hooks from the whole tree."""
    for child in module.children():
        _remove_qconfig(child)
    if hasattr(module, "qconfig"):
        del module.qconfig
    _remove_activation_post_process(module)


def convert(
    module: nn.Module,
    mapping: Mapping[Any, Any] | None = None,
    inplace: bool = False,
    remove_qconfig: bool = True,
    is_reference: bool = False,
    convert_custom_config_dict: Mapping[str, Any] | None = None,
    use_precomputed_fake_quant: bool = False,
) -> nn.Module:
    """Replace observed (or QAT) modules by quantized ones.

    Args:
        module: a prepared and calibrated (or QAT-trained) model.
        mapping: module type -> quantized class with ``from_float`` (default: the static
            mapping, or the reference mapping when ``is_reference``).
        inplace: modify ``module`` instead of a deep copy.
        remove_qconfig: delete the ``qconfig`` attributes and leftover observers afterwards.
        is_reference: produce reference modules (float weights + qparams) instead.
        convert_custom_config_dict: ``{"observed_to_quantized_custom_module_class": {...}}``.
        use_precomputed_fake_quant: passed to ``from_float`` where supported.

    Example::

        quantized = fxquant.convert(prepared.eval())
    """
    torch._C._log_api_usage_once("fxquant.eager.convert")
    if not inplace:
        module = copy.deepcopy(module)
    if mapping is None:
        mapping = (
            mappings.get_default_static_quant_reference_module_mappings()
            if is_reference
            else mappings.get_default_static_quant_module_mappings()
        )
    if convert_custom_config_dict is None:
        convert_custom_config_dict = get_default_custom_config_dict()
    custom_classes = convert_custom_config_dict.get("observed_to_quantized_custom_module_class", {})
    _convert(module, mapping, custom_classes, use_precomputed_fake_quant)
    if remove_qconfig:
        _remove_qconfig(module)
    return module
