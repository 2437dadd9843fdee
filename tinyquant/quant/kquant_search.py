"""The scale searches behind llama.cpp's K-quants, vectorised over blocks, bit-exact in float32.

Each finds, for a block x of n weights with importance weights w, codes L and a scale (and for
the affine ones a min) that make Σ w·(x − x̂)² small:

    make_qx_quants   x̂ = d·(L − nmax)        symmetric; 19 trial scales −(nmax + 0.1·k)/max, then
                                              d = Σ w x l / Σ w l² (weighted least squares)
    make_q3_quants   x̂ = d·(L − nmax)        symmetric; coordinate descent on each l (5 sweeps)
    make_qkx_quants  x̂ = d·L − m             affine (m ≥ 0); trial scales (rmin + k·rdelta + nmax)
                                              / (max − min), each refit by 2×2 least squares
    make_qp_quants   x̂ = d·L, L ∈ [0, nmax]  positive (the super-block's quantized scales/mins)

llama.cpp runs these loops element by element in float32, so results depend on the order of
every sum: ``_sum`` is a sequential float32 sum (``np.add.accumulate``), never a pairwise one,
and each product is written in C's left-to-right order ((w·x)·l, not w·(x·l)). ggml-base is built
without FMA (checked with objdump), so no product is fused into an add. ``nearest_int`` is
round-half-to-even (the 1.5·2²³ trick), i.e. ``np.rint``. Where C stops early because nothing
changed, we run the remaining sweeps: a sweep that changes nothing changes nothing again.

Refs: ggml-quants.c ``make_qx_quants``, ``make_q3_quants``, ``make_qkx2_quants``,
``make_qkx3_quants`` (one function here: they differ only in their defaults), ``make_qp_quants``;
llama.cpp PR #1684 (K-quants), #4861 (imatrix).
Shapes: B blocks, n weights per block; x, w (B, n) float32; L (B, n) int; scales (B,) float32.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_qx_quants", "make_q3_quants", "make_qkx_quants", "make_qp_quants", "nearest_int"]

F = np.float32
GROUP_MAX_EPS = F(1e-15)


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: round half to even (exact for |v| < 2²²), as int32.

    >>> nearest_int(np.array([0.5, 1.5, 2.5, -0.5], np.float32)).tolist()
    [0, 2, 2, 0]
    """
    with np.errstate(invalid="ignore"):  # blocks of zeros: their codes are discarded
        return np.rint(v).astype(np.int32)


def _sum(a: np.ndarray) -> np.ndarray:
    """Σ over the last axis in C's order ((0 + a₀) + a₁) + …, in float32.

    >>> float(_sum(np.array([[1e8, 1.0, -1e8, 1.0]], np.float32))[0])   # pairwise would give 2
    1.0
    """
    return np.add.accumulate(a, axis=-1, dtype=F)[..., -1] + F(0)  # + 0 turns −0 into C's +0


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """The signed value of the first element with the largest |x|, (B,)."""
    return np.take_along_axis(x, np.abs(x).argmax(axis=-1)[:, None], axis=-1)[:, 0]


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (a / b).astype(F)


def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None = None):
    """Symmetric codes L ∈ [0, 2·nmax) and scale d with x ≈ d·(L − nmax) (rmse_type 1).

    Weights are ``qw`` if given, else x². Returns (d (B,), L (B, n)).

    >>> d, L = make_qx_quants(np.array([[1.0, -0.5, 0.25, 0.0]], np.float32), 4)
    >>> L.tolist(), float(d[0]), (d[0] * (L - 4) + 0).tolist()     # the grid is exact here
    ([[0, 6, 3, 4]], -0.25, [[1.0, -0.5, 0.25, 0.0]])
    """
    x = x.astype(F)
    w = x * x if qw is None else qw.astype(F)
    mx = _signed_absmax(x)  # (B,)
    zero = np.abs(mx) < GROUP_MAX_EPS

    def trial(iscale):  # codes l ∈ [−nmax, nmax) and the least-squares sums
        l = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = l.astype(F)
        return l, _sum(w * x * lf), _sum(w * lf * lf)

    # 1) the plain scale −nmax/max, refit by least squares
    l, sumlx, suml2 = trial(_div(F(-nmax), mx))
    scale = np.where(suml2 != 0, _div(sumlx, suml2), F(0))
    best = scale * sumlx
    # 2) 18 more trial scales; keep one when it raises (Σwxl)²/Σwl²
    for k in range(-9, 10):
        if k == 0:
            continue
        lk, slx, sl2 = trial(_div(-(F(nmax) + F(0.1) * F(k)), mx))
        take = (sl2 > 0) & (slx * slx > best * sl2)
        l = np.where(take[:, None], lk, l)
        scale = np.where(take, _div(slx, sl2), scale)
        best = np.where(take, scale * slx, best)
    L = np.where(zero[:, None], 0, l + nmax)
    return np.where(zero, F(0), scale).astype(F), L


def make_q3_quants(x: np.ndarray, nmax: int):
    """Q3_K's symmetric search (do_rmse): weights x², then coordinate descent on each code.

    Returns (d (B,), L (B, n)) with x ≈ d·(L − nmax), L ∈ [0, 2·nmax).

    >>> d, L = make_q3_quants(np.array([[1.0, -0.5, 0.25, 0.0]], np.float32), 4)
    >>> L.tolist(), float(d[0])
    ([[0, 6, 3, 4]], -0.25)
    """
    x = x.astype(F)
    w = x * x
    mx = _signed_absmax(x)
    zero = np.abs(mx) < GROUP_MAX_EPS
    L = np.clip(nearest_int(_div(F(-nmax), mx)[:, None] * x), -nmax, nmax - 1)  # (B, n)
    Lf = L.astype(F)
    sumlx, suml2 = _sum(w * x * Lf), _sum(w * Lf * Lf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(5):  # sweeps
            for i in range(x.shape[1]):
                wi, xi, li = w[:, i], x[:, i], L[:, i].astype(F)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                new = np.clip(nearest_int(_div(xi * sl2, slx)), -nmax, nmax - 1)
                nf = new.astype(F)
                slx2, sl22 = slx + wi * xi * nf, sl2 + wi * nf * nf
                take = (slx > 0) & (new != L[:, i]) & (sl22 > 0)
                take &= slx2 * slx2 * suml2 > sumlx * sumlx * sl22
                L[:, i] = np.where(take, new, L[:, i])
                sumlx, suml2 = np.where(take, slx2, sumlx), np.where(take, sl22, suml2)
    d = np.where(suml2 > 0, _div(sumlx, suml2), F(0))
    return np.where(zero, F(0), d).astype(F), np.where(zero[:, None], 0, L + nmax)


def make_qkx_quants(x, w, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad=False):
    """Affine codes L ∈ [0, nmax], scale d and min m ≥ 0 with x ≈ d·L − m, minimising Σ w·err.

    err is (x − x̂)² (or |x − x̂| with ``use_mad``). Returns (d (B,), m (B,), L (B, n)).

    >>> x = np.array([[0.0, 0.1, 0.2, 0.3]], np.float32)
    >>> d, m, L = make_qkx_quants(x, np.ones_like(x), 3, -0.5, 0.1, 15)
    >>> L.tolist(), round(float(d[0]), 4), float(m[0]) == 0
    ([[0, 1, 2, 3]], 0.1, True)
    """
    x, w = x.astype(F), w.astype(F)
    mn = np.minimum(x.min(axis=-1), F(0))  # (B,) the min is never above 0
    mx = x.max(axis=-1)
    flat = mx == mn
    sum_w, sum_x = _sum(w), _sum(w * x)

    def err(scale, minv, L):
        diff = scale[:, None] * L.astype(F) + minv[:, None] - x
        return _sum(w * (np.abs(diff) if use_mad else diff * diff))

    def codes(iscale, minv):
        return np.clip(nearest_int(iscale[:, None] * (x - minv[:, None])), 0, nmax)

    # 1) the min–max scale
    iscale = _div(F(nmax), mx - mn)
    scale = _div(F(1), iscale)
    L = codes(iscale, mn)
    best = err(scale, mn, L)
    minv = mn
    # 2) nstep + 1 trial scales, each refit: [d, m] = argmin Σ w (d·l + m − x)². As in C, a
    #    trial's range and codes use the min of the best fit so far, not the block's min.
    for k in range(nstep + 1):
        La = codes(_div(F(rmin) + F(rdelta) * F(k) + F(nmax), mx - minv), minv)
        lf = La.astype(F)
        sum_l, sum_l2, sum_xl = _sum(w * lf), _sum(w * lf * lf), _sum(w * lf * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = _div(sum_w * sum_xl - sum_x * sum_l, D)
        this_min = _div(sum_l2 * sum_x - sum_l * sum_xl, D)
        pos = this_min > 0
        this_scale = np.where(pos, _div(sum_xl, sum_l2), this_scale)
        this_min = np.where(pos, F(0), this_min)
        with np.errstate(invalid="ignore", over="ignore"):
            cur = err(this_scale, this_min, La)
            take = (D > 0) & (cur < best)
        L = np.where(take[:, None], La, L)
        best = np.where(take, cur, best)
        scale, minv = np.where(take, this_scale, scale), np.where(take, this_min, minv)
    scale = np.where(flat, F(0), scale).astype(F)
    L = np.where(flat[:, None], 0, L)
    return scale, (-np.where(flat, mn, minv)).astype(F), L


def make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray):
    """Codes L ∈ [0, nmax] and scale d with x ≈ d·L for non-negative x (super-block scales).

    >>> d, L = make_qp_quants(np.array([[0.5, 1.0, 0.25]], np.float32), 63, np.ones((1, 3)))
    >>> L.tolist(), round(float(d[0]) * 63, 4)
    ([[32, 63, 16]], 0.9962)
    """
    x, w = x.astype(F), qw.astype(F)
    mx = np.maximum(x.max(axis=-1), F(0))
    zero = mx < GROUP_MAX_EPS
    # 1) nine trial scales (nmax + 0.1·k)/max; keep the lowest weighted MSE
    iscale = _div(F(nmax), mx)
    scale = _div(F(1), iscale)
    L = nearest_int(iscale[:, None] * x)
    diff = x - scale[:, None] * L.astype(F)
    best = _sum(w * diff * diff)
    for k in range(-4, 5):
        if k == 0:
            continue
        isk = _div(F(0.1) * F(k) + F(nmax), mx)
        lk = np.minimum(nmax, nearest_int(isk[:, None] * x)).astype(F)
        diff = x - _div(F(1), isk)[:, None] * lk
        mse = _sum(w * diff * diff)
        iscale = np.where(mse < best, isk, iscale)
        best = np.minimum(mse, best)
    # 2) least squares and 5 sweeps of coordinate descent on the codes
    L = np.minimum(nmax, nearest_int(iscale[:, None] * x))
    Lf = L.astype(F)
    sumlx, suml2 = _sum(w * x * Lf), _sum(w * Lf * Lf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(5):
            for i in range(x.shape[1]):
                wi, xi, li = w[:, i], x[:, i], L[:, i].astype(F)
                slx, sl2 = sumlx - wi * xi * li, suml2 - wi * li * li
                new = np.minimum(nmax, nearest_int(_div(xi * sl2, slx)))
                nf = new.astype(F)
                slx2, sl22 = slx + wi * xi * nf, sl2 + wi * nf * nf
                take = (slx > 0) & (sl2 > 0) & (new != L[:, i])
                take &= slx2 * slx2 * suml2 > sumlx * sumlx * sl22
                L[:, i] = np.where(take, new, L[:, i])
                sumlx, suml2 = np.where(take, slx2, sumlx), np.where(take, sl22, suml2)
    d = np.where(suml2 > 0, _div(sumlx, suml2), F(0))
    return np.where(zero, F(0), d).astype(F), np.where(zero[:, None], 0, L)
