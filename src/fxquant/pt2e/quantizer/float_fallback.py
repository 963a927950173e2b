"""Keep chosen ops in float: a quantizer wrapper that annotates with another quantizer, then
takes the quantization off the ops you name (and says why, with a :class:`FallbackReason`).

    >>> inner = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    >>> quantizer = KeepFloatQuantizer(inner, {"blocks.0.conv_dw": FallbackReason.USER_CHOICE})
    >>> quantized = convert_pt2e(calibrate(prepare_pt2e(capture(model, example), quantizer)))

A name is either a node name of the captured graph (``"conv2d_3"``) or a module's fully
qualified name (``"blocks.0"``: every node created inside that module or its submodules).

Removing an op's annotation can leave neighbours pointing at it: a ``SharedQuantizationSpec``
that shares the removed op's output or input edge (a pool or an add after a conv, a cat). Those
neighbours keep their quantization with the spec they were sharing, now observed on their own,
so the annotated graph stays valid for the engine.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Mapping

from torch.fx import GraphModule, Node

from fxquant.pt2e.quantizer.quantizer import (
    DerivedQuantizationSpec,
    EdgeOrNode,
    QuantizationSpecBase,
    Quantizer,
    SharedQuantizationSpec,
)
from fxquant.pt2e.quantizer.utils import get_annotation, module_paths

__all__ = [
    "KEEP_FLOAT_KEY",
    "FallbackReason",
    "KeepFloatQuantizer",
    "kept_float_reason",
    "remove_quantization",
    "resolve_keep_float_names",
]

# node.meta key under which a node kept in float records its FallbackReason (it survives
# prepare and convert, so a report can say why without being told)
KEEP_FLOAT_KEY = "fxquant_keep_float"


class FallbackReason(enum.Enum):
    """Why an op runs in float in a quantized model."""

    NO_PATTERN = "no pattern"
    BACKEND_CONSTRAINT = "backend constraint"
    SPEED_PLAN = "speed plan"
    USER_CHOICE = "user choice"
    ACCURACY_BUDGET = "accuracy budget"

    def describe(self) -> str:
        """A sentence saying what the reason means."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    FallbackReason.NO_PATTERN: "No quantization pattern of the quantizer matches this op, so it runs in float.",
    FallbackReason.BACKEND_CONSTRAINT: (
        "The quantizer's configuration leaves this op unquantized (a None config for its module, "
        "type or name, or a dtype the backend cannot run)."
    ),
    FallbackReason.SPEED_PLAN: "The speed planner keeps this op in float because quantizing it would not make the model faster.",
    FallbackReason.USER_CHOICE: "You asked to keep this op in float.",
    FallbackReason.ACCURACY_BUDGET: (
        "Kept in float to meet the accuracy budget: it was among the layers whose quantization "
        "cost the most accuracy."
    ),
}


def kept_float_reason(node: Node) -> FallbackReason | None:
    """The reason :class:`KeepFloatQuantizer` recorded on ``node`` (None if it did not)."""
    reason = node.meta.get(KEEP_FLOAT_KEY)
    return reason if isinstance(reason, FallbackReason) else None


def resolve_keep_float_names(model: GraphModule, names: Iterable[str]) -> dict[str, list[Node]]:
    """``{name: nodes}`` for each name: the node of that name, else every node created inside
    the module of that fully qualified name (including submodules). Raises ``ValueError``
    listing close matches for a name that is neither."""
    by_name = {n.name: n for n in model.graph.nodes if n.op == "call_function"}
    all_paths = sorted({p for n in model.graph.nodes for p in module_paths(n) if p})
    resolved: dict[str, list[Node]] = {}
    for name in names:
        if name in by_name:
            resolved[name] = [by_name[name]]
            continue
        prefix = name + "."
        nodes = [
            n for n in by_name.values()
            if any(p == name or p.startswith(prefix) for p in module_paths(n))
        ]
        if not nodes:
            close = difflib.get_close_matches(name, list(by_name) + all_paths, n=5, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(
                f"keep_float: {name!r} is neither an op (node name) of the captured graph nor a "
                f"module path of the model{hint}. Use a node name as printed by "
                "model.graph.print_tabular() or a module name from model.named_modules()"
            )
        resolved[name] = nodes
    return resolved


class KeepFloatQuantizer(Quantizer):
    """Annotate with ``quantizer``, then leave the ops named in ``keep_float`` in float.

    ``keep_float`` maps names to the :class:`FallbackReason` (an iterable of names means
    ``USER_CHOICE``); after :meth:`annotate`, :attr:`kept_float` maps each removed node name
    to its reason.
    """

    def __init__(self, quantizer: Quantizer, keep_float: Mapping[str, FallbackReason] | Iterable[str]) -> None:
        if not isinstance(quantizer, Quantizer):
            raise TypeError(f"KeepFloatQuantizer wraps a Quantizer, got {type(quantizer).__name__}")
        if isinstance(keep_float, str):
            raise TypeError("keep_float must be a collection of names, not one string; wrap it: [name]")
        if isinstance(keep_float, Mapping):
            reasons = dict(keep_float)
        else:
            reasons = {name: FallbackReason.USER_CHOICE for name in keep_float}
        for name, reason in reasons.items():
            if not isinstance(reason, FallbackReason):
                raise TypeError(f"keep_float[{name!r}] must be a FallbackReason, got {reason!r}")
        self.quantizer = quantizer
        self.keep_float: dict[str, FallbackReason] = reasons
        self.kept_float: dict[str, FallbackReason] = {}

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        return self.quantizer.transform_for_annotation(model)

    def annotate(self, model: GraphModule) -> GraphModule:
        """Annotate with the wrapped quantizer, then strip the chosen ops' annotations."""
        model = self.quantizer.annotate(model)
        resolved = resolve_keep_float_names(model, self.keep_float)
        chosen: dict[Node, FallbackReason] = {}
        for name, nodes in resolved.items():
            for node in nodes:
                chosen.setdefault(node, self.keep_float[name])
        remove_quantization(model, chosen)
        self.kept_float = {node.name: reason for node, reason in chosen.items()}
        return model

    def validate(self, model: GraphModule) -> None:
        self.quantizer.validate(model)

    def prepare_obs_or_fq_callback(self, model: GraphModule, edge_or_node_to_obs_or_fq: dict[EdgeOrNode, object]) -> None:
        self.quantizer.prepare_obs_or_fq_callback(model, edge_or_node_to_obs_or_fq)


def _resolve(spec: QuantizationSpecBase, specs: Mapping[EdgeOrNode, QuantizationSpecBase]) -> QuantizationSpecBase | None:
    """Follow shared specs to the spec they share (None if the chain ends nowhere)."""
    seen: set[int] = set()
    while isinstance(spec, SharedQuantizationSpec):
        if id(spec) in seen or spec.edge_or_node not in specs:
            return None
        seen.add(id(spec))
        spec = specs[spec.edge_or_node]
    return spec


def _touches(site: EdgeOrNode, removed: set[Node]) -> bool:
    return site[1] in removed if isinstance(site, tuple) else site in removed


def _repair(spec: QuantizationSpecBase | None, before: Mapping[EdgeOrNode, QuantizationSpecBase],
            removed: set[Node]) -> QuantizationSpecBase | None:
    """A spec that no longer refers to a removed site: a share of one becomes the spec it
    shared; a derivation from one is dropped (that edge stays float)."""
    if isinstance(spec, SharedQuantizationSpec) and _touches(spec.edge_or_node, removed):
        return _resolve(spec, before)
    if isinstance(spec, DerivedQuantizationSpec) and any(_touches(s, removed) for s in spec.derived_from):
        return None
    return spec


def remove_quantization(model: GraphModule, chosen: Mapping[Node, FallbackReason | None]) -> None:
    """Strip the annotations of ``chosen`` nodes in place (they stay claimed so later
    quantizers leave them alone; a reason is recorded under :data:`KEEP_FLOAT_KEY`) and repair
    every spec of other nodes that pointed at them."""
    from fxquant.engine.plan import collect_site_specs  # the engine imports this package

    before = collect_site_specs(model)
    removed = set(chosen)
    for node in removed:
        if chosen[node] is not None:
            node.meta[KEEP_FLOAT_KEY] = chosen[node]
        annotation = get_annotation(node)
        if annotation is not None:
            annotation.input_qspec_map = {}
            annotation.output_qspec = None
            annotation._annotated = True
    for node in model.graph.nodes:
        annotation = get_annotation(node)
        if annotation is None or node in removed:
            continue
        annotation.input_qspec_map = {
            inp: _repair(spec, before, removed) for inp, spec in annotation.input_qspec_map.items()
        }
        annotation.output_qspec = _repair(annotation.output_qspec, before, removed)
