"""``lower_to_int8``: apply the int8 lowering table to a converted (q/dq) graph.

    >>> q = convert_pt2e(prepared)
    >>> fast = lower_to_int8(q)
    >>> fast(x)                     # quantized::conv2d / linear / add ... on quint8 tensors
    >>> print(lowering_report(fast))

One loop applies :data:`fxquant.lowering.table.INT8_RULES` stage by stage, each stage to a
fixed point; the float ops a rewrite consumed are removed as dead code. What no rule matches
keeps its reference (q/dq + float) form, so the numbers are never wrong, only slower; the
report lists both.
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
from fxquant.lowering.rule import LoweringRule
from fxquant.lowering.table import INT8_RULES

__all__ = ["LoweringReport", "lower_to_int8", "lowering_report"]

logger = logging.getLogger(__name__)
A = torch.ops.aten
_REPORT_KEY = "fxquant_lowering_report"
_BOUNDARY_OPS = {A.quantize_per_tensor.default, A.dequantize.self}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoweringReport:
    """What :func:`lower_to_int8` did: how often each rule fired, and the float ops that read
    a dequantized int8 value (where the graph returns to float)."""

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
    applied: Counter[str] = Counter()
    for stage in sorted({rule.stage for rule in rules}):
        stage_rules = [rule for rule in rules if rule.stage == stage]
        while _apply_once(gm, stage_rules, applied):
            pass
    gm.graph.lint()
    gm.recompile()
    report = _report(gm, applied)
    gm.meta[_REPORT_KEY] = report
    logger.info("%s", report)
    return gm


def lowering_report(model: GraphModule) -> LoweringReport:
    """The :class:`LoweringReport` of a model returned by :func:`lower_to_int8`."""
    if not isinstance(model, GraphModule):
        raise TypeError(f"lowering_report expects a GraphModule, got {type(model).__name__}")
    if _REPORT_KEY not in model.meta:
        raise ValueError("this model was not produced by lower_to_int8; lower it first")
    report = model.meta[_REPORT_KEY]
    assert isinstance(report, LoweringReport)  # only lower_to_int8 writes this key
    return report


def _apply_once(gm: GraphModule, rules: list[LoweringRule], applied: Counter[str]) -> bool:
    """One pass over the graph; True if any rule fired."""
    fired = False
    for node in list(gm.graph.nodes):
        if node._erased or node.op != "call_function":
            continue  # erased by an earlier rewrite in this pass
        for rule in rules:
            if node.target not in rule.anchors:
                continue
            match = rule.match(node, gm)
            if match is None:
                continue
            with gm.graph.inserting_before(node):
                new = rule.rewrite(node, match, gm)
            new.meta.setdefault("stack_trace", node.meta.get("stack_trace"))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            applied[rule.name] += 1
            fired = True
            break
    if fired:
        eliminate_dead_code(gm)
    return fired


def _report(gm: GraphModule, applied: Counter[str]) -> LoweringReport:
    left: Counter[str] = Counter()
    kernels = 0
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if qmeta(node) is not None and node.target not in _BOUNDARY_OPS:
            kernels += 1
        if node.target not in _BOUNDARY_OPS and any(
            isinstance(a, Node) and a.target == A.dequantize.self for a in node.all_input_nodes
        ):
            left[str(node.target)] += 1
    return LoweringReport(
        applied=tuple(sorted(applied.items())),
        float_ops_after_int8=tuple(sorted(left.items())),
        int8_kernels=kernels,
    )
