"""Bit allocation (tinyquant.allocate): the exact knapsack against brute force, greedy against the
DP, the budget as ``bits_per_weight`` counts it, and the errors a user can make."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from tinyquant.allocate import allocate, greedy, knapsack_dp, to_recipe
from tinyquant.qmodel import quantize_model
from tinyquant.recipe import Recipe
from tinyquant.sensitivity import Sensitivity

ROOT = Path(__file__).parent.parent
SWEEP = Sensitivity.from_json((ROOT / "notebooks" / "figures" / "sensitivity.json").read_text())


def _instance(rng, L, S):
    bits = rng.integers(1, 12, size=(L, S)) * 8  # whole bytes, as stored
    cost = rng.random((L, S))
    cap = int(bits.min(axis=1).sum() + rng.integers(0, bits.max(axis=1).sum() + 1))
    return cost, bits, cap


def _brute_force(cost, bits, cap):
    best = (np.inf, None)
    for c in itertools.product(*[range(cost.shape[1])] * cost.shape[0]):
        r = np.arange(len(c))
        if bits[r, c].sum() <= cap and cost[r, c].sum() < best[0]:
            best = (cost[r, c].sum(), c)
    return best[0]


def _subset(s: Sensitivity, schemes) -> Sensitivity:
    idx = [s.schemes.index(n) for n in schemes]
    cols = {k: getattr(s, k)[:, idx] for k in ("bits", "kl", "hessian", "fisher", "sqnr")}
    return Sensitivity(s.layers, tuple(schemes), s.n_weights, **cols,
                       outlier_ratio=s.outlier_ratio)  # fmt: skip


def test_the_dp_matches_brute_force_on_small_random_instances():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cost, bits, cap = _instance(rng, int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        c = knapsack_dp(cost, bits, cap)
        r = np.arange(len(c))
        assert bits[r, c].sum() <= cap
        assert cost[r, c].sum() == pytest.approx(_brute_force(cost, bits, cap), abs=1e-12)


def test_the_dp_is_never_worse_than_greedy_on_its_own_predicted_cost():
    rng = np.random.default_rng(1)
    worse = 0
    for _ in range(200):
        cost, bits, cap = _instance(rng, int(rng.integers(2, 12)), int(rng.integers(2, 6)))
        r = np.arange(cost.shape[0])
        dp, gr = knapsack_dp(cost, bits, cap), greedy(cost, bits, cap)
        assert bits[r, gr].sum() <= cap
        assert cost[r, dp].sum() <= cost[r, gr].sum() + 1e-12
        worse += cost[r, dp].sum() < cost[r, gr].sum() - 1e-12
    assert worse > 0  # the instances are hard enough for greedy to strand budget sometimes


def test_a_budget_equal_to_a_uniform_schemes_bpw_with_equally_sensitive_layers_returns_it():
    n = 4096  # equal layers; schemes at 2.375 … 8.375 bits per weight, cost ∝ 4^−bits (convex)
    bpw = np.array([2.375, 3.375, 4.375, 8.375])
    bits = np.tile((bpw * n).astype(np.int64), (6, 1))
    cost = np.tile(n * 4.0 ** (-bpw), (6, 1))
    for k in range(len(bpw)):
        for solve in (knapsack_dp, greedy):
            assert solve(cost, bits, int(bits[:, k].sum())) == [k] * 6


def test_on_the_real_layers_equal_sensitivity_at_a_uniform_budget_returns_the_uniform_scheme():
    s = _subset(SWEEP, ["w2-rtn-g64", "w3-rtn-g64", "w4-rtn-g64", "w8-rtn-g64"])
    bpw = s.bits / np.asarray(s.n_weights)[:, None]  # (L, S): equal per layer for g64 schemes
    equal = Sensitivity(s.layers, s.schemes, s.n_weights, s.bits,
                        np.asarray(s.n_weights)[:, None] * 4.0 ** (-bpw), *[s.kl * 0] * 3,
                        s.outlier_ratio)  # fmt: skip
    for k, name in enumerate(s.schemes):
        a = allocate(equal, s.bits_per_weight([k] * len(s.layers)))
        assert a.schemes == (name,) * len(s.layers)


@pytest.mark.parametrize("budget", [2.2, 2.6, 3.1, 4.2])
def test_the_chosen_recipes_exact_bits_per_weight_is_at_most_the_budget(budget):
    from tinyquant.llm.checkpoint import load_checkpoint

    rtn = _subset(SWEEP, [n for n in SWEEP.schemes if "rtn" in n])  # RTN: no calibration needed
    a = allocate(rtn, budget)
    params, cfg, _ = load_checkpoint(None)
    q = quantize_model(params, cfg, to_recipe(a))
    assert q.bits_per_weight == pytest.approx(a.bits_per_weight, abs=1e-12)
    assert q.bits_per_weight <= budget


def test_the_allocation_at_more_bits_never_predicts_more_cost():
    costs = [allocate(SWEEP, b).predicted_kl for b in (2.25, 2.5, 3.0, 3.5, 4.25, 4.5)]
    assert costs == sorted(costs, reverse=True)


def test_the_recipe_round_trips_through_json_with_one_rule_per_layer():
    r = to_recipe(allocate(SWEEP, 3.0))
    assert Recipe.from_json(r.to_json()) == r
    assert [t for rule in r.rules for t in rule.targets] == [
        n.removesuffix(".weight") for n in SWEEP.layers
    ]


def test_an_impossible_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="below the cheapest allocation"):
        allocate(SWEEP, 1.5)


def test_an_unknown_proxy_or_solver_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown proxy 'l2'; choose one of kl"):
        allocate(SWEEP, 3.0, proxy="l2")
    with pytest.raises(ValueError, match="unknown solver"):
        allocate(SWEEP, 3.0, solver="ilp")


def test_the_committed_mixed_recipes_are_what_the_committed_sweep_allocates():
    for path in sorted((ROOT / "tinyquant" / "recipes_mixed").glob("mixed-*.json")):
        committed = Recipe.from_json(path.read_text())
        budget = float(json.loads(path.read_text())["name"].removeprefix("mixed-"))
        assert to_recipe(allocate(SWEEP, budget)) == committed, path.name
