"""Paired bootstrap intervals over evaluation windows: is a difference real or the sample's?

Every figure of the evaluator is a ratio of sums over windows w of the evaluation sample,

    statistic = f( Σ_w a_w / Σ_w n_w )          a_w: a window's summed loss, KL or agreements,
                                                n_w: the positions it predicts,

so the 95% interval is the percentile bootstrap (Efron & Tibshirani 1993, ch. 13): draw W
windows with replacement, recompute the statistic, repeat ``n_boot`` times, take the 2.5th and
97.5th percentiles. Windows (256 consecutive bytes), not positions, are resampled: positions of
one window are correlated, windows far apart nearly are not.

**Paired**: two models are scored on the same windows and every resample uses the same window
indices for both (one seeded index matrix serves every recipe). Δ = model − reference is
resampled as a per-window difference, so the large window-to-window variation of the loss
itself cancels — what remains is the noise of the *difference*, typically several times
smaller. A model identical to the reference has d_w = 0 in every window, hence the interval
[0, 0] exactly.

Shape legend: W windows, R bootstrap resamples.
"""

from __future__ import annotations

import numpy as np

__all__ = ["resample_indices", "ratio_interval", "percent_change_interval", "interval_str"]


def resample_indices(n_windows: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """The seeded (R, W) matrix of window indices drawn with replacement, shared by all models.

    >>> resample_indices(5, n_boot=2, seed=0).shape
    (2, 5)
    """
    if n_windows < 1 or n_boot < 1:
        raise ValueError(f"need n_windows >= 1 and n_boot >= 1, got {n_windows}, {n_boot}")
    return np.random.default_rng(seed).integers(0, n_windows, size=(n_boot, n_windows))


def _resampled_ratio(a: np.ndarray, n: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Σ a / Σ n over each resample: (R,)."""
    return a[idx].sum(axis=1) / n[idx].sum(axis=1)


def ratio_interval(
    a: np.ndarray, n: np.ndarray, idx: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of Σa/Σn (e.g. mean KL per position) under the resamples ``idx``.

    >>> idx = resample_indices(3, 100)
    >>> ratio_interval(np.zeros(3), np.full(3, 256.0), idx)
    (0.0, 0.0)
    """
    a, n = np.asarray(a, np.float64), np.asarray(n, np.float64)
    stats = _resampled_ratio(a, n, idx)  # (R,)
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [q, 100 - q])
    return float(lo), float(hi)


def percent_change_interval(
    d: np.ndarray, n: np.ndarray, idx: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Interval of 100·(exp(Σd/Σn) − 1): the % change of perplexity, d_w = Δ summed NLL.

    With d_w = nll_q − nll_ref per window, exp(Σd/Σn) = ppl_q / ppl_ref. Identical models give
    d = 0 and exactly (0, 0):

    >>> idx = resample_indices(4, 200)
    >>> percent_change_interval(np.zeros(4), np.full(4, 256.0), idx)
    (0.0, 0.0)
    >>> lo, hi = percent_change_interval(np.array([2.0, 3.0, 2.5, 2.4]), np.full(4, 256.0), idx)
    >>> bool(0 < lo < 100 * (np.exp(9.9 / 1024) - 1) < hi)
    True
    """
    lo, hi = ratio_interval(d, n, idx, level)
    return 100.0 * float(np.expm1(lo)), 100.0 * float(np.expm1(hi))


def interval_str(point: float, ci: tuple[float, float], fmt: str = "+.2f") -> str:
    """``+0.23 [+0.15, +0.31]``, with ``≈0`` appended when the interval contains 0.

    >>> interval_str(0.2345, (0.151, 0.312)), interval_str(0.01, (-0.02, 0.04))
    ('+0.23 [+0.15, +0.31]', '+0.01 [-0.02, +0.04] ≈0')
    >>> interval_str(0.0, (0.0, 0.0))
    '+0.00 [+0.00, +0.00]'
    """
    lo, hi = ci
    s = f"{point:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
    return s + " ≈0" if lo <= 0.0 <= hi and (lo, hi) != (0.0, 0.0) else s
