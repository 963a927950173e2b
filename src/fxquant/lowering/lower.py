"""The one loop of the lowering: apply the rule table to a converted (q/dq) graph.

    >>> q = convert_pt2e(prepared)
    >>> fast = lower_to_int8(q)
    >>> fast(x)                     # quantized::conv2d / linear / add ... on quint8 tensors
    >>> print(lowering_report(fast))

:func:`apply_rules` applies the rules of :data:`fxquant.lowering.table.INT8_RULES` that serve
one graph dialect, stage by stage, each stage to a fixed point; the float ops a rewrite
consumed are removed as dead code. :func:`lower_to_int8` runs it on ``convert_pt2e``'s
exported graphs, ``convert_fx`` on its reference graphs (through
``fxquant.fx.lower.lower_to_quantized_modules``). What no rule matches keeps its reference
(q/dq + float) form, so the numbers are never wrong, only slower; the report lists both.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import eliminate_dead_code, qmeta
from fxquant.lowering.rule import Dialect, LoweringRule, is_dequantize
from fxquant.lowering.table import INT8_RULES

__all__ = ["LoweringReport", "apply_rules", "lower_to_int8", "lowering_report", "record_report"]

logger = logging.getLogger(__name__)
A = torch.ops.aten
_REPORT_KEY = "fxquant_lowering_report"
_BOUNDARY_OPS = {A.quantize_per_tensor.default, A.dequantize.self, torch.quantize_per_tensor}
_ANCHORED_OPS = ("call_function", "call_module")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoweringReport:
    """What the lowering did: how often each rule fired, and the float ops that read a
    dequantized int8 value (where the graph returns to float)."""

    applied: tuple[tuple[str, int], ...]
    float_ops_after_int8: tuple[tuple[str, int], ...]
    int8_kernels: int

    def __str__(self) -> str:
        lines = [f"int8 lowering: {self.int8_kernels} int8 kernel calls"]
        lines += [f"  rule {name:24s} x{count}" for name, count in self.applied]
        if self.float_ops_after_int8:
            lines.append("  left in float (reading dequantized int8 values):")
            lines += [f"    {op:40s} x{count}" for op, count in self.float_ops_after_int8]
        return "\n".join(lines)


def lower_to_int8(
    model: GraphModule, *, inplace: bool = False, rules: Sequence[LoweringRule] = INT8_RULES
) -> GraphModule:
    """Lower a converted q/dq graph (``convert_pt2e``'s output) to torch's quantized CPU
    kernels: int8 regions run on ``torch.quint8`` tensors with pre-packed weights, and values
    are dequantized only where a float op reads them. ``model`` is copied unless
    ``inplace``. The result runs eagerly; :func:`lowering_report` says what was lowered.

        >>> fast = lower_to_int8(convert_pt2e(prepared))
        >>> torch.testing.assert_close(fast(x), reference(x), atol=step, rtol=0)
    """
    if not isinstance(model, GraphModule):
        raise TypeError(
            f"lower_to_int8 expects the GraphModule returned by convert_pt2e, got "
            f"{type(model).__name__}; capture and convert the model first"
        )
    gm = model if inplace else copy.deepcopy(model)
    applied = apply_rules(gm, Dialect.PT2E, rules)
    gm.graph.lint()
    _share_packed_weights_on_copy(gm)  # before recompile, which binds forward to the class
    gm.recompile()
    record_report(gm, applied)
    return gm


def _share_packed_weights_on_copy(gm: GraphModule) -> None:
    """Make ``copy.deepcopy(gm)`` share ``gm``'s packed weights instead of re-packing them.

    torch's packed weights copy through their pickled form, which re-packs them for whatever
    quantized engine is selected at copy time: a model packed for oneDNN would come back with,
    e.g., fbgemm's depthwise kernels (slower here, and not the same integers). Packed weights
    are never modified in place, so the copy shares them, as a deep copy shares other
    immutable values."""
    # the class GraphModule's constructor derives a per-instance class from; the subclass
    # below is re-derived the same way by every copy, and recompile binds forward to it
    base = next(c for c in type(gm).__mro__ if c.__qualname__.split(".")[-1] != "GraphModuleImpl")

    def __deepcopy__(self: GraphModule, memo: dict[int, object]) -> GraphModule:
        for value in vars(self).values():
            if isinstance(value, torch.ScriptObject):
                memo[id(value)] = value
        return base.__deepcopy__(self, memo)  # type: ignore[attr-defined]  # GraphModule's

    lowered = type(f"Lowered{base.__name__}", (base,), {"__deepcopy__": __deepcopy__})
    # recompile binds __call__ to the instance's class: it must be a per-instance class, as
    # GraphModule's own constructor makes, or a copy's call would recurse through ours
    gm.__class__ = type("GraphModuleImpl", (lowered,), {})


def apply_rules(
    gm: GraphModule, dialect: Dialect, rules: Sequence[LoweringRule] = INT8_RULES
) -> Counter[str]:
    """Apply the rules of ``rules`` serving ``dialect`` to ``gm`` in place, stage by stage,
    each stage to a fixed point; returns how often each rule fired. The caller lints and
    recompiles (and may call :func:`record_report`)."""
    applied: Counter[str] = Counter()
    selected = [rule for rule in rules if dialect in rule.dialects]
    keep_module_calls = dialect is Dialect.PT2E  # an FX graph's dead module calls are dead code
    for stage in sorted({rule.stage for rule in selected}):
        by_anchor: dict[object, list[LoweringRule]] = {}
        for rule in selected:
            if rule.stage == stage:
                for anchor in rule.anchors:
                    by_anchor.setdefault(anchor, []).append(rule)
        while _apply_once(gm, by_anchor, applied, keep_module_calls):
            pass
    return applied


def record_report(gm: GraphModule, applied: Counter[str]) -> LoweringReport:
    """Build the :class:`LoweringReport` of the lowered ``gm`` from the rule counts
    :func:`apply_rules` returned, and keep it with ``gm`` for :func:`lowering_report`."""
    report = _report(gm, applied)
    gm.meta[_REPORT_KEY] = report
    logger.info("%s", report)
    return report


def lowering_report(model: GraphModule) -> LoweringReport:
    """The :class:`LoweringReport` of a model returned by :func:`lower_to_int8` or by
    ``convert_fx``."""
    if not isinstance(model, GraphModule):
        raise TypeError(f"lowering_report expects a GraphModule, got {type(model).__name__}")
    if _REPORT_KEY not in model.meta:
        raise ValueError("this model was not produced by lower_to_int8 or convert_fx; lower it first")
    report = model.meta[_REPORT_KEY]
    assert isinstance(report, LoweringReport)  # only record_report writes this key
    return report


def _anchor(gm: GraphModule, node: Node) -> object:
    """What rules are anchored on: a call's target, or a module call's module class."""
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target)))
    return node.target


def _apply_once(
    gm: GraphModule, by_anchor: dict[object, list[LoweringRule]], applied: Counter[str], keep_module_calls: bool
) -> bool:
    """One pass over the graph (linear in its size); True if any rule fired."""
    fired = False
    for node in list(gm.graph.nodes):
        if node._erased or node.op not in _ANCHORED_OPS:
            continue  # erased by an earlier rewrite in this pass
        for rule in by_anchor.get(_anchor(gm, node), ()):
            match = rule.match(node, gm)
            if match is None:
                continue
            with gm.graph.inserting_before(node):
                new = rule.rewrite(node, match, gm)
            if new is not node:  # else rewritten in place
                new.meta.setdefault("stack_trace", node.meta.get("stack_trace"))
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
            applied[rule.name] += 1
            fired = True
            break
    if fired:
        eliminate_dead_code(gm, keep_module_calls=keep_module_calls)
    return fired


def _op_name(gm: GraphModule, node: Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    return str(node.target)


def _report(gm: GraphModule, applied: Counter[str]) -> LoweringReport:
    left: Counter[str] = Counter()
    kernels = 0
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method", "call_module") or is_dequantize(node):
            continue
        if qmeta(node) is not None and node.target not in _BOUNDARY_OPS:
            kernels += 1
        if node.target not in _BOUNDARY_OPS and any(is_dequantize(a) for a in node.all_input_nodes):
            left[_op_name(gm, node)] += 1
    return LoweringReport(
        applied=tuple(sorted(applied.items())),
        float_ops_after_int8=tuple(sorted(left.items())),
        int8_kernels=kernels,
    )
