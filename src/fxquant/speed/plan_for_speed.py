"""``plan_for_speed``: capture → annotate a copy with the quantizer → cost every quantized op
on this machine → choose which to keep in float → :class:`SpeedPlan`."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn
from torch.fx import GraphModule

from fxquant.engine.fold_bn import fold_bn_into_conv_and_linear
from fxquant.pt2e.capture import capture
from fxquant.pt2e.quantizer.quantizer import Quantizer
from fxquant.speed.cost_model import CostTable, estimate_costs
from fxquant.speed.plan import FLOAT, INT8, SpeedPlan, SpeedPlanRow
from fxquant.speed.planner import PlanProblem, choose_int8_units, plan_cost
from fxquant.speed.timing import TimingCache
from fxquant.speed.units import UnitGraph, find_units, module_path

__all__ = ["annotate_copy", "plan_for_speed", "plan_from_costs"]


def _is_exported(model: nn.Module) -> bool:
    if not isinstance(model, GraphModule):
        return False
    return all("val" in n.meta for n in model.graph.nodes if n.op == "placeholder")


def annotate_copy(model: nn.Module, example_inputs: tuple[Any, ...], quantizer: Quantizer) -> GraphModule:
    """The graph ``prepare_pt2e`` would annotate, annotated, without touching ``model``: a
    copy of the exported graph (or a capture of an eager model), transformed for annotation,
    batch norms folded, annotated by ``quantizer``."""
    if not isinstance(quantizer, Quantizer):
        raise TypeError(f"plan_for_speed needs a pt2e Quantizer, got {type(quantizer).__name__}")
    gm = copy.deepcopy(model) if _is_exported(model) else capture(model, example_inputs)
    assert isinstance(gm, GraphModule)
    gm = quantizer.transform_for_annotation(gm)
    fold_bn_into_conv_and_linear(gm)
    quantizer.annotate(gm)
    return gm


def _problem(graph: UnitGraph) -> PlanProblem:
    return PlanProblem(
        units=tuple(u.name for u in graph.units),
        flows=graph.flows,
        dynamic=frozenset(u.name for u in graph.units if u.dynamic),
        follows=dict(graph.follows),
        needs_int8_reader=frozenset(u.name for u in graph.units if u.needs_int8_reader),
    )


def _with_followers(name: str, follows: dict[str, str | None]) -> frozenset[str]:
    """``name`` and the pass-through units whose decision is its decision."""
    group = {name}
    changed = True
    while changed:
        grown = {u for u, leader in follows.items() if leader in group}
        changed = not grown <= group
        group |= grown
    return frozenset(group)


def _reason(row: SpeedPlanRow, *, never: bool) -> str:
    if never:
        return (f"{row.op}: nothing reads its output as int8, so the int8 lowering cannot run it "
                "in int8 (a quantized conv needs a quantizing reader)")
    text = f"{row.op}: int8 {row.int8_ms:.3f} ms vs fp32 {row.fp32_ms:.3f} ms"
    if row.boundary_ms > 1e-6:
        text += f", plus {row.boundary_ms:.3f} ms of quantize/dequantize boundaries and int8 pass-through ops"
    if row.int8_ms < row.fp32_ms and row.boundary_ms <= row.fp32_ms - row.int8_ms:
        text += " (cheaper in float together with its float neighbours)"
    return text


def plan_from_costs(graph: UnitGraph, costs: CostTable) -> SpeedPlan:
    """The optimal plan for ``graph`` under ``costs`` (no measuring)."""
    problem = _problem(graph)
    int8 = choose_int8_units(problem, costs)
    markers = problem.markers(int8)
    never = problem.never_int8()
    rows = []
    for unit in graph.units:
        cost = costs.units[unit.name]
        group = _with_followers(unit.name, graph.follows)
        with_unit = plan_cost(problem, costs, int8 | group)
        without = plan_cost(problem, costs, int8 - group)
        rows.append(SpeedPlanRow(
            name=unit.name,
            module_path=module_path(unit.anchor),
            op=cost.description,
            kernel=cost.kernel,
            fp32_ms=cost.fp32_ms,
            int8_ms=cost.int8_ms,
            boundary_ms=(with_unit - without) - (cost.int8_ms - cost.fp32_ms),
            decision=INT8 if unit.name in int8 else FLOAT,
            passthrough=unit.passthrough,
            marker_for=markers.get(unit.name),
        ))
    all_int8 = problem.realize(problem.units)
    return SpeedPlan(
        rows=tuple(rows),
        keep_float={r.name: _reason(r, never=r.name in never)
                    for r in rows if r.decision == FLOAT and not r.passthrough and not r.marker_for},
        expected_fp32_ms=plan_cost(problem, costs, frozenset()),
        expected_int8_ms=plan_cost(problem, costs, int8),
        all_int8_ms=plan_cost(problem, costs, all_int8),
        threads=costs.threads,
        measured=costs.measured,
    )


def plan_for_speed(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    quantizer: Quantizer,
    *,
    threads: int | None = None,
    measure: bool = True,
    cache: TimingCache | None = None,
) -> SpeedPlan:
    """Decide which ops ``quantizer`` would quantize are faster kept in float on this machine.

    ``model`` is the graph captured by ``torch.export`` / :func:`fxquant.pt2e.capture` (or an
    eager model, captured here with ``example_inputs``); it is not modified. Every op the
    quantizer annotates is timed at its real shapes in fp32 and as the int8 kernel it lowers
    to, with ``threads`` intra-op threads (None: torch's current setting), and the
    quantize/dequantize boundaries are costed; the plan keeping the least total time is
    chosen exactly. ``measure=False`` uses a rough analytic model instead of timing.
    Node names in the plan are those ``prepare_pt2e`` sees on the same capture.

    >>> gm = capture(model.eval(), (x,))
    >>> quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    >>> plan = plan_for_speed(gm, (x,), quantizer, threads=1)
    >>> print(plan)
    >>> prepared = prepare_pt2e(gm, plan.keep_float_quantizer(quantizer))
    """
    gm = annotate_copy(model, example_inputs, quantizer)
    graph = find_units(gm)
    costs = estimate_costs(gm, graph, threads=threads, measure=measure, cache=cache)
    return plan_from_costs(graph, costs)
