"""fxquant.speed.mincut: exact minimisation checked against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from fxquant.speed.mincut import INFINITE, minimize_binary_energy


def _energy(unary, pairwise, x):
    return sum(u[xi] for u, xi in zip(unary, x)) + sum(w for i, j, w in pairwise if x[i] == 0 and x[j] == 1)


@pytest.mark.parametrize("seed", range(8), ids=lambda s: f"seed{s}")
def test_matches_brute_force(seed):
    rng = random.Random(seed)
    for _ in range(40):
        n = rng.randint(1, 7)
        unary = [(rng.random(), rng.random()) for _ in range(n)]
        pairwise = [(i, j, rng.random() if rng.random() < 0.8 else INFINITE)
                    for i, j in ((rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, 10))) if i != j]
        best = min(_energy(unary, pairwise, x) for x in itertools.product((0, 1), repeat=n))
        assert _energy(unary, pairwise, minimize_binary_energy(unary, pairwise)) == pytest.approx(best)


def test_hard_constraint_is_respected():
    # x0 wants 1 strongly, x1 wants 0; "x1 = 0 and x0 = 1" is forbidden
    x = minimize_binary_energy([(5.0, 0.0), (0.0, 1.0)], [(1, 0, INFINITE)])
    assert x == [1, 1]


def test_negative_costs_are_rejected():
    with pytest.raises(ValueError, match="unary costs"):
        minimize_binary_energy([(-1.0, 0.0)], [])
    with pytest.raises(ValueError, match="submodular"):
        minimize_binary_energy([(1.0, 0.0), (0.0, 1.0)], [(0, 1, -2.0)])
