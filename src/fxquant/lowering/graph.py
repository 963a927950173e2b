"""Small graph accessors shared by the lowering rules: typed node metadata for int8 values,
constant lookup, attribute registration and dead-code removal.

A node whose value is a torch quantized tensor (``torch.quint8`` / ``torch.qint8`` /
``torch.qint32``) carries
its quantization parameters as one :class:`QTensorMeta` under one meta key; the rules read and
write it only through :func:`qmeta` and :func:`set_qmeta`.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from typing import Any

import torch
from torch.fx import GraphModule, Node

__all__ = [
    "QTensorMeta",
    "add_constant",
    "constant_value",
    "eliminate_dead_code",
    "qmeta",
    "set_qmeta",
]

_META_KEY = "fxquant_qtensor"
_counter = itertools.count()
_RANGES = {torch.quint8: (0, 255), torch.qint8: (-128, 127), torch.qint32: (-(2**31), 2**31 - 1)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class QTensorMeta:
    """Per-tensor affine parameters of a node whose value is a quantized torch tensor."""

    scale: float
    zero_point: int
    dtype: torch.dtype  # torch.quint8, torch.qint8 or torch.qint32

    def __post_init__(self) -> None:
        if self.dtype not in _RANGES:
            raise ValueError(
                f"QTensorMeta dtype must be torch.quint8, torch.qint8 or torch.qint32, got {self.dtype}"
            )
        if not self.scale > 0:
            raise ValueError(f"QTensorMeta scale must be positive, got {self.scale}")

    @property
    def qmin(self) -> int:
        return _RANGES[self.dtype][0]

    @property
    def qmax(self) -> int:
        return _RANGES[self.dtype][1]

    def quantize(self, value: float) -> int:
        """``clamp(round(value / scale) + zero_point, qmin, qmax)``, as a Python int."""
        q = round(value / self.scale) + self.zero_point
        return max(self.qmin, min(self.qmax, q))


def qmeta(node: object) -> QTensorMeta | None:
    """The quantization parameters of ``node``'s value if it is a quantized tensor, else None."""
    if not isinstance(node, Node):
        return None
    meta = node.meta.get(_META_KEY)
    return meta if isinstance(meta, QTensorMeta) else None


def set_qmeta(node: Node, meta: QTensorMeta) -> Node:
    """Record that ``node`` computes a quantized tensor with ``meta``'s parameters."""
    node.meta[_META_KEY] = meta
    return node


def constant_value(gm: GraphModule, node: object) -> torch.Tensor | None:
    """The tensor held by a ``get_attr`` node (a frozen weight, a scale), else None."""
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    value: Any = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def add_constant(
    gm: GraphModule, prefix: str, value: object, before: Node, *, upstream_name: bool = False
) -> Node:
    """Store ``value`` (a tensor or packed weights) as a new attribute of ``gm`` and return a
    ``get_attr`` node reading it, inserted before ``before``. The attribute is named
    ``_fxquant_<prefix>_<n>``, or with ``upstream_name`` ``<prefix><i>`` for the first free
    ``i`` (``_packed_weight_0``, as upstream's FX lowering names packed weights)."""
    if upstream_name:
        i = 0
        while hasattr(gm, f"{prefix}{i}"):
            i += 1
        name = f"{prefix}{i}"
    else:
        name = f"_fxquant_{prefix}_{next(_counter)}"
        while hasattr(gm, name):
            name = f"_fxquant_{prefix}_{next(_counter)}"
    if isinstance(value, torch.Tensor):
        gm.register_buffer(name, value)
    else:
        setattr(gm, name, value)
    with gm.graph.inserting_before(before), warnings.catch_warnings():
        # fx warns about attributes that are not parameters/buffers/modules (packed weights)
        warnings.filterwarnings("ignore", message=r"Attempted to insert a get_attr Node")
        return gm.graph.get_attr(name)


def eliminate_dead_code(gm: GraphModule, *, keep_module_calls: bool = True) -> None:
    """Remove nodes whose values nobody reads (the float ops a rule replaced), keeping
    placeholders, outputs, impure ops and, with ``keep_module_calls``, module calls (export's
    shape guards; an FX graph's unread module calls are dead like any other op); then drop
    attributes no node reads any more (int8 weights now held in packed form)."""
    kept = ("placeholder", "output", "call_module") if keep_module_calls else ("placeholder", "output")
    gm.graph.eliminate_dead_code(is_impure_node=lambda n: n.op in kept or n.is_impure())
    read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    for name in list(gm._buffers):
        if name.startswith("_fxquant_") and name not in read:
            del gm._buffers[name]
    for name in [k for k in vars(gm) if k.startswith("_fxquant_") and k not in read]:
        delattr(gm, name)
