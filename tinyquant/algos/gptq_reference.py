"""GPTQ's Algorithm 1, literally: the naive twin of :func:`tinyquant.algos.gptq.gptq_quantize`.

    E:,j−i = (W:,j − Q:,j) / [H⁻¹]jj          W:,j:(i+B) −= E:,j−i · H⁻¹j,j:(i+B)

one column at a time inside a block of B columns, then the block's errors onto all later
columns at once: W:,(i+B): −= E · H⁻¹i:(i+B),(i+B): (the "lazy batch" update). H⁻¹ here is the
upper Cholesky factor of the damped inverse Hessian (Alg. 1 line 3). The setup (dead inputs,
act-order, damping, static groups) and every group's (scale, zero) come from the same helpers
as the fast version (``gptq.prepare``, ``gptq.GroupParams``), the grid from ``qgrid``.

With B = chunk ≤ ``gptq.SUB`` (32) the two twins do the same float operations (the lazy
products are taken in the fast twin's memory layout) and return identical codes, scales, losses
and weights. With a larger chunk the fast version carries errors inside a chunk by sub-chunk
GEMMs instead of rank-1 updates, which reassociates the float32 sums: the weights agree to
float32 rounding and a code on a rounding boundary may flip (the tests say how many).
Ref: Frantar et al. 2022, "GPTQ", Algorithm 1.
Shapes: O out features, I in features, g group size, B block width (the fast version's chunk).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from tinyquant.algos.gptq import GPTQResult, finish, prepare
from tinyquant.algos.qgrid import quantize_codes


def gptq_reference(W, H, bits=4, group_size=None, symmetric=False, act_order=False,
                   static_groups=False, damp=0.01, B=128, mse=False,
                   group_params_from="current", scale_dtype="float32",
                   dead_params_from="zeroed") -> GPTQResult:  # fmt: skip
    """GPTQ as Algorithm 1 of the paper, same arguments as ``gptq_quantize`` (chunk is B).

    >>> from tinyquant.algos.gptq import gptq_quantize
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(256, 64)) @ rng.normal(size=(64, 64))
    >>> W, H = rng.normal(size=(8, 64)).astype(np.float32), 2 * X.T @ X / 256
    >>> r = gptq_reference(W, H, bits=3, group_size=16, B=32)
    >>> bool(np.array_equal(r.codes, gptq_quantize(W, H, 3, 16, chunk=32).codes))
    True
    """
    if B < 1:
        raise ValueError(f"B={B} must be a positive number of columns (GPTQ uses 128)")
    W, Hinv, perm, groups, damp = prepare(
        W, H, bits, group_size, symmetric, act_order, static_groups, damp, mse,
        group_params_from, scale_dtype, dead_params_from,
    )  # fmt: skip
    O, I = W.shape  # W (O, I) in processing order; Hinv (I, I) upper: Cholesky(H⁻¹)ᵀ, line 3
    g, maxq = groups.g, 2**bits - 1
    Q = np.zeros_like(W)  # line 1: Q ← 0 (dequantized)
    codes = np.zeros((O, I), np.uint8)
    losses = np.zeros(I)  # Σ_rows E:,j² / 2 per column

    def lazy(E, Hinv_block):  # E · Hinv_block, as (Hinv_blockᵀ · Eᵀ)ᵀ: the fast twin's layout,
        return (Hinv_block.T @ np.ascontiguousarray(E.T)).T  # so BLAS sums in the same order

    def current(i, b, E, j):  # group columns j..j+g with every update so far applied, (O, g)
        later = W[:, b : j + g] - lazy(E[:, : j - i], Hinv[i:j, b : j + g])  # pending updates
        return np.concatenate([W[:, j : min(b, j + g)], later], axis=1)

    for i in range(0, I, B):  # line 4: blocks of B columns
        b = min(i + B, I)
        E = np.zeros((O, b - i), np.float32)  # line 2: E ← 0 (one block)
        W_start = W[:, i : i + B + g].copy()  # the block as it began (the reference's groups)
        for j in range(i, b):  # line 5
            s, z = groups.at(j, partial(current, i, b, E, j), W_start[:, j - i : j - i + g])
            codes[:, j] = quantize_codes(W[:, j], s, z, maxq)  # line 6: Q:,j ← quant(W:,j)
            Q[:, j] = s * (codes[:, j] - z)
            E[:, j - i] = (W[:, j] - Q[:, j]) / Hinv[j, j]  # line 7
            losses[j] = float(np.sum(np.square(E[:, j - i], dtype=np.float64))) / 2
            # line 8 (column j itself is already quantized, so the update starts at j + 1)
            W[:, j + 1 : b] -= np.outer(E[:, j - i], Hinv[j, j + 1 : b])
        W[:, b:] -= lazy(E, Hinv[i:b, b:])  # line 10: W:,(i+B): −= E · H⁻¹i:(i+B),(i+B):
    return finish(codes, Q, losses, perm, groups, bits, group_size, act_order, damp, scale_dtype)
