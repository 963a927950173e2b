"""Make a qconfig's constructors build observers on the device of the module they observe."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxquant.qconfig.qconfig import QConfig, QConfigAny

__all__ = ["qconfig_on_module_device"]


def _module_device_kwargs(module: nn.Module) -> dict[str, torch.device] | None:
    devices = {p.device for p in module.parameters()} | {b.device for b in module.buffers()}
    return {"device": next(iter(devices))} if devices else None


def _on_module_device(constructor: Any, module: nn.Module) -> Any:
    # Only constructors that accept ``factory_kwargs`` can be redirected; probe by building one.
    # An AttributeError means no ``with_args`` (None, nn.Identity); a TypeError means the class
    # does not take ``factory_kwargs``. Either way the constructor is kept as it is.
    try:
        constructor.with_args(factory_kwargs=None)()
    except (AttributeError, TypeError):
        return constructor
    return constructor.with_callable_args(factory_kwargs=lambda: _module_device_kwargs(module))


def qconfig_on_module_device(qconfig: QConfigAny, module: nn.Module | None) -> Any:
    """``qconfig`` with constructors that build observers on ``module``'s device.

    The device is looked up when each observer is built (the module may move in between).
    Returned unchanged when ``module`` or ``qconfig`` is ``None`` or ``qconfig`` is not
    ``(activation, weight)``-shaped; constructors that take no ``factory_kwargs`` are kept.
    (Upstream's ``_add_module_to_qconfig_obs_ctr``.)
    """
    if module is None or qconfig is None or qconfig._fields != ("activation", "weight"):
        return qconfig
    return QConfig(
        _on_module_device(qconfig.activation, module), _on_module_device(qconfig.weight, module)
    )
