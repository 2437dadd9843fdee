"""Bit allocation: one scheme per layer, minimising the predicted cost under a bits budget.

A multiple-choice knapsack: layer l picks scheme s with stored bits b_ls and predicted cost c_ls
(the sensitivity sweep's ΔKL, or a proxy), and

    minimise Σ_l c_{l,s_l}   subject to   Σ_l b_{l,s_l} ≤ budget · Σ_l n_l

(n_l weights per layer: bits per weight exactly as ``Model.bits_per_weight`` counts them, since
b_ls are the candidates' own ``nbytes``). Two solvers:

    knapsack_dp   exact. Every b_ls is a whole number of bytes; divided by their greatest common
                  divisor u they are small integers, so the budget ⌊budget·Σn / u⌋ is a short
                  axis and f_l(k) = min_s f_{l−1}(k − b_ls/u) + c_ls is solved for every k.
                  Nothing is rounded, so the DP optimum is the true optimum.
    greedy        the marginal-gain heuristic: start from each layer's cheapest scheme and
                  repeatedly take the upgrade with the largest cost saved per extra bit that
                  still fits (HAWQ-V2/EXL2-style). Not optimal (it can strand budget), never
                  better than the DP on its own objective.

The result is a ``Recipe`` with one rule per layer (exact tensor names) — JSON that ``quantize
--recipe``, ``compare --recipe`` and ``eval`` read like any other.
Refs: Malinovskii et al. 2025 (HIGGS, §4: dynamic programming over per-layer errors); Dong et
al. 2020 (HAWQ-V2, Pareto selection); Kellerer, Pferschy & Pisinger 2004, ch. 11 (the
multiple-choice knapsack). Shapes: L layers, S schemes, K budget units + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import reduce

import numpy as np

from tinyquant.recipe import Recipe
from tinyquant.sensitivity import SCHEMES, Sensitivity

__all__ = ["Allocation", "knapsack_dp", "greedy", "allocate", "to_recipe", "SOLVERS"]


def _check(cost: np.ndarray, bits: np.ndarray, capacity: int) -> None:
    if cost.shape != bits.shape or cost.ndim != 2 or cost.size == 0:
        raise ValueError(f"cost {cost.shape} and bits {bits.shape} must be the same (L, S) shape")
    cheapest = int(bits.min(axis=1).sum())
    if capacity < cheapest:
        raise ValueError(
            f"a budget of {capacity} bits is below the cheapest allocation ({cheapest} bits, "
            f"every layer at its smallest scheme); raise the budget"
        )


def knapsack_dp(cost: np.ndarray, bits: np.ndarray, capacity: int) -> list[int]:
    """The exact multiple-choice knapsack: one scheme index per layer, Σ bits ≤ capacity,
    Σ cost minimal (ties: the first scheme in order).

    >>> cost = np.array([[9.0, 1.0], [5.0, 4.0]]); bits = np.array([[2, 4], [2, 4]])
    >>> knapsack_dp(cost, bits, 6), knapsack_dp(cost, bits, 4)
    ([1, 0], [0, 0])
    """
    cost, bits = np.asarray(cost, np.float64), np.asarray(bits, np.int64)
    _check(cost, bits, capacity)
    # 1) one budget unit u = gcd of every candidate's bits: exact integer weights
    u = reduce(math.gcd, (int(b) for b in bits.ravel()))
    w = bits // u  # (L, S)
    K = capacity // u + 1  # budget axis 0 … capacity/u
    L, S = cost.shape
    # 2) f(k): least cost of the layers so far using at most k units (−: infeasible = inf)
    f = np.zeros(K)  # (K,) no layer yet: 0 at any budget
    pick = np.zeros((L, K), np.int16)  # (L, K) the scheme chosen for layer l at budget k
    for layer in range(L):
        g = np.full(K, np.inf)
        for s in range(S):
            ws = int(w[layer, s])
            if ws >= K:  # this scheme alone exceeds the budget
                continue
            cand = np.full(K, np.inf)
            cand[ws:] = f[: K - ws] + cost[layer, s]  # f(k − w) + c
            better = cand < g
            g[better], pick[layer, better] = cand[better], s
        f = g
    # 3) walk back from the full budget
    k, choice = K - 1, [0] * L
    for layer in reversed(range(L)):
        s = int(pick[layer, k])
        choice[layer] = s
        k -= int(w[layer, s])
    return choice


def greedy(cost: np.ndarray, bits: np.ndarray, capacity: int) -> list[int]:
    """The marginal-gain heuristic: from the cheapest schemes, take the best cost-saved-per-bit
    upgrade that fits until none does.

    >>> cost = np.array([[9.0, 1.0], [5.0, 4.0]]); bits = np.array([[2, 4], [2, 4]])
    >>> greedy(cost, bits, 6)
    [1, 0]
    """
    cost, bits = np.asarray(cost, np.float64), np.asarray(bits, np.int64)
    _check(cost, bits, capacity)
    L = cost.shape[0]
    choice = [int(np.lexsort((cost[layer], bits[layer]))[0]) for layer in range(L)]
    used = int(bits[np.arange(L), choice].sum())
    while True:
        best, move = 0.0, None
        for layer in range(L):
            c0, b0 = cost[layer, choice[layer]], bits[layer, choice[layer]]
            extra = bits[layer] - b0  # (S,)
            saved = c0 - cost[layer]  # (S,)
            ok = (saved > 0) & (extra > 0) & (used + extra <= capacity)
            if ok.any():
                gain = np.where(ok, saved / np.maximum(extra, 1), -np.inf)
                s = int(np.argmax(gain))
                if gain[s] > best:
                    best, move = float(gain[s]), (layer, s)
        if move is None:
            return choice
        layer, s = move
        used += int(bits[layer, s] - bits[layer, choice[layer]])
        choice[layer] = s


SOLVERS = {"dp": knapsack_dp, "greedy": greedy}


@dataclass(frozen=True)
class Allocation:
    """One scheme per layer, chosen under a budget by a proxy and a solver."""

    budget: float  # bits per weight allowed
    proxy: str
    solver: str
    layers: tuple[str, ...]
    schemes: tuple[str, ...]  # (L,) the chosen scheme of each layer
    bits_per_weight: float  # exact, ≤ budget
    predicted_kl: float  # Σ of the chosen candidates' single-layer ΔKL
    predicted_cost: float  # Σ of the proxy's cost (= predicted_kl for the kl proxy)


def allocate(s: Sensitivity, budget: float, proxy: str = "kl", solver: str = "dp") -> Allocation:
    """The allocation of a sweep under ``budget`` bits per weight.

    >>> s = Sensitivity(("a", "b"), ("w2-rtn", "w4-rtn"), (10, 10), np.array([[20, 40]] * 2),
    ...                 np.array([[0.5, 0.1], [0.2, 0.1]]), *[np.zeros((2, 2))] * 3, (1.0, 1.0))
    >>> a = allocate(s, 3.0)
    >>> a.schemes, a.bits_per_weight, a.predicted_kl
    (('w4-rtn', 'w2-rtn'), 3.0, 0.30000000000000004)
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    cost = s.cost(proxy)  # raises for an unknown proxy
    n = sum(s.n_weights)
    cheapest = float(s.bits.min(axis=1).sum() / n)
    if not budget >= cheapest:
        raise ValueError(
            f"budget {budget} bits per weight is below the cheapest allocation "
            f"({cheapest:.4f}: every layer at its smallest scheme); give at least that"
        )
    capacity = math.floor(budget * n + 1e-9)  # bits; the small epsilon absorbs float fuzz
    choice = SOLVERS[solver](cost, s.bits, capacity)
    rows = np.arange(len(s.layers))
    return Allocation(
        budget=float(budget),
        proxy=proxy,
        solver=solver,
        layers=s.layers,
        schemes=tuple(s.schemes[c] for c in choice),
        bits_per_weight=s.bits_per_weight(choice),
        predicted_kl=float(s.kl[rows, choice].sum()),
        predicted_cost=float(cost[rows, choice].sum()),
    )


def to_recipe(a: Allocation, name: str | None = None) -> Recipe:
    """The allocation as a recipe: one rule per layer, targets the exact tensor names.

    >>> a = Allocation(3.0, "kl", "dp", ("blk.0.attn_q.weight",), ("w4-gptq",), 4.09, 0.0, 0.0)
    >>> r = to_recipe(a)
    >>> r.name, r.rules[0].targets, r.rules[0].method.name
    ('mixed-3.0', ('blk.0.attn_q',), 'gptq')
    """
    rules = tuple(replace(SCHEMES[s], targets=(layer.removesuffix(".weight"),))
                  for layer, s in zip(a.layers, a.schemes, strict=True))  # fmt: skip
    return Recipe(
        name or f"mixed-{float(a.budget)!r}",
        rules,
        f"mixed precision ≤ {a.budget:g} bits per weight: {a.solver} over the {a.proxy} "
        f"sensitivity sweep ({a.bits_per_weight:.3f} bpw)",
    )
