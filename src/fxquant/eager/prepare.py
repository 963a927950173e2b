"""``prepare`` and ``prepare_qat``: attach observers (or fake-quantizers) to a model.

Each quantizable leaf module with a qconfig gets its output observer as the child
``activation_post_process``, called by a forward hook (a forward *pre*-hook on the input when
the activation observer is memoryless, as upstream). ``QuantStub`` is such a leaf, so the model
input is observed there; ``DeQuantStub`` is never observed. Fused modules and the modules of
``observer_non_leaf_module_list`` are observed as a whole; ``FloatFunctional`` gets its
observer in place of its own placeholder; custom modules are swapped for their observed class.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from fxquant.eager import mappings
from fxquant.eager.convert import convert
from fxquant.eager.custom_modules import get_default_custom_config_dict
from fxquant.eager.errors import EagerModeError
from fxquant.eager.hooks import register_observer_hook
from fxquant.eager.propagate import propagate_qconfig_
from fxquant.eager.stubs import DeQuantStub, QuantWrapper
from fxquant.eager.unused_qconfig import warn_unused_qconfigs
from fxquant.observers.base import QuantizationWarning
from fxquant.qconfig.properties import activation_is_memoryless

__all__ = ["add_quant_dequant", "prepare", "prepare_qat"]


@dataclass(frozen=True, kw_only=True)
class _ObserverContext:
    """What ``_add_observer_`` needs at every level of the module tree."""

    propagation_list: Collection[Any]  # leaf types that get an output observer
    non_leaf_types: Collection[Any]  # non-leaf types observed as a whole
    custom_module_classes: Mapping[Any, Any]  # float custom class -> observed class
    device: torch.device | None


def _has_no_children(module: nn.Module) -> bool:
    # A parametrized module holds its parametrizations as a child; that does not count.
    children = module._modules
    return len(children) == 0 or (
        torch.nn.utils.parametrize.is_parametrized(module)
        and len(children) == 1
        and "parametrizations" in children
    )


def _unique_devices(module: nn.Module) -> set[torch.device]:
    tensors = [*module.parameters(), *module.buffers()]
    return {t.device for t in tensors if t.device.type != "meta"}


def _single_device(module: nn.Module, what: str) -> torch.device | None:
    devices = _unique_devices(module)
    if len(devices) > 1:
        raise EagerModeError(
            f"{what} works on modules on one device, but {type(module).__name__} has "
            f"parameters on {sorted(str(d) for d in devices)}; move it to one device first"
        )
    return next(iter(devices)) if devices else None


def _needs_observation(module: nn.Module) -> bool:
    return getattr(module, "qconfig", None) is not None


def _make_observer(
    qconfig: Any, device: torch.device | None, special: Callable[..., Any] | None = None
) -> nn.Module:
    observer = qconfig.activation() if special is None else special()
    if device is not None:
        observer.to(device)
    return observer


def _insert_observer(
    module: nn.Module, device: torch.device | None, special: Callable[..., Any] | None = None
) -> None:
    """Give ``module`` an output observer, called first among its hooks."""
    if not _needs_observation(module) or isinstance(module, DeQuantStub):
        return
    qconfig: Any = module.qconfig
    module.add_module("activation_post_process", _make_observer(qconfig, device, special))
    register_observer_hook(module, pre_hook=activation_is_memoryless(qconfig))


def _observe_child(module: nn.Module, name: str, child: nn.Module, ctx: _ObserverContext) -> None:
    child_type = type_before_parametrizations(child)
    if child_type is nn.Dropout:
        return  # dropout is an identity at inference; its input's observer covers it
    if issubclass(child_type, mappings.functional_module_types()):
        if _needs_observation(child):
            # FloatFunctional holds a placeholder activation_post_process; replace it.
            child.activation_post_process = _make_observer(child.qconfig, ctx.device)
    elif isinstance(child, mappings.fused_module_base()) or child_type in ctx.non_leaf_types:
        _insert_observer(child, ctx.device)
    elif mappings._has_special_act_post_process(child):
        _insert_observer(child, ctx.device, mappings._get_special_act_post_process(child))
    elif _needs_observation(child) and child_type in ctx.custom_module_classes:
        observed_class = ctx.custom_module_classes[child_type]
        observed = observed_class.from_float(child)
        setattr(module, name, observed)
        if not issubclass(observed_class, tuple(mappings.no_observer_set())):
            _insert_observer(observed, ctx.device)
    else:
        _add_observer_(child, ctx)


def _add_observer_(module: nn.Module, ctx: _ObserverContext) -> None:
    """Attach observers to the quantizable leaves of ``module`` (in place)."""
    for name, child in list(module.named_children()):
        _observe_child(module, name, child, ctx)
    module_type = type_before_parametrizations(module)
    if isinstance(module, nn.Sequential) or module_type not in ctx.propagation_list:
        return
    # A leaf; or a module with a weight_fake_quant child (AdaRound-style), which observes
    # its output although it has children.
    if _has_no_children(module) or hasattr(module, "weight_fake_quant"):
        _insert_observer(module, ctx.device)


def prepare(
    model: nn.Module,
    inplace: bool = False,
    allow_list: Collection[Any] | None = None,
    observer_non_leaf_module_list: Collection[Any] | None = None,
    prepare_custom_config_dict: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Attach observers so that running the model records activation ranges.

    Give the model (or submodules) a ``qconfig`` attribute first; it is propagated to
    submodules. Then run calibration data through the result and call :func:`convert`.

    Args:
        model: the float model (its input should go through a ``QuantStub``).
        inplace: modify ``model`` instead of a deep copy.
        allow_list: module types that get observers (default: every quantizable type).
        observer_non_leaf_module_list: non-leaf module types observed as a whole.
        prepare_custom_config_dict: ``{"float_to_observed_custom_module_class": {...}}``;
            default :func:`get_default_custom_config_dict` (LSTM -> quantizable LSTM).

    Returns:
        The prepared model. A qconfig that can quantize nothing (on a module type eager mode
        cannot quantize) is reported with a ``QuantizationWarning``.

    Example::

        model.qconfig = fxquant.get_default_qconfig("x86")
        prepared = fxquant.prepare(model)
        for x in calibration_batches:
            prepared(x)
        quantized = fxquant.convert(prepared)
    """
    torch._C._log_api_usage_once("fxquant.eager.prepare")
    if prepare_custom_config_dict is None:
        prepare_custom_config_dict = get_default_custom_config_dict()
    custom_classes = prepare_custom_config_dict.get("float_to_observed_custom_module_class", {})
    if not inplace:
        model = copy.deepcopy(model)
    propagation_list = (
        mappings.get_default_qconfig_propagation_list() if allow_list is None else allow_list
    )
    propagate_qconfig_(model, qconfig_dict=None)
    if not any(_needs_observation(m) for m in model.modules()):
        warnings.warn(
            "None of the submodules got a qconfig, so nothing will be observed: set "
            "model.qconfig (or submodules' .qconfig) before prepare",
            QuantizationWarning,
            stacklevel=2,
        )
    non_leaf = set(observer_non_leaf_module_list or ())
    quantizable = set(propagation_list) | non_leaf | set(custom_classes)
    warn_unused_qconfigs(model, quantizable, flow="prepare", kind="static")
    ctx = _ObserverContext(
        propagation_list=propagation_list,
        non_leaf_types=non_leaf,
        custom_module_classes=custom_classes,
        device=_single_device(model, "prepare"),
    )
    _add_observer_(model, ctx)
    return model


def prepare_qat(
    model: nn.Module, mapping: Mapping[Any, Any] | None = None, inplace: bool = False
) -> nn.Module:
    """Swap modules for their QAT versions and attach fake-quantizers (training mode only).

    Give the model a QAT qconfig first (e.g. ``get_default_qat_qconfig("x86")``). Train the
    result, then :func:`convert` it.

    Raises:
        EagerModeError: the model is in eval mode.
    """
    torch._C._log_api_usage_once("fxquant.eager.prepare_qat")
    if not model.training:
        raise EagerModeError(
            "prepare_qat needs a model in training mode (QAT trains through fake-quantizers): "
            "call model.train() first, or use prepare() for post-training quantization"
        )
    mapping = mappings.get_default_qat_module_mappings() if mapping is None else mapping
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model, qconfig_dict=None)
    convert(model, mapping=mapping, inplace=True, remove_qconfig=False)
    prepare(model, observer_non_leaf_module_list=set(mapping.values()), inplace=True)
    return model


def add_quant_dequant(module: nn.Module) -> nn.Module:
    """Wrap every leaf module that has a qconfig in a :class:`QuantWrapper`.

    Children are replaced in place; if ``module`` itself is such a leaf, a new
    ``QuantWrapper(module)`` is returned.
    """
    if _has_no_children(module) and getattr(module, "qconfig", None):
        return QuantWrapper(module)
    for name, child in module.named_children():
        module._modules[name] = add_quant_dequant(child)
    return module
