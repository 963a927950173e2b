"""``QuantType``: the kind of quantization a flow performs (static, dynamic, QAT, weight-only)."""

from __future__ import annotations

import enum

__all__ = ["QuantType"]


class QuantType(enum.IntEnum):
    """Which quantization a module or flow uses.

    The integer values equal upstream's (and those of the C++ enum in torch), so values stored
    by ``torch.ao.quantization`` keep their meaning.
    """

    DYNAMIC = 0
    STATIC = 1
    QAT = 2
    WEIGHT_ONLY = 3


_QUANT_TYPE_NAMES: dict[QuantType, str] = {
    QuantType.STATIC: "static",
    QuantType.DYNAMIC: "dynamic",
    QuantType.QAT: "qat",
    QuantType.WEIGHT_ONLY: "weight_only",
}


def _get_quant_type_to_str(quant_type: QuantType) -> str:
    """The lower-case name of ``quant_type`` (``QuantType.QAT`` -> ``"qat"``)."""
    return _QUANT_TYPE_NAMES[quant_type]


def _quant_type_from_str(name: str) -> QuantType:
    """The ``QuantType`` called ``name``; raises ``ValueError`` for an unknown name."""
    for quant_type, quant_name in _QUANT_TYPE_NAMES.items():
        if quant_name == name:
            return quant_type
    known = ", ".join(repr(n) for n in _QUANT_TYPE_NAMES.values())
    raise ValueError(f"Unknown QuantType name {name!r}; expected one of {known}")
