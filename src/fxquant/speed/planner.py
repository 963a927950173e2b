"""Choose which units run in int8 so the estimated total time is least, boundaries included.

Cost of a plan (``int8`` = the set of units run in int8)::

    sum over units u:   int8_ms[u] if u in int8 else fp32_ms[u]
  + sum over tensors t: quantize_ms[t]   if t's producer is float and some quantized reader is int8
                      + dequantize_ms[t] if t's producer is int8 and some reader is float

A chain of int8 units pays nothing inside (the int8 kernel requantizes its output for the
next one); an isolated int8 unit between float ops pays a quantize before and a dequantize
after, which can cost more than int8 saves. Dynamic units (dynamic linear) read and write
float, so they have no boundaries.

Two rules of the int8 lowering restrict the plans (:class:`PlanProblem`): a pass-through
op (zero pad, reshape) shares its reader's decision, and a conv runs in int8 only when
every reader of its output reads it through a quantize, i.e. stays annotated (a float reader
can stay annotated as a "marker": it quantizes the conv's output and computes in float).

The optimum is found over the whole graph (chains, branches and residual joins alike) as a
minimum cut (:mod:`fxquant.speed.mincut`): one binary variable per unit, plus one auxiliary
variable per multi-reader tensor for "someone needs its int8 copy" / "every reader takes
int8", which turns the shared quantize/dequantize of a tensor into submodular pairwise
terms; hard constraints are infinite terms. Exact, except for the marker rule in one case
(see :func:`choose_int8_units`). Max-flow on these sparse, chain-like graphs is close to
linear in the graph size (Lite0: ~60 units, a few ms).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from fxquant.speed.cost_model import CostTable
from fxquant.speed.mincut import INFINITE, minimize_binary_energy
from fxquant.speed.units import TensorFlow

__all__ = ["PlanProblem", "choose_int8_units", "plan_cost"]


@dataclass(frozen=True, kw_only=True)
class PlanProblem:
    """What the planner needs: unit names, which are dynamic, the tensor flows, and two
    rules of the int8 lowering a plan must honour:

    * ``follows``: units whose decision is another's (``{unit: leader}``) or float
      (``{unit: None}``) — pass-through ops;
    * ``needs_int8_reader``: units the lowering runs in int8 only when every reader of their
      output reads it through a quantize (a conv's int8 kernel produces int8; with X86
      annotations the output is quantized by its readers' input edges).
    """

    units: tuple[str, ...]
    flows: tuple[TensorFlow, ...]
    dynamic: frozenset[str] = frozenset()
    follows: dict[str, str | None] = field(default_factory=dict)
    needs_int8_reader: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        known = set(self.units)
        bad = [u for u, leader in self.follows.items() if u not in known or (leader is not None and leader not in known)]
        bad += [u for u in self.needs_int8_reader if u not in known]
        if bad:
            raise ValueError(f"PlanProblem: follows / needs_int8_reader name units {bad} that are not in units")
        for flow in self.flows:
            unknown = [u for u in (flow.producer_unit, *flow.quantized_readers) if u is not None and u not in known]
            if unknown:
                raise ValueError(f"PlanProblem: tensor {flow.tensor!r} names units {unknown} that are not in units")

    def int8_readers(self, unit: str) -> list[str]:
        """The units that read ``unit``'s output as int8 when they run in int8."""
        readers: list[str] = []
        for flow in self.flows:
            producer, rs, _ = _effective(flow, self.dynamic)
            if producer == unit:
                readers += rs
        return list(dict.fromkeys(readers))

    def _float_read(self, unit: str) -> bool:
        """Something that can never quantize its input reads ``unit``'s output."""
        return any(_effective(f, self.dynamic)[2] for f in self.flows if f.producer_unit == unit)

    def _annotated_readers(self, unit: str) -> list[str | None]:
        """The units whose annotation quantizes ``unit``'s output for each reader (a
        pass-through reader resolved to its leader; None: read by a float op)."""
        return [self.leader(r) for r in self.int8_readers(unit)]

    def never_int8(self) -> frozenset[str]:
        """Units no plan can run in int8: pass-through ops read by a float op (or following
        such a unit), and units needing quantized output that a float op also reads (a conv
        feeding the graph output): the lowering rewrites a conv only when every reader of
        its output reads it through the quantize."""
        never = {u for u in self.follows if self.leader(u) is None}
        never |= {u for u in self.needs_int8_reader
                  if self._float_read(u) or None in self._annotated_readers(u) or not self.int8_readers(u)}
        never |= {u for u in self.follows if self.leader(u) in never}
        return frozenset(never)

    def annotated(self, int8: Collection[str]) -> frozenset[str]:
        """The units to keep annotated so that ``int8`` run in int8: the int8 units and every
        reader of an int8 unit needing quantized output (float "markers")."""
        chosen = set(int8) - set(self.follows)
        for unit in self.needs_int8_reader & set(int8):
            chosen |= {r for r in self._annotated_readers(unit) if r is not None}
        return frozenset(chosen)

    def lowered(self, annotated: Collection[str]) -> frozenset[str]:
        """What the lowering runs in int8 when ``annotated`` keep their annotations."""
        marked = set(annotated)
        out = {u for u in marked if u not in self.needs_int8_reader
               or (not self._float_read(u) and self.int8_readers(u)
                   and all(r in marked for r in self._annotated_readers(u)))}
        out |= {u for u in self.follows if self.leader(u) in out}
        return frozenset(out)

    def violations(self, int8: Collection[str]) -> set[str]:
        """Units whose decision in ``int8`` the lowering would not honour (with the markers
        of :meth:`annotated` kept)."""
        return set(self.lowered(self.annotated(int8))) ^ set(int8)

    def feasible(self, int8: Collection[str]) -> bool:
        """Whether the lowering runs exactly ``int8`` in int8."""
        return not self.violations(int8)

    def realize(self, int8: Collection[str]) -> frozenset[str]:
        """What the lowering runs in int8 when ``int8`` (and nothing else) are annotated."""
        return self.lowered(set(int8) - set(self.follows))

    def markers(self, int8: Collection[str]) -> dict[str, str]:
        """``{float unit kept annotated: an int8 unit whose output it quantizes}``."""
        out: dict[str, str] = {}
        for unit in sorted(self.needs_int8_reader & set(int8)):
            for r in self._annotated_readers(unit):
                if r is not None and r not in int8:
                    out.setdefault(r, unit)
        return out

    def leader(self, unit: str) -> str | None:
        """The unit whose decision ``unit`` takes (itself unless it is a pass-through op)."""
        seen = set()
        current: str | None = unit
        while current is not None and current in self.follows and current not in seen:
            seen.add(current)
            current = self.follows[current]
        return current


def _effective(flow: TensorFlow, dynamic: Collection[str]) -> tuple[str | None, list[str], bool]:
    """(int8-capable producer, readers that take int8, float readers) once dynamic units —
    float in, float out — are seen as float ops."""
    producer = flow.producer_unit if flow.producer_unit not in dynamic else None
    readers = [r for r in flow.quantized_readers if r not in dynamic]
    float_readers = flow.float_readers or len(readers) < len(flow.quantized_readers)
    return producer, readers, float_readers


def plan_cost(problem: PlanProblem, costs: CostTable, int8: Collection[str]) -> float:
    """Estimated time (ms) of the quantized units and boundaries when ``int8`` run in int8
    (the ops that are float in every plan, ``costs.float_ms``, included)."""
    total = costs.float_ms
    for name in problem.units:
        total += costs.units[name].int8_ms if name in int8 else costs.units[name].fp32_ms
    for flow in problem.flows:
        producer, readers, float_readers = _effective(flow, problem.dynamic)
        producer_int8 = producer is not None and producer in int8
        if not producer_int8 and any(r in int8 for r in readers):
            total += costs.quantize_ms[flow.tensor]
        if producer_int8 and (float_readers or any(r not in int8 for r in readers)):
            total += costs.dequantize_ms[flow.tensor]
    return total


class _Energy:
    """Variables and terms of the min-cut energy (x = 1: int8, or the auxiliary holds)."""

    def __init__(self, problem: PlanProblem, costs: CostTable) -> None:
        self.index = {name: i for i, name in enumerate(problem.units)}
        self.unary = [[costs.units[n].fp32_ms, costs.units[n].int8_ms] for n in problem.units]
        self.pairwise: list[tuple[int, int, float]] = []

    def variable(self) -> int:
        self.unary.append([0.0, 0.0])
        return len(self.unary) - 1

    def pay_if_zero_one(self, i: int, j: int, w: float) -> None:
        self.pairwise.append((i, j, w))

    def add_quantize(self, producer: int | None, readers: list[int], q: float) -> None:
        """Pay q when the producer is float and some reader is int8."""
        if len(readers) == 1:
            if producer is None:
                self.unary[readers[0]][1] += q
            else:
                self.pay_if_zero_one(producer, readers[0], q)
            return
        z = self.variable()  # z = 1: an int8 copy of the tensor is made
        for r in readers:
            self.pay_if_zero_one(z, r, INFINITE)  # a reader in int8 forces z = 1
        if producer is None:
            self.unary[z][1] += q
        else:
            self.pay_if_zero_one(producer, z, q)

    def add_dequantize(self, producer: int, readers: list[int], float_readers: bool, d: float) -> None:
        """Pay d when the producer is int8 and some reader is float."""
        if float_readers:
            self.unary[producer][1] += d
            return
        if not readers:  # nobody reads it: nothing to dequantize
            return
        if len(readers) == 1:
            self.pay_if_zero_one(readers[0], producer, d)
            return
        w = self.variable()  # w = 1: every reader takes int8
        for r in readers:
            self.pay_if_zero_one(r, w, INFINITE)  # a float reader forces w = 0
        self.pay_if_zero_one(w, producer, d)


def _energy(problem: PlanProblem, costs: CostTable, forced_float: set[str], forced_int8: set[str]) -> _Energy:
    energy = _Energy(problem, costs)
    for flow in problem.flows:
        producer, readers, float_readers = _effective(flow, problem.dynamic)
        p = energy.index[producer] if producer is not None else None
        rs = [energy.index[r] for r in dict.fromkeys(readers)]
        if rs:
            energy.add_quantize(p, rs, costs.quantize_ms[flow.tensor])
        if p is not None:
            energy.add_dequantize(p, rs, float_readers, costs.dequantize_ms[flow.tensor])
    for unit, leader in problem.follows.items():
        if leader is not None:
            i = energy.index[unit]
            energy.pay_if_zero_one(i, energy.index[leader], INFINITE)
            energy.pay_if_zero_one(energy.index[leader], i, INFINITE)
    for unit in forced_float | problem.never_int8():
        energy.unary[energy.index[unit]][1] = INFINITE
    for unit in forced_int8:
        energy.unary[energy.index[unit]][0] = INFINITE
    return energy


def _solve(problem: PlanProblem, costs: CostTable, forced_float: set[str], forced_int8: set[str]) -> frozenset[str]:
    energy = _energy(problem, costs, forced_float, forced_int8)
    x = minimize_binary_energy([(a, b) for a, b in energy.unary], energy.pairwise)
    return frozenset(name for name, i in energy.index.items() if x[i] == 1)


def choose_int8_units(problem: PlanProblem, costs: CostTable) -> frozenset[str]:
    """The set of units to run in int8 with the least :func:`plan_cost` among those the
    lowering honours (:meth:`PlanProblem.feasible`).

    One minimum cut gives the exact optimum when its answer is feasible. The one rule it
    cannot express (an OR): a float reader kept annotated as a marker for an int8 conv is
    itself lowered to int8 when all of *its* readers are annotated too. For each such
    conflict the cheaper of "the marker int8" and "the convs it serves float" is fixed and
    the cut solved again — a greedy step, at most a few per unit; the result is never worse
    than "everything annotated" or "everything float", which are checked last.

    >>> int8 = choose_int8_units(PlanProblem(units=names, flows=flows), costs)
    >>> keep_float = [u for u in names if u not in int8]
    """
    missing = [u for u in problem.units if u not in costs.units]
    if missing:
        raise KeyError(f"the cost table has no entry for units {missing}; estimate costs on the same graph")
    forced_float: set[str] = set()
    forced_int8: set[str] = set()
    int8 = _solve(problem, costs, forced_float, forced_int8)
    while conflicts := sorted(problem.violations(int8) - forced_float - forced_int8):
        marker = conflicts[0]
        served = {u for u in problem.needs_int8_reader & int8 if marker in problem._annotated_readers(u)}
        options: list[tuple[set[str], set[str]]] = [(set(), {marker})]
        if served - forced_int8:
            options.append((served - forced_int8, set()))
        solved = [(plan_cost(problem, costs, _solve(problem, costs, forced_float | f, forced_int8 | i)), f, i)
                  for f, i in options]
        _, f, i = min(solved, key=lambda item: item[0])
        forced_float |= f
        forced_int8 |= i
        int8 = _solve(problem, costs, forced_float, forced_int8)
    candidates = [problem.realize(problem.units), frozenset()]
    if problem.feasible(int8):
        candidates.insert(0, int8)
    return min(candidates, key=lambda c: plan_cost(problem, costs, c))
