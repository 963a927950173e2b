"""The planner's view of an annotated graph: quantized *units* and the tensors between them.

A unit is one op the quantizer would run in int8 — an *anchor* node whose inputs are
quantized (a conv, a linear, an add, a pool) together with the post-ops fused into it (a
relu/hardtanh the quantizer claimed in the same pattern, with no quantization of its own).
The planner decides per unit: int8 or float. A :class:`TensorFlow` is one tensor produced by
a unit or by a float node and read quantized by at least one unit; it is where quantize and
dequantize boundaries are paid.

Pure analysis: nothing here mutates the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.rules.boundaries import COMMUTING_OPS, is_eval_dropout
from fxquant.pt2e.quantizer.quantizer import QuantizationSpec, QuantizationSpecBase
from fxquant.pt2e.quantizer.utils import get_annotation, module_path

__all__ = ["PASSTHROUGH_OPS", "OpUnit", "TensorFlow", "UnitGraph", "find_units", "module_path"]


@dataclass(frozen=True, kw_only=True)
class OpUnit:
    """One int8 candidate: ``anchor`` (the node a fallback names) plus fused ``post_ops``.

    ``activation_inputs`` are the anchor's quantized activation inputs (not weights/bias,
    which are constants quantized once at convert); ``output`` is the last node of the unit.
    ``dynamic`` is True when activations are quantized at run time (dynamic linear).
    ``passthrough`` marks an unannotated op that commutes with quantization (zero pad,
    max pool, reshapes, eval dropout): the int8 lowering runs it on int8 values when its
    reader is int8 (the quantize moves before it), so it has no boundary of its own; the
    planner costs it like a unit but it is never named in a fallback. ``needs_int8_reader``:
    the lowering runs it in int8 only when its output is quantized for every reader, which
    (no output spec of its own) needs every reader annotated to take it as int8."""

    anchor: Node
    post_ops: tuple[Node, ...]
    activation_inputs: tuple[Node, ...]
    dynamic: bool
    passthrough: bool = False
    needs_int8_reader: bool = False

    @property
    def name(self) -> str:
        return self.anchor.name

    @property
    def output(self) -> Node:
        return self.post_ops[-1] if self.post_ops else self.anchor

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.anchor, *self.post_ops)


@dataclass(frozen=True, kw_only=True)
class TensorFlow:
    """A tensor (the output of node ``tensor``, of ``shape``) read quantized by the units
    ``quantized_readers``.

    ``producer_unit`` is the unit whose output it is (None: a float node or a graph input).
    ``float_readers`` is True when something also reads it in float (a float op, the graph
    output), so an int8 producer must dequantize it whatever the readers decide."""

    tensor: str
    shape: tuple[int, ...]
    producer_unit: str | None
    quantized_readers: tuple[str, ...]
    float_readers: bool


@dataclass(frozen=True, kw_only=True)
class UnitGraph:
    """Units in topological order and the tensors flowing between them.

    ``follows`` maps each pass-through unit to the unit reading its output, whose int8/float
    decision it shares, or to None when a float op reads it (it then stays float)."""

    units: tuple[OpUnit, ...]
    flows: tuple[TensorFlow, ...]
    float_nodes: tuple[Node, ...]
    follows: dict[str, str | None] = field(default_factory=dict)

    def unit(self, name: str) -> OpUnit:
        for u in self.units:
            if u.name == name:
                return u
        raise KeyError(f"no quantized unit named {name!r}; units: {[u.name for u in self.units]}")


aten = torch.ops.aten


def _is_constant(node: Node) -> bool:
    """A get_attr (weight/bias) or a parameter placeholder lifted by export."""
    if node.op == "get_attr":
        return True
    return node.op == "placeholder" and isinstance(node.meta.get("val"), torch.nn.Parameter)


# Ops the int8 lowering runs on int8 values (its sink_quantize and dropout_eval rules): the same
# table, so that the plan and the lowering agree.
PASSTHROUGH_OPS: dict[Any, Callable[[Node], bool]] = {
    **COMMUTING_OPS,
    aten.dropout.default: is_eval_dropout,
}


def _passthrough_input(node: Node) -> Node | None:
    """The tensor input of a pass-through op with a single reader, else None."""
    condition = PASSTHROUGH_OPS.get(node.target)
    if condition is None or not condition(node) or len(node.users) != 1 or get_annotation(node) is not None:
        return None
    source = node.args[0] if node.args else None
    return source if isinstance(source, Node) and _is_tensor(source) else None


def _is_tensor(node: Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def _quantized_inputs(node: Node) -> dict[Node, QuantizationSpecBase]:
    annotation = get_annotation(node)
    if annotation is None:
        return {}
    return {inp: spec for inp, spec in annotation.input_qspec_map.items() if spec is not None}


def _is_dynamic(spec: QuantizationSpecBase) -> bool:
    return isinstance(spec, QuantizationSpec) and spec.is_dynamic


def _fused_source(node: Node, specs: dict[Node, QuantizationSpecBase], tails: dict[Node, str]) -> Node | None:
    """The unit output ``node`` is fused onto, if any: claimed by the quantizer, reading the
    current last node of a unit (its only reader) through an edge it does not quantize —
    conv → relu, conv → add(·, residual) in the X86 patterns."""
    if get_annotation(node) is None:
        return None
    for arg in node.all_input_nodes:
        if arg in tails and arg not in specs and len(arg.users) == 1:
            return arg
    return None


# anchors with an int8 kernel that writes float output (fxquant.lowering's linear_float_out)
_FLOAT_OUTPUT_KERNELS = frozenset({aten.linear.default})


def _needs_int8_reader(anchor: Node, output: Node, dynamic: bool) -> bool:
    annotation = get_annotation(output)
    has_output_spec = annotation is not None and annotation.output_qspec is not None
    return not (dynamic or has_output_spec or anchor.target in _FLOAT_OUTPUT_KERNELS)


def _group_units(gm: GraphModule) -> list[OpUnit]:
    units: list[OpUnit] = []  # pass-through units; annotated ones are built at the end
    tails: dict[Node, str] = {}  # current last node of each unit -> unit name
    members: dict[str, list[Node]] = {}
    inputs: dict[str, list[Node]] = {}
    dynamic: dict[str, bool] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        specs = _quantized_inputs(node)
        annotation = get_annotation(node)
        activations = [inp for inp in specs if not _is_constant(inp)]
        source = _fused_source(node, specs, tails)
        through = _passthrough_input(node) if source is None and not specs else None
        if through is not None:
            units.append(OpUnit(anchor=node, post_ops=(), activation_inputs=(through,), dynamic=False,
                                passthrough=True))
            continue
        if source is not None:
            name = tails.pop(source)
        elif specs or (annotation is not None and annotation.output_qspec is not None):
            name = node.name
            members[name], inputs[name], dynamic[name] = [], [], False
        else:
            continue
        members[name].append(node)
        inputs[name].extend(activations)
        dynamic[name] = dynamic[name] or any(_is_dynamic(specs[a]) for a in activations)
        tails[node] = name
    units += [
        OpUnit(anchor=ms[0], post_ops=tuple(ms[1:]), activation_inputs=tuple(inputs[n]), dynamic=dynamic[n],
               needs_int8_reader=_needs_int8_reader(ms[0], ms[-1], dynamic[n]))
        for n, ms in members.items()
    ]
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    return sorted(units, key=lambda u: order[u.anchor])


def _quantized_edges(units: list[OpUnit]) -> set[tuple[Node, Node]]:
    """(producer, reader) edges a unit reads as int8 when it runs in int8."""
    edges = set()
    for u in units:
        if u.passthrough:
            edges.add((u.activation_inputs[0], u.anchor))
        for node in u.nodes:
            edges.update((inp, node) for inp in _quantized_inputs(node))
    return edges


def find_units(gm: GraphModule) -> UnitGraph:
    """The units of an annotated graph and the tensor flows that connect them.

    >>> ug = find_units(annotated_gm)      # after quantizer.annotate(gm)
    >>> [u.name for u in ug.units][:3]
    ['conv2d', 'conv2d_1', 'conv2d_2']
    """
    units = _group_units(gm)
    output_of = {u.output: u.name for u in units}
    member = {n for u in units for n in u.nodes}
    quantized_edges = _quantized_edges(units)
    readers: dict[Node, list[str]] = {}
    for u in units:
        for inp in u.activation_inputs:
            readers.setdefault(inp, []).append(u.name)
    # an int8 unit whose output nobody reads quantized still pays a dequantize when int8
    for u in units:
        readers.setdefault(u.output, [])
    flows = tuple(
        TensorFlow(
            tensor=producer.name,
            shape=tuple(producer.meta["val"].shape),
            producer_unit=output_of.get(producer),
            quantized_readers=tuple(dict.fromkeys(names)),
            float_readers=any((producer, user) not in quantized_edges for user in producer.users),
        )
        for producer, names in readers.items()
    )
    float_nodes = tuple(
        n for n in gm.graph.nodes if n.op == "call_function" and n not in member and _is_tensor(n)
    )
    return UnitGraph(units=tuple(units), flows=flows, float_nodes=float_nodes,
                     follows=_follows(units, quantized_edges))


def _follows(units: list[OpUnit], quantized_edges: set[tuple[Node, Node]]) -> dict[str, str | None]:
    """The lowering moves a quantize before a pass-through op only when its one reader reads
    it as int8: the op is int8 exactly when that reader is."""
    unit_of = {n: u.name for u in units for n in u.nodes}
    follows: dict[str, str | None] = {}
    for u in units:
        if u.passthrough:
            (reader,) = u.anchor.users
            follows[u.name] = unit_of.get(reader) if (u.anchor, reader) in quantized_edges else None
    return follows
