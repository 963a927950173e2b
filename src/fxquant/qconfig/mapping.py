"""``QConfigMapping``: which qconfig applies to which part of a model.

Five styles of entry, from weakest to strongest match (a stronger one overrides):

====  ======================================  =========================================
 #     set with                                matches
====  ======================================  =========================================
 1     ``set_global``                          everything
 2     ``set_object_type``                     a module class, a function, a method name
 3     ``set_module_name_regex``               module names (``re.match``), first wins
 4     ``set_module_name``                     a module and its submodules
 5     ``set_module_name_object_type_order``   the n-th call of a type inside a module
====  ======================================  =========================================

The mapping only stores entries; :mod:`fxquant.qconfig.resolve` decides what applies where.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeAlias

from fxquant.qconfig.qconfig import QConfigAny

__all__ = [
    "GLOBAL_DICT_KEY",
    "MODULE_NAME_DICT_KEY",
    "MODULE_NAME_OBJECT_TYPE_ORDER_DICT_KEY",
    "MODULE_NAME_REGEX_DICT_KEY",
    "OBJECT_TYPE_DICT_KEY",
    "ObjectType",
    "QConfigMapping",
]

ObjectType: TypeAlias = Callable[..., Any] | str
"""A module class, a function (``torch.add``, ``F.linear``) or a method name (``"reshape"``)."""

# Keys of the legacy ``qconfig_dict`` format (``to_dict`` / ``from_dict``).
GLOBAL_DICT_KEY = ""
OBJECT_TYPE_DICT_KEY = "object_type"
MODULE_NAME_REGEX_DICT_KEY = "module_name_regex"
MODULE_NAME_DICT_KEY = "module_name"
MODULE_NAME_OBJECT_TYPE_ORDER_DICT_KEY = "module_name_object_type_order"

_DICT_KEYS = (
    GLOBAL_DICT_KEY,
    OBJECT_TYPE_DICT_KEY,
    MODULE_NAME_REGEX_DICT_KEY,
    MODULE_NAME_DICT_KEY,
    MODULE_NAME_OBJECT_TYPE_ORDER_DICT_KEY,
)

# Attribute names, weakest match first (also the order of ``__repr__``).
_STYLE_ORDER = (
    "global_qconfig",
    "object_type_qconfigs",
    "module_name_regex_qconfigs",
    "module_name_qconfigs",
    "module_name_object_type_order_qconfigs",
)


class QConfigMapping:
    """Maps parts of a model to :class:`~fxquant.qconfig.QConfig` s.

    Every setter returns the mapping, so calls chain; setting an existing key again replaces
    its qconfig but keeps the key's original position. A qconfig of ``None`` means "keep this
    part in float".

    Example::

        qconfig_mapping = (
            QConfigMapping()
            .set_global(global_qconfig)
            .set_object_type(torch.nn.Linear, qconfig1)
            .set_module_name_regex("foo.*bar.*conv[0-9]+", qconfig1)
            .set_module_name("module1", None)
            .set_module_name_object_type_order("foo.bar", torch.nn.functional.linear, 0, qconfig3)
        )
    """

    def __init__(self) -> None:
        self.global_qconfig: QConfigAny = None
        self.object_type_qconfigs: OrderedDict[ObjectType, QConfigAny] = OrderedDict()
        self.module_name_regex_qconfigs: OrderedDict[str, QConfigAny] = OrderedDict()
        self.module_name_qconfigs: OrderedDict[str, QConfigAny] = OrderedDict()
        self.module_name_object_type_order_qconfigs: OrderedDict[
            tuple[str, ObjectType, int], QConfigAny
        ] = OrderedDict()

    def set_global(self, global_qconfig: QConfigAny) -> QConfigMapping:
        """Set the qconfig used where nothing more specific matches."""
        self.global_qconfig = global_qconfig
        return self

    def set_object_type(self, object_type: ObjectType, qconfig: QConfigAny) -> QConfigMapping:
        """Set the qconfig of a module class, a function, or a method name such as ``"reshape"``."""
        self.object_type_qconfigs[object_type] = qconfig
        return self

    def set_module_name_regex(self, module_name_regex: str, qconfig: QConfigAny) -> QConfigMapping:
        """Set the qconfig of modules whose name matches ``module_name_regex`` (``re.match``).

        Regexes are tried in the order they were first registered and the first match wins, so
        register specific patterns before general ones::

            mapping.set_module_name_regex("foo.*bar.*conv[0-9]+", qconfig1)  # foo.bar.conv0
            mapping.set_module_name_regex("foo.*bar.*", qconfig2)            # foo.bar.linear
            mapping.set_module_name_regex("foo.*", qconfig3)                 # foo.baz.relu
        """
        self.module_name_regex_qconfigs[module_name_regex] = qconfig
        return self

    def set_module_name(self, module_name: str, qconfig: QConfigAny) -> QConfigMapping:
        """Set the qconfig of the module ``module_name`` and everything inside it."""
        self.module_name_qconfigs[module_name] = qconfig
        return self

    def set_module_name_object_type_order(
        self, module_name: str, object_type: ObjectType, index: int, qconfig: QConfigAny
    ) -> QConfigMapping:
        """Set the qconfig of the ``index``-th call (from 0) of ``object_type`` inside
        ``module_name``."""
        self.module_name_object_type_order_qconfigs[(module_name, object_type, index)] = qconfig
        return self

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for style in _STYLE_ORDER:
            lines.append(f" {style}")
            entries = getattr(self, style)
            if isinstance(entries, OrderedDict) and entries:
                lines.extend(f"  {key}: {qconfig}" for key, qconfig in entries.items())
            else:
                lines.append(f"  {entries}")
        return "\n".join(lines) + "\n)"

    def to_dict(self) -> dict[str, Any]:
        """This mapping in the legacy ``qconfig_dict`` format.

        Keys: ``""`` (the global qconfig), ``"object_type"``, ``"module_name_regex"``,
        ``"module_name"`` (lists of ``(key, qconfig)`` pairs) and
        ``"module_name_object_type_order"`` (a list of ``(module_name, object_type, index,
        qconfig)`` tuples), each list in insertion order.
        """
        return {
            GLOBAL_DICT_KEY: self.global_qconfig,
            OBJECT_TYPE_DICT_KEY: list(self.object_type_qconfigs.items()),
            MODULE_NAME_REGEX_DICT_KEY: list(self.module_name_regex_qconfigs.items()),
            MODULE_NAME_DICT_KEY: list(self.module_name_qconfigs.items()),
            MODULE_NAME_OBJECT_TYPE_ORDER_DICT_KEY: [
                (*key, qconfig)
                for key, qconfig in self.module_name_object_type_order_qconfigs.items()
            ],
        }

    @classmethod
    def from_dict(cls, qconfig_dict: dict[str, Any]) -> QConfigMapping:
        """Build a mapping from the legacy ``qconfig_dict`` format (see :meth:`to_dict`).

        Every key is optional.

        Raises:
            ValueError: for a key that is not one of the five above (upstream silently ignores
                it, which hides typos such as ``"module_names"``).
        """
        unknown = [key for key in qconfig_dict if key not in _DICT_KEYS]
        if unknown:
            raise ValueError(
                f"qconfig_dict has unknown key(s) {unknown}; the valid keys are "
                f'{list(_DICT_KEYS)} ("" is the global qconfig)'
            )
        mapping = cls()
        if GLOBAL_DICT_KEY in qconfig_dict:
            mapping.set_global(qconfig_dict[GLOBAL_DICT_KEY])
        for object_type, qconfig in qconfig_dict.get(OBJECT_TYPE_DICT_KEY, []):
            mapping.set_object_type(object_type, qconfig)
        for regex, qconfig in qconfig_dict.get(MODULE_NAME_REGEX_DICT_KEY, []):
            mapping.set_module_name_regex(regex, qconfig)
        for module_name, qconfig in qconfig_dict.get(MODULE_NAME_DICT_KEY, []):
            mapping.set_module_name(module_name, qconfig)
        for module_name, object_type, index, qconfig in qconfig_dict.get(
            MODULE_NAME_OBJECT_TYPE_ORDER_DICT_KEY, []
        ):
            mapping.set_module_name_object_type_order(module_name, object_type, index, qconfig)
        return mapping
