"""Saving and restoring calibration: the observer (and fake-quantizer) entries of a model's
state dict, without its weights."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from fxquant.observers.base import ObserverBase

__all__ = [
    "ObserverStateError",
    "get_observer_state_dict",
    "is_activation_post_process",
    "load_observer_state_dict",
]

# Upstream names observer/fake-quant submodules "activation_post_process" (eager, FX) or
# "...observer..." (scripted); those are the keys that belong to calibration.
_OBSERVER_KEY_MARKERS = ("activation_post_process", "observer")


class ObserverStateError(KeyError):
    """An observer state dict that does not fit the model's observers."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def is_activation_post_process(module: nn.Module) -> bool:
    """True for observers and fake-quantizers (the modules that hold calibration state)."""
    # fake_quantize and the affine observers build on this package, so they are looked up
    # here rather than imported at module level (which would be circular).
    from fxquant.fake_quantize.base import FakeQuantizeBase
    from fxquant.observers.affine import AffineQuantizedObserverBase

    return isinstance(module, (ObserverBase, FakeQuantizeBase, AffineQuantizedObserverBase))


def get_observer_state_dict(mod: nn.Module) -> OrderedDict[str, Any]:
    """The entries of ``mod.state_dict()`` that belong to observers/fake-quantizers.

    >>> torch.save(get_observer_state_dict(prepared), "calibration.pt")
    """
    full = mod.state_dict()
    od: OrderedDict[str, Any] = OrderedDict(
        (k, v) for k, v in full.items() if any(m in k for m in _OBSERVER_KEY_MARKERS)
    )
    od._metadata = getattr(full, "_metadata", None)  # type: ignore[attr-defined]  # versions
    return od


def _observers_and_their_parts(mod: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every observer of ``mod`` and every module inside one (e.g. the input statistics an
    output-aware weight observer keeps as a submodule), by qualified name."""
    found: dict[str, nn.Module] = {}
    for name, module in mod.named_modules():
        if is_activation_post_process(module):
            found.update((".".join(filter(None, (name, sub))), part)
                         for sub, part in module.named_modules())
    return list(found.items())


def load_observer_state_dict(mod: nn.Module, obs_dict: dict[str, Any]) -> None:
    """Load calibration saved by :func:`get_observer_state_dict` into ``mod``'s observers.

    Raises :class:`ObserverStateError` naming the keys if an observer's state is missing or
    the dict has observer entries the model does not have.
    """
    missing: list[str] = []
    unexpected: list[str] = []
    metadata = getattr(obs_dict, "_metadata", None) or {}
    state = dict(obs_dict)  # loaders may rename legacy keys in place; keep the caller's intact
    for name, module in _observers_and_their_parts(mod):
        prefix = f"{name}." if name else ""
        local_metadata = metadata.get(name, {})
        module._load_from_state_dict(
            state, prefix, local_metadata, True, missing, unexpected, []
        )
    known = {k for k in mod.state_dict()}
    unexpected += [
        k for k in obs_dict if k not in known and any(m in k for m in _OBSERVER_KEY_MARKERS)
    ]
    missing = [k for k in missing if any(m in k for m in _OBSERVER_KEY_MARKERS)]
    if missing:
        raise ObserverStateError(
            f"observer state dict is missing {sorted(set(missing))}; it was saved from a model "
            "with different observers (prepare the same model with the same config first)"
        )
    if unexpected:
        raise ObserverStateError(
            f"observer state dict has entries {sorted(set(unexpected))} that match no observer "
            "in the model; prepare the model with the same config it was saved from"
        )
