"""Which qconfig of a :class:`QConfigMapping` applies to a module, function or method call.

Pure functions of the mapping: nothing is mutated, nothing about a graph is needed. Each level
below takes the result of the weaker levels as its ``fallback`` and returns its own qconfig if
it has an entry, so stronger levels override weaker ones::

    global  <  object type  <  module-name regex  <  module name  <  (module name, type, index)

* object type: exact key lookup (module class, function, or method-name string);
* module-name regex: ``re.match`` against the module name, regexes in insertion order, the
  first match wins;
* module name: the name itself, else the nearest enclosing module with an entry
  (``"a.b.c"`` falls back to ``"a.b"``, then ``"a"``; the root ``""`` never matches);
* (module name, type, index): the ``index``-th call (counting from 0) of ``type`` made in the
  forward of that module.

FX graph mode uses the ``qconfig_for_*`` functions, one per node kind; they reproduce how
upstream's FX prepare combines the levels (for instance a function call inside module ``m``
also honours ``m``'s type, regex and name entries).
"""

from __future__ import annotations

import re
from typing import Any, Final

from fxquant.qconfig.mapping import ObjectType, QConfigMapping
from fxquant.qconfig.qconfig import QConfigAny

__all__ = [
    "module_name_object_type_order_qconfig",
    "module_name_qconfig",
    "module_name_regex_qconfig",
    "object_type_qconfig",
    "qconfig_for_attribute",
    "qconfig_for_function_call",
    "qconfig_for_method_call",
    "qconfig_for_module_call",
    "resolve_qconfig",
]


class _UseGlobal:
    def __repr__(self) -> str:
        return "<global qconfig>"


_USE_GLOBAL: Final = _UseGlobal()


def _parent_name(module_name: str) -> str:
    """``"a.b.c"`` -> ``"a.b"``; ``"a"`` -> ``""`` (the root)."""
    return module_name.rpartition(".")[0]


# --- one level each ---------------------------------------------------------------------------


def object_type_qconfig(
    mapping: QConfigMapping, object_type: ObjectType | None, fallback: QConfigAny
) -> QConfigAny:
    """The ``set_object_type`` entry for ``object_type``, else ``fallback``."""
    # None (no scope type) is never a key, so it falls back like any unknown type.
    return mapping.object_type_qconfigs.get(object_type, fallback)  # type: ignore[arg-type]


def module_name_regex_qconfig(
    mapping: QConfigMapping, module_name: str, fallback: QConfigAny
) -> QConfigAny:
    """The entry of the first registered regex that ``re.match``-es ``module_name``, else
    ``fallback``."""
    for regex, qconfig in mapping.module_name_regex_qconfigs.items():
        if re.match(regex, module_name):
            return qconfig
    return fallback


def module_name_qconfig(
    mapping: QConfigMapping, module_name: str, fallback: QConfigAny
) -> QConfigAny:
    """The ``set_module_name`` entry of ``module_name`` or of its nearest enclosing module,
    else ``fallback``."""
    name = module_name
    while name:
        if name in mapping.module_name_qconfigs:
            return mapping.module_name_qconfigs[name]
        name = _parent_name(name)
    return fallback


def module_name_object_type_order_qconfig(
    mapping: QConfigMapping,
    module_name: str,
    object_type: ObjectType | None,
    index: int,
    fallback: QConfigAny,
) -> QConfigAny:
    """The entry for the ``index``-th call of ``object_type`` inside ``module_name``, else
    ``fallback``."""
    wanted = (module_name, object_type, index)
    for key, qconfig in mapping.module_name_object_type_order_qconfigs.items():
        if key == wanted:
            return qconfig
    return fallback


def _type_regex_name(
    mapping: QConfigMapping, module_name: str, object_type: ObjectType | None, fallback: QConfigAny
) -> QConfigAny:
    qconfig = object_type_qconfig(mapping, object_type, fallback)
    qconfig = module_name_regex_qconfig(mapping, module_name, qconfig)
    return module_name_qconfig(mapping, module_name, qconfig)


# --- all levels -------------------------------------------------------------------------------


def resolve_qconfig(
    mapping: QConfigMapping,
    module_name: str,
    object_type: ObjectType | None,
    call_index: int | None = None,
    *,
    fallback: Any = _USE_GLOBAL,
) -> QConfigAny:
    """The qconfig that applies to ``object_type`` in the module named ``module_name``.

    Applies every level, weakest first: ``fallback`` (the mapping's global qconfig unless
    given), the ``object_type`` entry, the first regex matching ``module_name``, the entry of
    ``module_name`` or its nearest enclosing module, and, when ``call_index`` is given, the
    ``(module_name, object_type, call_index)`` entry.

    Args:
        mapping: the qconfig mapping.
        module_name: fully qualified module name (``"encoder.layer.0"``; ``""`` is the root).
        object_type: a module class, a function, or a method-name string.
        call_index: which call of ``object_type`` inside ``module_name`` this is (from 0), or
            ``None`` to skip the order level.
        fallback: the qconfig where no entry matches (default: ``mapping.global_qconfig``).

    Example::

        mapping = QConfigMapping().set_global(q0).set_module_name("enc", q1)
        resolve_qconfig(mapping, "enc.fc", torch.nn.Linear)   # q1
        resolve_qconfig(mapping, "dec.fc", torch.nn.Linear)   # q0
    """
    qconfig = mapping.global_qconfig if fallback is _USE_GLOBAL else fallback
    qconfig = _type_regex_name(mapping, module_name, object_type, qconfig)
    if call_index is not None:
        qconfig = module_name_object_type_order_qconfig(
            mapping, module_name, object_type, call_index, qconfig
        )
    return qconfig


# --- per FX node kind -------------------------------------------------------------------------


def qconfig_for_module_call(
    mapping: QConfigMapping, module_name: str, module_type: type, call_index: int
) -> QConfigAny:
    """Qconfig of a call to the submodule ``module_name`` (FX ``call_module``).

    Type, regex and name levels use the submodule's own name; the order level counts calls
    of ``module_type`` in the *parent* module, whose forward makes the call: ``call_index`` is
    the number of earlier ``module_type`` calls there.
    """
    qconfig = _type_regex_name(mapping, module_name, module_type, mapping.global_qconfig)
    return module_name_object_type_order_qconfig(
        mapping, _parent_name(module_name), module_type, call_index, qconfig
    )


def qconfig_for_function_call(
    mapping: QConfigMapping,
    function: ObjectType,
    scope_name: str,
    scope_type: type | None,
    call_index: int,
) -> QConfigAny:
    """Qconfig of a call to ``function`` made in the forward of module ``scope_name``
    (FX ``call_function``).

    Weakest first: global, the function's entry, the *scope module's* type entry, regex and
    name entries, then the ``(scope_name, function, call_index)`` entry.
    """
    qconfig = object_type_qconfig(mapping, function, mapping.global_qconfig)
    qconfig = _type_regex_name(mapping, scope_name, scope_type, qconfig)
    return module_name_object_type_order_qconfig(mapping, scope_name, function, call_index, qconfig)


def qconfig_for_method_call(
    mapping: QConfigMapping, method_name: str, scope_name: str, scope_type: type | None
) -> QConfigAny:
    """Qconfig of a tensor method call (``x.reshape(...)``) in module ``scope_name``
    (FX ``call_method``).

    The method name's entry (e.g. ``"reshape"``) with the scope's regex and name entries
    first, then the scope module's type, regex and name entries on top. There is no order
    level for method calls.
    """
    qconfig = _type_regex_name(mapping, scope_name, method_name, mapping.global_qconfig)
    return _type_regex_name(mapping, scope_name, scope_type, qconfig)


def qconfig_for_attribute(
    mapping: QConfigMapping, owner_name: str, owner_type: type | None
) -> QConfigAny:
    """Qconfig of a parameter or buffer of module ``owner_name`` (FX ``get_attr``)."""
    return _type_regex_name(mapping, owner_name, owner_type, mapping.global_qconfig)
