"""Per-token int8 activation codes in one Numba pass — bit-identical to ``quant.activations``.

    s_x[t] = max_i |x[t, i]| / 127   (1 for an all-zero row),   q_x = clip(rint(x / s_x), ±127)
    gsum[t, j] = Σ_{i ∈ group j} q_x[t, i]                        (int32, exact)

The W8A8 and W4A8 kernels need q_x, s_x and the codes' sums (per group for W4A8's zero-point
folding, per row for the u8 × s8 correction of W8A8). ``quantize_activations`` computes the
same codes in five NumPy passes (abs, max, divide, rint, clip) plus a reshape-sum — ≈ 20 µs of
fixed cost a call, paid by each of a decode step's ~150 Linears. Here: one pass per row.

Same bits because every step is the same IEEE float32 operation: max is exact in any order,
amax / 127 and x / s_x are float32 divisions, ``rint`` rounds half to even in both, the clip
bounds are exact; no fast-math. ``tests/test_kernels_act_int8.py`` holds them equal, ties
included. The NumPy function stays the one definition (the reference and the fake paths call
it); this is its twin.

Shape legend: T tokens, I features, g group size, G = I / g.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["quantize_rows"]


@njit(cache=True)
def _quantize_rows(x, g, q, s, gsum):  # pragma: no cover - compiled
    T, I = x.shape
    qmax = np.float32(127.0)
    for t in range(T):
        row, qrow = x[t], q[t]
        amax = np.float32(0.0)
        for i in range(I):
            amax = max(amax, abs(row[i]))
        st = amax / qmax
        if not st > 0:
            st = np.float32(1.0)
        s[t] = st
        for j in range(I // g):
            acc = np.int32(0)
            for i in range(j * g, (j + 1) * g):
                v = min(max(np.rint(row[i] / st), -qmax), qmax)
                c = np.int8(v)
                qrow[i] = c
                acc += np.int32(c)
            gsum[t, j] = acc


def quantize_rows(x: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q_x int8 (T, I), s_x float32 (T,), gsum int32 (T, I / g)) of validated activations.

    x: finite float32 (T, I), C-contiguous (the caller has checked it); ``group_size`` divides I.

    >>> q, s, gs = quantize_rows(np.array([[0.5, -1.27, 0.0, 1.0]], np.float32), 2)
    >>> q, s
    (array([[  50, -127,    0,  100]], dtype=int8), array([0.01], dtype=float32))
    >>> gs
    array([[-77, 100]], dtype=int32)
    """
    T, I = x.shape
    if group_size < 1 or I % group_size:
        raise ValueError(f"group_size {group_size} must divide the {I} features")
    q = np.empty((T, I), np.int8)
    s = np.empty(T, np.float32)
    gsum = np.empty((T, I // group_size), np.int32)
    _quantize_rows(x, int(group_size), q, s, gsum)
    return q, s, gsum
