"""``fuse_modules`` / ``fuse_modules_qat``: fuse named sequences of submodules in place of
the first one (conv+bn+relu -> one module), leaving ``nn.Identity`` in the others' places.

Example::

    fused = fuse_modules(model.eval(), [["conv1", "bn1", "relu1"], ["fc", "relu2"]])
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from fxquant.eager.fuser_methods import NoFuserMethodError, get_fuser_method

__all__ = ["fuse_known_modules", "fuse_modules", "fuse_modules_qat"]

FuserFunc = Callable[..., list[nn.Module]]


def _get_module(model: nn.Module, name: str) -> nn.Module:
    module = model
    for part in name.split("."):
        if not hasattr(module, part):
            raise AttributeError(
                f"fuse_modules: {type(model).__name__} has no submodule {name!r} "
                f"(no {part!r} in {type(module).__name__})"
            )
        module = getattr(module, part)
    return module


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = _get_module(model, parent_name) if parent_name else model
    setattr(parent, attr, module)


def fuse_known_modules(
    mod_list: Sequence[nn.Module],
    is_qat: bool,
    additional_fuser_method_mapping: Mapping[Any, Any] | None = None,
) -> list[nn.Module]:
    """Fuse ``mod_list`` with the fuser method for its types: the fused module first, then an
    ``nn.Identity`` for each other module.

    The first module's forward pre-hooks and the last module's forward hooks move to the fused
    module (other hooks are dropped).
    """
    types = tuple(type_before_parametrizations(m) for m in mod_list)
    fuser_method = get_fuser_method(types, additional_fuser_method_mapping)
    fused = fuser_method(is_qat, *mod_list)
    for pre_hook in mod_list[0]._forward_pre_hooks.values():
        fused.register_forward_pre_hook(pre_hook)
    mod_list[0]._forward_pre_hooks.clear()
    for hook in mod_list[-1]._forward_hooks.values():
        fused.register_forward_hook(hook)
    mod_list[-1]._forward_hooks.clear()
    identities: list[nn.Module] = []
    for _ in mod_list[1:]:
        identity = nn.Identity()
        identity.training = mod_list[0].training
        identities.append(identity)
    return [fused, *identities]


def _fuse_group(
    model: nn.Module,
    names: Sequence[str],
    is_qat: bool,
    fuser_func: FuserFunc,
    additional_fuser_method_mapping: Mapping[Any, Any],
) -> None:
    modules = [_get_module(model, name) for name in names]
    try:
        new_modules = fuser_func(modules, is_qat, additional_fuser_method_mapping)
    except NoFuserMethodError as e:
        raise NoFuserMethodError(f"cannot fuse {list(names)}: {e}") from e
    for name, new_module in zip(names, new_modules, strict=True):
        _set_module(model, name, new_module)


def _fuse_modules(
    model: nn.Module,
    modules_to_fuse: Sequence[Any],
    is_qat: bool,
    inplace: bool,
    fuser_func: FuserFunc,
    fuse_custom_config_dict: Mapping[str, Any] | None,
) -> nn.Module:
    if not inplace:
        model = copy.deepcopy(model)
    additional = (fuse_custom_config_dict or {}).get("additional_fuser_method_mapping", {})
    groups = (
        [modules_to_fuse] if all(isinstance(m, str) for m in modules_to_fuse) else modules_to_fuse
    )
    for group in groups:
        _fuse_group(model, group, is_qat, fuser_func, additional)
    return model


def fuse_modules(
    model: nn.Module,
    modules_to_fuse: Sequence[Any],
    inplace: bool = False,
    fuser_func: FuserFunc = fuse_known_modules,
    fuse_custom_config_dict: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Fuse lists of submodules for post-training quantization (model in eval mode).

    Known sequences: conv-bn, conv-bn-relu, conv-relu, linear-bn, linear-relu, bn-relu,
    convtranspose-bn (batch norms are folded into the weights).

    Args:
        model: the model.
        modules_to_fuse: a list of lists of qualified names, or one list of names.
        inplace: modify ``model`` instead of a deep copy.
        fuser_func: ``(modules, is_qat, additional_mapping) -> modules`` of the same length.
        fuse_custom_config_dict: ``{"additional_fuser_method_mapping": {types: method}}``.

    Raises:
        NoFuserMethodError: a sequence of types has no fuser method.
    """
    return _fuse_modules(
        model, modules_to_fuse, False, inplace, fuser_func, fuse_custom_config_dict
    )


def fuse_modules_qat(
    model: nn.Module,
    modules_to_fuse: Sequence[Any],
    inplace: bool = False,
    fuser_func: FuserFunc = fuse_known_modules,
    fuse_custom_config_dict: Mapping[str, Any] | None = None,
) -> nn.Module:
    """:func:`fuse_modules` for quantization-aware training (model in training mode): conv-bn
    stays a ``ConvBn*`` container that ``prepare_qat`` turns into a folding QAT module."""
    return _fuse_modules(
        model, modules_to_fuse, True, inplace, fuser_func, fuse_custom_config_dict
    )
