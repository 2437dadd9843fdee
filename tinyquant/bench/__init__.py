"""Benchmarks: every figure is a ratio against a baseline measured in the same run.

Each suite module exposes ``run(quick: bool) -> list[dict]``; a row has at least ``name``,
``shape``, ``seconds`` (median), ``baseline``, ``baseline_seconds`` and ``speedup``.
``tinyquant bench [SUITE] [--json] [--quick]`` runs them (see ``tinyquant.cli``); rows print
to stderr as they finish, so that with ``--json`` stdout holds one JSON document.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable

SUITES = {
    "train": "tinyquant.bench.train",
    "kernels": "tinyquant.bench.kernels",
    "export": "tinyquant.bench.export",
    "decode": "tinyquant.bench.decode",  # whole-model decoding at real shapes: only when named
}
DEFAULT_SUITES = ("train", "kernels", "export")


def time_it(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> tuple[float, float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return (median, min) seconds.

    >>> med, best = time_it(lambda: sum(range(100)), repeats=3)
    >>> 0 <= best <= med
    True
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def run_suites(names: list[str], quick: bool, **options) -> list[dict]:
    """Run the named suites (the default ones when ``names`` is empty), concatenating their rows.

    ``options`` (``shape``, ``threads``, ``formats``, ``llama_cpp``) go to the decode suite;
    ``threads`` to the kernels suite too.
    """
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"unknown benchmark suite(s) {unknown}; choose from {sorted(SUITES)}")
    rows: list[dict] = []
    for name in names or list(DEFAULT_SUITES):
        module = importlib.import_module(SUITES[name])
        given = {k: v for k, v in options.items() if v is not None}
        takes = {"decode": set(given), "kernels": {"threads"}}.get(name, set())
        extra = {k: v for k, v in given.items() if k in takes}
        rows.extend(module.run(quick=quick, **extra))
    return rows
