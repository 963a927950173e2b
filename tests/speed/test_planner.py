"""fxquant.speed.planner: optimal decisions on hand-derived cost tables, checked exhaustively."""

from __future__ import annotations

import itertools
import random

import pytest

from fxquant.speed.cost_model import CostTable, UnitCost
from fxquant.speed.planner import PlanProblem, choose_int8_units, plan_cost
from fxquant.speed.units import TensorFlow


def flow(tensor, producer, readers, float_readers=False):
    return TensorFlow(tensor=tensor, shape=(1,), producer_unit=producer, quantized_readers=readers,
                      float_readers=float_readers)


def table(units, boundary, float_ms=0.0):
    return CostTable(
        units={n: UnitCost(fp32_ms=f, int8_ms=i, kernel="k", description=n) for n, (f, i) in units.items()},
        quantize_ms={t: q for t, (q, _) in boundary.items()},
        dequantize_ms={t: d for t, (_, d) in boundary.items()},
        float_ms=float_ms,
    )


# input → A → B → C → output, each boundary 0.3 ms to quantize or dequantize
CHAIN = PlanProblem(units=("A", "B", "C"), flows=(
    flow("x", None, ("A",)), flow("a", "A", ("B",)), flow("b", "B", ("C",)), flow("c", "C", (), True),
))
CHAIN_BOUNDARIES = {t: (0.3, 0.3) for t in "xabc"}


def test_chain_keeps_a_slower_op_in_int8_when_leaving_int8_costs_more():
    # B alone is slower in int8 (1.2 vs 1.0) but a float B pays dq(a) + q(b) = 0.6:
    #   all int8: 0.5 + 1.2 + 0.5 + q(x) + dq(c) = 2.8;  B float: 2.0 + 4 * 0.3 = 3.2;  all fp32: 3.0
    costs = table({"A": (1.0, 0.5), "B": (1.0, 1.2), "C": (1.0, 0.5)}, CHAIN_BOUNDARIES)
    assert choose_int8_units(CHAIN, costs) == {"A", "B", "C"}
    assert plan_cost(CHAIN, costs, {"A", "B", "C"}) == pytest.approx(2.8)
    assert plan_cost(CHAIN, costs, {"A", "C"}) == pytest.approx(3.2)
    assert plan_cost(CHAIN, costs, set()) == pytest.approx(3.0)


def test_chain_splits_when_the_slow_op_costs_more_than_its_boundaries():
    # B: 1.0 fp32 vs 2.0 int8 saves 1.0 > 0.6 of boundaries: A, C int8, B float
    #   = 0.5 + 1.0 + 0.5 + 4 * 0.3 = 3.2  (all int8: 3.6, all fp32: 5.0)
    costs = table({"A": (2.0, 0.5), "B": (1.0, 2.0), "C": (2.0, 0.5)}, CHAIN_BOUNDARIES)
    assert choose_int8_units(CHAIN, costs) == {"A", "C"}
    assert plan_cost(CHAIN, costs, {"A", "C"}) == pytest.approx(3.2)


ISOLATED = PlanProblem(units=("X",), flows=(flow("x", None, ("X",)), flow("y", "X", (), True)))


@pytest.mark.parametrize("int8_ms, expected", [(0.8, set()), (0.6, {"X"})], ids=["boundaries-win", "int8-wins"])
def test_isolated_op_pays_quantize_and_dequantize(int8_ms, expected):
    # fp32 1.0; int8 pays q(x) + dq(y) = 0.3: 0.8 + 0.3 > 1.0 stays float, 0.6 + 0.3 < 1.0 goes int8
    costs = table({"X": (1.0, int8_ms)}, {"x": (0.15, 0.1), "y": (0.1, 0.15)})
    assert choose_int8_units(ISOLATED, costs) == expected


def test_a_tensor_read_by_two_int8_units_is_quantized_once():
    problem = PlanProblem(units=("L", "R"), flows=(flow("x", None, ("L", "R")),))
    costs = table({"L": (1.0, 0.7), "R": (1.0, 0.7)}, {"x": (0.5, 0.0)})
    # each alone saves 0.3 < 0.5, together 0.6 > 0.5: one shared quantize
    assert plan_cost(problem, costs, {"L", "R"}) == pytest.approx(1.9)
    assert plan_cost(problem, costs, {"L"}) == pytest.approx(2.2)
    assert choose_int8_units(problem, costs) == {"L", "R"}


def test_dynamic_units_have_no_boundaries():
    problem = PlanProblem(units=("D", "S"), flows=(flow("x", None, ("D",)), flow("d", "D", ("S",))),
                          dynamic=frozenset({"D"}))
    costs = table({"D": (1.0, 0.5), "S": (1.0, 0.9)}, {"x": (9.0, 9.0), "d": (0.2, 9.0)})
    # D reads and writes float: no q(x) and no dq(d); S pays q(d) = 0.2 > its saving of 0.1
    assert plan_cost(problem, costs, {"D"}) == pytest.approx(1.5)
    assert choose_int8_units(problem, costs) == {"D"}


def test_float_ms_is_counted_in_every_plan():
    costs = table({"X": (1.0, 0.1)}, {"x": (0.1, 0.1), "y": (0.1, 0.1)}, float_ms=5.0)
    assert plan_cost(ISOLATED, costs, set()) == pytest.approx(6.0)
    assert plan_cost(ISOLATED, costs, {"X"}) == pytest.approx(5.3)


@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed{s}")
def test_optimal_on_random_graphs(seed):
    rng = random.Random(seed)
    for _ in range(30):
        units = tuple(f"u{i}" for i in range(rng.randint(1, 6)))
        flows = tuple(
            flow(f"t{k}", rng.choice((None, *units)), tuple(rng.sample(units, rng.randint(0, min(3, len(units))))),
                 rng.random() < 0.3)
            for k in range(rng.randint(0, 7))
        )
        problem = PlanProblem(units=units, flows=flows, dynamic=frozenset(u for u in units if rng.random() < 0.15))
        costs = table({u: (rng.random(), rng.random()) for u in units}, {f.tensor: (rng.random(), rng.random()) for f in flows})
        best = min(plan_cost(problem, costs, set(c)) for k in range(len(units) + 1)
                   for c in itertools.combinations(units, k))
        assert plan_cost(problem, costs, choose_int8_units(problem, costs)) == pytest.approx(best)


def test_passthrough_units_share_their_readers_decision():
    # P (a pad) feeds A; Q (a flatten) is read by a float op, so it stays float
    problem = PlanProblem(units=("P", "A", "Q"), flows=(
        flow("x", None, ("P",)), flow("p", "P", ("A",)), flow("a", "A", ("Q",)), flow("q", "Q", (), True),
    ), follows={"P": "A", "Q": None})
    # P alone is much slower in int8, but A's gain carries it; Q would be free in int8 but cannot be
    costs = table({"P": (0.1, 0.5), "A": (2.0, 0.5), "Q": (0.2, 0.0)}, {t: (0.1, 0.1) for t in "xpaq"})
    assert choose_int8_units(problem, costs) == {"P", "A"}
    assert problem.feasible({"P", "A"}) and not problem.feasible({"A"}) and not problem.feasible({"P", "A", "Q"})
    # P + A in int8: 0.5 + 0.5 + 0.2 + q(x) + dq(a) = 1.4
    assert plan_cost(problem, costs, {"P", "A"}) == pytest.approx(1.4)


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed{s}")
def test_optimal_among_feasible_plans_with_followers(seed):
    rng = random.Random(100 + seed)
    for _ in range(30):
        units = tuple(f"u{i}" for i in range(rng.randint(2, 6)))
        follower = units[0]
        follows = {follower: rng.choice((None, *units[1:]))}
        flows = tuple(
            flow(f"t{k}", rng.choice((None, *units)), tuple(rng.sample(units, rng.randint(0, min(3, len(units))))),
                 rng.random() < 0.3)
            for k in range(rng.randint(0, 7))
        )
        problem = PlanProblem(units=units, flows=flows, follows=follows)
        costs = table({u: (rng.random(), rng.random()) for u in units}, {f.tensor: (rng.random(), rng.random()) for f in flows})
        feasible = [set(c) for k in range(len(units) + 1) for c in itertools.combinations(units, k)
                    if problem.feasible(set(c))]
        chosen = choose_int8_units(problem, costs)
        assert problem.feasible(chosen)
        assert plan_cost(problem, costs, chosen) == pytest.approx(min(plan_cost(problem, costs, c) for c in feasible))


def test_units_needing_an_int8_reader_use_a_float_reader_as_marker():
    # A -> B -> output; neither writes float from int8, so B (read by nothing) is never int8
    problem = PlanProblem(units=("A", "B"), flows=(
        flow("x", None, ("A",)), flow("a", "A", ("B",)), flow("b", "B", (), True),
    ), needs_int8_reader=frozenset({"A", "B"}))
    costs = table({"A": (1.0, 0.2), "B": (1.0, 0.2)}, {t: (0.1, 0.1) for t in "xab"})
    assert problem.never_int8() == {"B"}
    assert choose_int8_units(problem, costs) == {"A"}
    assert problem.markers({"A"}) == {"B": "A"}
    assert problem.annotated({"A"}) == {"A", "B"} and problem.lowered({"A", "B"}) == {"A"}
    assert problem.realize({"A", "B"}) == {"A"}


def test_a_conv_whose_marker_would_turn_int8_is_kept_float_when_cheaper():
    # A -> B -> C (C writes float, like a linear); an annotated B whose only reader C is
    # annotated is lowered: B cannot serve as A's float marker. A float (1.22) beats B int8.
    problem = PlanProblem(units=("A", "B", "C"), flows=(
        flow("x", None, ("A",)), flow("a", "A", ("B",)), flow("b", "B", ("C",)), flow("c", "C", (), True),
    ), needs_int8_reader=frozenset({"A", "B"}))
    costs = table({"A": (1.0, 0.1), "B": (0.1, 5.0), "C": (1.0, 0.1)}, {t: (0.01, 0.01) for t in "xabc"})
    chosen = choose_int8_units(problem, costs)
    assert problem.feasible(chosen)
    # with B annotated as A's marker, C (annotated, int8) makes B's output quantized: B lowered
    assert problem.lowered(problem.annotated({"A", "C"})) == {"A", "B", "C"}
    assert chosen == {"C"}


def test_an_unserved_unit_is_rescued_by_turning_its_reader_int8_when_cheaper():
    # conv A (needs an int8 reader) -> pool P (quantizes its own output; a bit slower in
    # int8) -> linear L. The cut alone picks A, L int8 and P float, but P annotated would be
    # lowered (L quantizes its output): A has no marker. P int8 (0.21 ms) beats A float (1.06).
    problem = PlanProblem(units=("A", "P", "L"), flows=(
        flow("x", None, ("A",)), flow("a", "A", ("P",)), flow("p", "P", ("L",)), flow("l", "L", (), True),
    ), needs_int8_reader=frozenset({"A"}))
    costs = table({"A": (1.0, 0.1), "P": (0.01, 0.06), "L": (0.08, 0.03)}, {t: (0.01, 0.01) for t in "xapl"})
    assert choose_int8_units(problem, costs) == {"A", "P", "L"}
    assert plan_cost(problem, costs, {"A", "P", "L"}) == pytest.approx(0.21)


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed{s}")
def test_plans_with_reader_rules_are_feasible_and_beat_the_uniform_plans(seed):
    rng = random.Random(200 + seed)
    for _ in range(30):
        units = tuple(f"u{i}" for i in range(rng.randint(2, 6)))
        flows = tuple(
            flow(f"t{k}", rng.choice((None, *units)), tuple(rng.sample(units, rng.randint(0, min(3, len(units))))),
                 rng.random() < 0.3)
            for k in range(rng.randint(1, 7))
        )
        problem = PlanProblem(units=units, flows=flows,
                              needs_int8_reader=frozenset(u for u in units if rng.random() < 0.5))
        costs = table({u: (rng.random(), rng.random()) for u in units}, {f.tensor: (rng.random(), rng.random()) for f in flows})
        chosen = choose_int8_units(problem, costs)
        assert problem.feasible(chosen)
        cost = plan_cost(problem, costs, chosen)
        assert cost <= plan_cost(problem, costs, problem.realize(units)) + 1e-9
        assert cost <= plan_cost(problem, costs, set()) + 1e-9


def test_bad_problems_are_rejected():
    with pytest.raises(ValueError, match="not in units"):
        PlanProblem(units=("A",), flows=(flow("x", None, ("B",)),))
    with pytest.raises(ValueError, match="name units"):
        PlanProblem(units=("A",), flows=(), follows={"A": "B"})
    with pytest.raises(KeyError, match="no entry for units"):
        choose_int8_units(ISOLATED, table({}, {}))
