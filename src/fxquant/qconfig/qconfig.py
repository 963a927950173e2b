"""``QConfig``: which observer (or fake-quantizer) constructors quantize a layer.

A qconfig holds *constructors*, never instances: preparation builds a fresh observer for every
tensor it observes. A constructor is an observer/fake-quantize class or a ``with_args`` partial
(:class:`fxquant.observers.base._PartialWrapper`).

Two qconfigs are equal (:func:`qconfig_equals`) when their constructors build the same thing:
``functools.partial`` has no ``__eq__``, so partials are compared by their function, positional
arguments and keyword arguments instead of by identity.
"""

from __future__ import annotations

import copy
import warnings
from collections import namedtuple
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "QConfig",
    "QConfigAny",
    "QConfigDynamic",
    "qconfig_equals",
]

_INSTANCE_HINT = (
    "a qconfig holds observer constructors, not observer instances, because preparation "
    "builds a fresh observer for every tensor. Pass the class (e.g. MinMaxObserver) or a "
    "partial constructor (e.g. MinMaxObserver.with_args(dtype=torch.qint8)) instead"
)


def _reject_instance(owner: str, field: str, value: Any) -> None:
    if isinstance(value, nn.Module):
        raise ValueError(  # noqa: TRY004 - upstream raises ValueError; kept for compatibility
            f"{owner} received an instance of {type(value).__name__} as {field}: {_INSTANCE_HINT}."
        )


class QConfig(namedtuple("QConfig", ["activation", "weight"])):
    """How to quantize a layer: observer constructors for its activations and its weight.

    Each field is an observer or fake-quantize *constructor* (a class, or a partial made with
    ``with_args``), or ``None`` where a field does not apply; preparation calls it once per
    observed tensor.

    Example::

        my_qconfig = QConfig(
            activation=MinMaxObserver.with_args(dtype=torch.quint8),
            weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8),
        )

    Raises:
        ValueError: if an observer *instance* (an ``nn.Module``) is passed for either field.
    """

    __slots__ = ()

    def __new__(cls, activation: Any, weight: Any) -> Self:
        _reject_instance("QConfig", "activation", activation)
        _reject_instance("QConfig", "weight", weight)
        return super().__new__(cls, activation, weight)


class QConfigDynamic(namedtuple("QConfigDynamic", ["activation", "weight"])):
    """Deprecated: the dynamic-quantization qconfig of old releases; use :class:`QConfig`.

    Both fields default to ``torch.nn.Identity``. Constructing one emits a ``FutureWarning``.
    Like upstream, only ``weight`` is checked for being an observer instance.
    """

    __slots__ = ()

    def __new__(cls, activation: Any = nn.Identity, weight: Any = nn.Identity) -> Self:
        warnings.warn(
            "`QConfigDynamic` is going to be deprecated in PyTorch 1.12, please use `QConfig` "
            "instead",
            FutureWarning,
            stacklevel=2,
        )
        _reject_instance("QConfigDynamic", "weight", weight)
        return super().__new__(cls, activation, weight)


QConfigAny: TypeAlias = QConfig | None
"""A qconfig, or ``None`` for "leave this in float"."""


def _partial_of(ctr: Any) -> partial | None:
    """The ``functools.partial`` inside a ``with_args`` wrapper, else ``None``.

    Any object whose ``p`` attribute is a ``functools.partial`` counts, so that constructors
    built by upstream's ``with_args`` compare the same way as ours during a migration.
    """
    inner = getattr(ctr, "p", None)
    return inner if isinstance(inner, partial) else None


def _constructors_equal(ctr1: Any, ctr2: Any) -> bool:
    """Whether two observer / fake-quantize constructors build the same thing."""
    p1, p2 = _partial_of(ctr1), _partial_of(ctr2)
    if p1 is None or p2 is None:
        return bool(ctr1 == ctr2)
    return _partials_equal(p1, p2)


def _partials_equal(p1: partial, p2: partial) -> bool:
    # A fake-quantize partial carries its observer constructor as the "observer" keyword;
    # that one is itself a partial, so compare it structurally rather than by identity.
    # (Bound callables of ``with_callable_args`` are not compared, as upstream.)
    keywords1, keywords2 = copy.copy(p1.keywords), copy.copy(p2.keywords)
    observers_equal = True
    if "observer" in keywords1 and "observer" in keywords2:
        observers_equal = _constructors_equal(keywords1.pop("observer"), keywords2.pop("observer"))
    return bool(
        observers_equal and keywords1 == keywords2 and p1.func == p2.func and p1.args == p2.args
    )


def qconfig_equals(q1: QConfigAny, q2: QConfigAny) -> bool:
    """Whether two qconfigs build the same observers.

    ``None`` equals only ``None``. Constructors made with ``with_args`` are equal when they
    wrap the same function with equal arguments (the ``observer`` keyword of a fake-quantize
    constructor is compared the same way); anything else is compared with ``==``.

    >>> qconfig_equals(QConfig(MinMaxObserver.with_args(eps=1.0), None),
    ...                QConfig(MinMaxObserver.with_args(eps=1.0), None))
    True
    """
    if q1 is None or q2 is None:
        return q1 is q2
    try:
        activation_same = _constructors_equal(q1.activation, q2.activation)
        weight_same = _constructors_equal(q1.weight, q2.weight)
    except AttributeError:
        # Not qconfig-shaped (no activation/weight fields): plain equality, as upstream.
        return bool(q1 == q2)
    return activation_same and weight_same
