"""GPTQ: quantize a weight matrix column by column, pushing each column's error onto the rest.

For one Linear with weight W (O, I) and calibration inputs X (N, I), GPTQ minimises the layer
objective ‖XWᵀ − XQᵀ‖² = tr(ΔHΔᵀ)·N/2 with H = 2XᵀX/N and Δ = W − Q. Quantizing column i
to q and updating the not-yet-quantized columns optimally (the OBS update) is

    err = (w_i − q_i) / U[i, i]          W[:, i+1:] −= err ⊗ U[i, i+1:]

where U is the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU). The loss of column i is
(w_i − q_i)² / U[i, i]² / 2, and because Δ = E·U (E the matrix of errs) and U·H·Uᵀ = I,
Σ losses = ½·tr(ΔHΔᵀ) exactly (the damped H).

Ref: Frantar et al. 2022, "GPTQ", Algorithm 1 (lazy batch updates, Cholesky reformulation);
IST-DASLab/gptq ``gptq.py``/``quant.py`` (conventions below match them).

Conventions (as the reference): unsigned codes in [0, maxq], maxq = 2^bits − 1; the min-max range
always includes 0; symmetric zero = (maxq + 1)/2; round half to even; dead inputs (diag H = 0) get
H[i,i] = 1 and W[:, i] = 0; damping λ = damp·mean(diag H). Groups take their (scale, zero) when
their first column is reached, from the error-updated weights. Two deliberate differences:
without groups, the reference takes each row's (scale, zero) from W *before* zeroing the dead
columns (``find_params(W)`` runs first in ``fasterquant``); we take them after, so a dead
column's weights (which never reach the output) do not widen the grid — ``dead_params_from=
"original"`` reproduces the reference (groups are fitted after the zeroing in both). And
the reference reads a group that starts inside a chunk from W as it was at the chunk start (the
updates from the same chunk's earlier columns are missing); we read the fully updated weights.
``group_params_from="chunk_start"`` reproduces the reference.

At 2 bits with groups, grids fitted to the error-updated weights can run away (notebook 08): the
feedback inflates the later columns, their min-max grids inflate with them, coarser grids make
larger errors — on a layer with an ill-conditioned H GPTQ then loses to RTN on its own objective.
``static_groups=True`` (grids from the original W), more damping, or a Hadamard rotation
(``rotate.py``) prevent it; the best 2-bit result here combines all but the extra damping.

Shapes: O out features, I in features, g group size, G = I // g groups, c chunk width.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from tinyquant.algos.qgrid import UINT_BITS, minmax_qparams, mse_qparams, quantize_codes
from tinyquant.quant import QTensor, get_format, pack, per_group
from tinyquant.quant.checks import (
    check_bits,
    check_int,
    check_option,
    check_real,
    check_shape,
    float_array,
)

SUB = 32  # columns per sub-chunk: rank-1 updates stay inside it (a speed knob, not semantics)


@dataclass(frozen=True)
class GPTQResult:
    """What :func:`gptq_quantize` returns (arrays in the original column order).

    ``weight`` is the dequantized Q = scale[:, g_idx] · (codes − zero[:, g_idx]).
    """

    codes: np.ndarray  # (O, I) uint8, in [0, 2^bits − 1]
    scale: np.ndarray  # (O, G) float32 (float16-representable with scale_dtype="float16")
    zero: np.ndarray  # (O, G) float32 (integer-valued)
    g_idx: np.ndarray  # (I,) int32: the group of each column
    losses: np.ndarray  # (I,) float64: Σ_rows (w − q)² / U_ii² / 2 per column
    weight: np.ndarray  # (O, I) float32 dequantized weight
    bits: int
    group_size: int | None  # None = per-channel (one group of I columns)
    perm: np.ndarray | None  # (I,) processing order when act_order, else None
    damp: float  # the relative damping finally used (after any retries)
    scale_dtype: str = "float32"  # how the scales are stored


def _inverse_cholesky(A: np.ndarray) -> np.ndarray:
    """L⁻¹ where A = LLᵀ (L lower), by 2×2 blocks so nearly all the work is BLAS GEMMs.

    [[A11, ·], [A21, A22]]: L11 = chol(A11), L21 = A21·L11⁻ᵀ, L22 = chol(A22 − L21·L21ᵀ) and
    (L⁻¹)21 = −L22⁻¹·L21·L11⁻¹. (LAPACK's potrf + trtri would do; NumPy exposes only potrf,
    and a general LU inverse of the triangular factor costs 3× more.)
    """
    n = A.shape[0]
    if n <= 256:
        return np.linalg.inv(np.linalg.cholesky(A))  # LinAlgError if A is not pos. definite
    h = n // 2
    L11i = _inverse_cholesky(A[:h, :h])  # (h, h)
    L21 = A[h:, :h] @ L11i.T  # (n−h, h)
    L22i = _inverse_cholesky(A[h:, h:] - L21 @ L21.T)  # (n−h, n−h)
    Li = np.empty_like(A)
    Li[:h, :h], Li[:h, h:], Li[h:, h:] = L11i, 0.0, L22i
    Li[h:, :h] = -(L22i @ (L21 @ L11i))
    return Li


def upper_cholesky_of_inverse(H: np.ndarray) -> np.ndarray:
    """U upper triangular with H⁻¹ = UᵀU, without forming H⁻¹.

    With J the reversal permutation and JHJ = MMᵀ (M lower), U = J·M⁻¹·J.
    Raises ``np.linalg.LinAlgError`` when H is not positive definite.

    >>> H = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> U = upper_cholesky_of_inverse(H)
    >>> bool(np.allclose(U.T @ U, np.linalg.inv(H)) and U[1, 0] == 0)
    True
    """
    Mi = _inverse_cholesky(np.ascontiguousarray(H[::-1, ::-1]))  # (I, I) lower
    return Mi[::-1, ::-1]


def damped_hinv_factor(
    H: np.ndarray, damp: float = 0.01, max_tries: int = 6
) -> tuple[np.ndarray, float]:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = damp·mean(diag H), retrying ×10 on failure.

    Returns (U, damp actually used). A retry emits a ``RuntimeWarning``.

    >>> U, d = damped_hinv_factor(np.eye(3), 0.01)
    >>> round(float(U[0, 0]) ** -2, 6), d
    (1.01, 0.01)
    """
    mean_diag = float(np.mean(np.diag(H)))
    cur = damp
    for attempt in range(max_tries):
        Hd = H.astype(np.float32)  # float32 factorization, as the reference (~1e-6 relative)
        Hd[np.diag_indices_from(Hd)] += np.float32(cur * mean_diag)
        try:
            U = upper_cholesky_of_inverse(Hd)
            if np.all(np.isfinite(U)):
                return U, cur
        except np.linalg.LinAlgError:
            pass
        nxt = cur * 10 if cur > 0 else 1e-4
        if attempt + 1 < max_tries:
            warnings.warn(
                f"GPTQ: H + {cur:g}·mean(diag H)·I is not positive definite; "
                f"retrying with damp={nxt:g}",
                RuntimeWarning,
                stacklevel=3,
            )
        cur = nxt
    raise ValueError(
        f"GPTQ: H is not positive definite even with damp={cur / 10:g}; check the calibration "
        "statistics for NaN/inf or collect more calibration tokens"
    )


class GroupParams:
    """Each group's (scale, zero) and how it is chosen: the one place GPTQ decides (both twins).

    ``static_groups``: every group fitted to the original W before any update; column perm[k]
    uses group perm[k] // g. Otherwise group k // g is fitted when its first column k is
    reached, to ``current()``: its columns with every update so far applied — or, with
    ``group_params_from="chunk_start"``, to ``chunk_start``: as they were when the chunk began
    (the reference implementation's stale in-chunk values). Arrays are (O, g) column blocks.
    """

    def __init__(self, W, perm, g, qparams, static_groups, params_from):
        O, I = W.shape
        self.perm, self.g, self.qparams = perm, g, qparams
        self.static, self.params_from = static_groups, params_from
        self.scale = np.zeros((O, I // g), np.float32)  # (O, G)
        self.zero = np.zeros((O, I // g), np.float32)  # (O, G)
        self.g_of_pos = np.zeros(I, np.int32)  # (I,) group of each processed position
        if static_groups:
            for k in range(I // g):
                self.scale[:, k], self.zero[:, k] = qparams(W[:, k * g : (k + 1) * g])

    def at(self, k: int, current, chunk_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero), each (O,), for processing position k; fits its group if k opens it."""
        if self.static:
            grp = int(self.perm[k]) // self.g
        else:
            grp = k // self.g
            if k % self.g == 0:
                cols = chunk_start if self.params_from == "chunk_start" else current()  # (O, g)
                # one memory layout for both twins, so a reduction sums in the same order
                cols = np.ascontiguousarray(cols.T).T
                self.scale[:, grp], self.zero[:, grp] = self.qparams(cols)
        self.g_of_pos[k] = grp
        return self.scale[:, grp], self.zero[:, grp]


def prepare(W, H, bits, group_size, symmetric, act_order, static_groups, damp, mse,
            group_params_from, scale_dtype, dead_params_from="zeroed"):  # fmt: skip
    """Steps shared by both twins. Returns (W (O, I) in processing order, U, perm, groups, damp).

    1) dead inputs: a column nobody excites is set to zero and made harmless in H (without
       groups and with ``dead_params_from="original"``, the rows' grids come from W before)
    2) static groups from the original W  3) act-order: columns by decreasing diag H
    4) U = upper Cholesky factor of (H + λI)⁻¹ (= Alg. 1's Cholesky(H⁻¹)ᵀ), float32.
    """
    W = np.array(float_array(W, "W", ndim=2, what="(out_features, in_features)"))  # a copy
    O, I = W.shape
    H = float_array(H, "H", ndim=2, what="(in_features, in_features)", dtype=np.float64)
    check_shape(H, "H", (I, I), f"W of shape {W.shape} has {I} in_features")
    H = np.array(H)  # a copy: we edit it
    bits = check_bits(bits, allowed=UINT_BITS)  # codes are uint{bits}: a format in the table
    g = I if group_size is None else per_group((O, I), group_size)[1]
    check_option(scale_dtype, "scale_dtype", ("float32", "float16"))
    check_option(group_params_from, "group_params_from", ("current", "chunk_start"))
    check_option(dead_params_from, "dead_params_from", ("zeroed", "original"))
    check_real(damp, "damp", 0.0)
    fit = mse_qparams if mse else minmax_qparams

    def qparams(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, z = fit(cols, bits, symmetric)  # cols (O, g) → scale (O,), zero (O,)
        return s.astype(scale_dtype).astype(np.float32), z

    W_grid = W.copy() if dead_params_from == "original" and g == I else None  # the reference
    dead = np.diag(H) == 0  # 1)
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(I)  # 3)
    if W_grid is not None:  # one group of I columns, fitted up front to the un-zeroed W
        groups = GroupParams(W_grid, perm, g, qparams, True, group_params_from)
    else:
        groups = GroupParams(W, perm, g, qparams, static_groups, group_params_from)  # 2)
    U, damp_used = damped_hinv_factor(H[np.ix_(perm, perm)], damp)  # 4)
    return W[:, perm], np.ascontiguousarray(U), perm, groups, damp_used


def finish(codes, Q, losses, perm, groups, bits, group_size, act_order, damp, scale_dtype):
    """The result in the original column order (codes, Q (O, I) and losses (I,) as processed)."""
    inv = np.argsort(perm)
    return GPTQResult(
        codes=np.ascontiguousarray(codes[:, inv]),
        scale=groups.scale,
        zero=groups.zero,
        g_idx=groups.g_of_pos[inv].astype(np.int32),
        losses=losses[inv],
        weight=np.ascontiguousarray(Q[:, inv]),
        bits=bits,
        group_size=group_size,
        perm=perm if act_order else None,
        damp=damp,
        scale_dtype=scale_dtype,
    )


def _current_columns(WT, U, W1, Err1, i1, j1, j2, i, g):
    """Group columns k..k+g (k = i1 + i) as they are now, (O, g): the stored rows minus the
    updates still pending — from sub-chunk columns j1..i onto the rest of the chunk, and from
    chunk columns i1..k onto the later chunks."""
    i2, k = i1 + len(W1), i1 + i
    U1 = U[i1:i2, i1:i2]  # (c, c)
    return np.concatenate(
        [
            W1[i : min(j2, i + g)],
            W1[j2 : i + g] - U1[j1:i, j2 : i + g].T @ Err1[j1:i],
            WT[i2 : k + g] - U[i1:k, i2 : k + g].T @ Err1[:i],
        ]
    ).T  # (O, g)


def gptq_quantize(
    W: np.ndarray,
    H: np.ndarray,
    bits: int = 4,
    group_size: int | None = None,
    symmetric: bool = False,
    act_order: bool = False,
    static_groups: bool = False,
    damp: float = 0.01,
    chunk: int = 128,
    mse: bool = False,
    group_params_from: Literal["current", "chunk_start"] = "current",
    scale_dtype: Literal["float32", "float16"] = "float32",
    dead_params_from: Literal["zeroed", "original"] = "zeroed",
) -> GPTQResult:
    """Quantize W (O, I) with GPTQ given the layer Hessian H = 2XᵀX/N (I, I).

    ``bits`` is 2, 3, 4, 6 or 8 (the codes are uint{bits}, a format of the table; there is no
    uint1, uint5 or uint7). ``group_size=None`` is per-channel. ``mse=True`` chooses each
    group's (scale, zero) by the
    reference's shrink-grid search (``qgrid.mse_qparams``) instead of min-max.
    ``scale_dtype="float16"`` rounds each scale to float16 *before* its codes are chosen (as
    stored by GPTQ/AutoGPTQ checkpoints), so codes and stored scales agree exactly.
    ``dead_params_from="original"`` (per-channel only) fits the grids before dead columns are
    zeroed, as IST-DASLab/gptq and AutoGPTQ do; "zeroed" (default) after.
    The literal Algorithm 1 is :func:`tinyquant.algos.gptq_reference.gptq_reference`.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(256, 16)) @ rng.normal(size=(16, 16))
    >>> W = rng.normal(size=(8, 16)).astype(np.float32)
    >>> r = gptq_quantize(W, 2 * X.T @ X / 256, bits=3)
    >>> r.codes.shape, int(r.codes.max()) <= 7, r.scale.shape
    ((8, 16), True, (8, 1))
    """
    check_int(chunk, "chunk (columns updated lazily at once; GPTQ uses 128)")
    # 1)–4) dead inputs, static groups, act-order, U (see `prepare`)
    Wp, U32, perm, groups, damp_used = prepare(
        W, H, bits, group_size, symmetric, act_order, static_groups, damp, mse,
        group_params_from, scale_dtype, dead_params_from,
    )  # fmt: skip
    I, O = Wp.shape[1], Wp.shape[0]
    g, maxq = groups.g, 2**bits - 1
    WT = np.ascontiguousarray(Wp.T)  # (I, O): column j of W is row j of WT
    QT = np.zeros_like(WT)  # (I, O) dequantized, permuted order
    codesT = np.zeros((I, O), np.uint8)
    losses = np.zeros(I, np.float64)

    # 5) walk the columns in chunks of `chunk`; inside a chunk, in sub-chunks of SUB columns:
    #    rank-1 OBS updates touch only the sub-chunk, a GEMM carries its errors to the rest of
    #    the chunk, and another carries the chunk's errors to all later columns (Alg. 1's lazy
    #    batch updates, applied twice). Same result as updating every column at every step.
    for i1 in range(0, I, chunk):
        i2 = min(i1 + chunk, I)
        W1 = WT[i1:i2].copy()  # (c, O) updated within the chunk
        Err1 = np.zeros_like(W1)  # (c, O)
        U1 = U32[i1:i2, i1:i2]  # (c, c)
        for j1 in range(0, i2 - i1, SUB):
            j2 = min(j1 + SUB, i2 - i1)
            for i in range(j1, j2):
                k = i1 + i  # position in processing order
                current = partial(_current_columns, WT, U32, W1, Err1, i1, j1, j2, i, g)
                s, z = groups.at(k, current, chunk_start=WT[k : k + g].T)
                w = W1[i]  # (O,)
                c = quantize_codes(w, s, z, maxq)  # (O,)
                q = s * (c - z)
                err = (w - q) / U1[i, i]  # GPTQ Alg. 1: E = (W − Q) / [H⁻¹]_cc
                losses[k] = float(np.sum(np.square(err, dtype=np.float64))) / 2
                W1[i + 1 : j2] -= U1[i, i + 1 : j2, None] * err[None, :]  # OBS update
                Err1[i] = err
                codesT[k] = c
                QT[k] = q
            W1[j2:] -= U1[j1:j2, j2:].T @ Err1[j1:j2]  # lazy update of the rest of the chunk
        WT[i2:] -= U32[i1:i2, i2:].T @ Err1  # lazy update of all later columns

    # 6) back to the original column order
    return finish(codesT.T, QT.T, losses, perm, groups, bits, group_size, act_order,
                  damp_used, scale_dtype)  # fmt: skip


def layer_objective(W: np.ndarray, Q: np.ndarray, H: np.ndarray) -> float:
    """½·tr(ΔHΔᵀ), Δ = W − Q: GPTQ's layer loss (= ‖XWᵀ − XQᵀ‖²/N for H = 2XᵀX/N).

    >>> layer_objective(np.ones((1, 2)), np.zeros((1, 2)), 2 * np.eye(2))
    2.0
    """
    D = np.asarray(W, np.float64) - np.asarray(Q, np.float64)  # (O, I)
    return float(np.sum((D @ np.asarray(H, np.float64)) * D) / 2)


def to_qtensor(r: GPTQResult) -> QTensor:
    """The result as a packed QTensor (uint{bits} codes, float32 scales, uint8 zeros).

    A QTensor has contiguous groups, so this needs g_idx = column // g: no act-order, or
    act-order with ``static_groups=True`` (or per-channel). Otherwise use ``r.weight``
    (fake-quant) — the reference then needs its g_idx at inference, which we avoid.

    >>> W = np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32)
    >>> r = gptq_quantize(W, np.eye(32), bits=4, group_size=16)
    >>> qt = to_qtensor(r)
    >>> qt.bits_per_weight, bool(np.array_equal(qt.dequantize(), r.weight))
    (6.5, True)
    >>> r16 = gptq_quantize(W, np.eye(32), bits=2, group_size=16, scale_dtype="float16")
    >>> qt16 = to_qtensor(r16)   # 2 bits + (16-bit scale + 8-bit zero) / 16
    >>> qt16.bits_per_weight, bool(np.array_equal(qt16.dequantize(), r16.weight))
    (3.5, True)
    """
    O, I = r.codes.shape
    g = I if r.group_size is None else r.group_size
    if not np.array_equal(r.g_idx, np.arange(I) // g):
        raise ValueError(
            "act-order groups are not contiguous; quantize with static_groups=True (or "
            "per-channel) to get a QTensor, or use result.weight on the fake-quant path"
        )
    f = get_format(f"uint{r.bits}")
    return QTensor(pack(r.codes, f.storage_bits), r.scale.astype(r.scale_dtype),
                   r.zero.astype(np.uint8), f, (1, g), (O, I))  # fmt: skip
