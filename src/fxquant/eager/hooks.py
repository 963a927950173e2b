"""The forward hooks through which an eager-mode module calls its output observer.

They are module-level functions so that ``convert`` can recognise (by identity) and remove
exactly these hooks while keeping any hooks of the user's.
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

__all__ = ["register_observer_hook", "remove_observer_hooks"]


def _observer_forward_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Observe (and return) the module's output."""
    observer = cast(nn.Module, module.activation_post_process)
    return observer(output)


def _observer_forward_pre_hook(module: nn.Module, inputs: tuple[Any, ...]) -> Any:
    """Observe the module's first input (for memoryless observers)."""
    observer = cast(nn.Module, module.activation_post_process)
    return observer(inputs[0])


def register_observer_hook(module: nn.Module, *, pre_hook: bool = False) -> None:
    """Make ``module`` call its ``activation_post_process`` before any other hook.

    Raises:
        AttributeError: ``module`` has no ``activation_post_process``.
    """
    if not hasattr(module, "activation_post_process"):
        raise AttributeError(
            f"{type(module).__name__} has no activation_post_process to call from a hook; "
            "attach the observer first"
        )
    if pre_hook:
        module.register_forward_pre_hook(_observer_forward_pre_hook, prepend=True)
    else:
        module.register_forward_hook(_observer_forward_hook, prepend=True)


def is_observer_hook(hook: Any) -> bool:
    """Whether ``hook`` is one of the observer hooks registered here."""
    return hook is _observer_forward_hook or hook is _observer_forward_pre_hook


def remove_observer_hooks(module: nn.Module) -> None:
    """Remove the observer hooks of ``module``, keeping all other hooks."""
    for hook_map in (module._forward_pre_hooks, module._forward_hooks):
        for handle_id in [h for h, fn in hook_map.items() if is_observer_hook(fn)]:
            del hook_map[handle_id]
