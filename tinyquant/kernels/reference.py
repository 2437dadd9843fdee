"""Naive NumPy versions of the quantized matmuls — the oracle every fast kernel must match.

Integer GEMM (weights stored (out, in), so C = A Bᵀ):

    C[m, n] = Σ_k A[m, k] · B[n, k]                   int8 × int8 → int32, exact

W8A8 linear (per-token dynamic activations, per-channel weights; Xiao et al. 2023
"SmoothQuant", §2; Dettmers et al. 2022 "LLM.int8()", eq. 1 — the vector-wise scales):

    s_x[t] = max_i |x[t, i]| / 127,   q_x = clip(round(x / s_x), −127, 127)
    y[t, o] = s_x[t] · s_w[o] · Σ_i q_x[t, i] · q_w[o, i]

Both scales sit on axes that survive the reduction (t and o), so they factor out of the integer
sum — a per-*input*-channel activation scale would not.

Weight-only W{8,4,3,2}A16 linear, one function for every ``bits`` (Frantar et al. 2023 "GPTQ",
§5 — group-wise weights; activations stay float; here float32, since Numba CPU kernels have no
float16):

    W[o, i] = (q[o, i] − z[o, g]) · s[o, g],   g = i // group_size
    y = x Wᵀ

Codes arrive packed in the canonical layout of ``tinyquant.quant.pack`` (unsigned; symmetric
formats use zero = 2^(b−1)). The fast kernels regroup the sum as
Σ_g s[o,g] · (Σ_{i∈g} q[o,i] x[t,i] − z[o,g] Σ_{i∈g} x[t,i]); the float results therefore agree
with this reference to float32 rounding, not bit for bit (see ``FLOAT_RTOL``).

W4A8 linear (4-bit group-wise weights × int8 per-token activations; the integer dot products
of llama.cpp's Q4_0 × Q8_0 path; Lin et al. 2024 "QServe", W4A8 with group zero-points):

    acc[t, o, g] = Σ_{i∈g} q[o, i] · q_x[t, i]                          int32, exact
    asum[t, g]   = Σ_{i∈g} q_x[t, i]                                     int32, exact
    y[t, o]      = s_x[t] · Σ_g s[o, g] · (acc[t, o, g] − z[o, g] · asum[t, g])

in one fixed float32 order — the contract every W4A8 implementation keeps *to the bit*:
y = +0; for g = 0, 1, …, G − 1 in turn: d = f32(acc) − z · f32(asum); y = y + s · d; finally
y = y · s_x (round after every operation, no fused multiply-add; ``fold_groups``).

Shape legend: M, N, K GEMM sizes; T tokens, I in features, O out features, g group size,
G = I / g groups.
"""

from __future__ import annotations

import numpy as np

from tinyquant.quant.activations import quantize_activations
from tinyquant.quant.pack import unpack

from .checks import (
    check_activations,
    check_int8_operands,
    check_w4a8,
    check_w8a8,
    check_weight_only,
)

__all__ = [
    "FLOAT_RTOL",
    "int8_matmul",
    "quantize_per_token",
    "w8a8_linear",
    "scale_accumulator",
    "dequantize_groups",
    "weight_only_linear",
    "fold_groups",
    "w4a8_linear",
]

# Float outputs of a fast kernel must satisfy |y − y_ref| ≤ FLOAT_RTOL · (|x| |W|ᵀ + |x| |z s|ᵀ):
# a relative bound on the magnitude of the terms summed, i.e. float32 rounding of a
# reassociated sum of at most a few thousand terms.
FLOAT_RTOL = 1e-5


def int8_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A Bᵀ for int8 A (M, K) and int8 B (N, K), accumulated exactly in int32.

    This is NumPy's integer matmul (no BLAS: one thread, a few GOP/s) — the baseline the
    Numba kernels beat by one to two orders of magnitude.

    >>> a = np.array([[1, -2, 3]], dtype=np.int8); b = np.array([[4, 5, 6], [-1, 0, 1]], np.int8)
    >>> int8_matmul(a, b)
    array([[12,  2]], dtype=int32)
    """
    check_int8_operands(a, b)
    return a.astype(np.int32) @ b.astype(np.int32).T  # (M, K) @ (K, N) -> (M, N)


def quantize_per_token(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic symmetric int8 quantization of each row: (q_x int8 (T, I), s_x float32 (T,)).

    s_x = absmax / 127 (an all-zero row gets s_x = 1 and codes 0); q_x = clip(round(x / s_x)):
    the one activation quantizer (``quant.activations``), after the kernels' input checks. The
    fast W8A8 kernels call this very function, so their integer inputs are identical.

    >>> q, s = quantize_per_token(np.array([[0.5, -1.27, 0.0]], dtype=np.float32))
    >>> q, s
    (array([[  50, -127,    0]], dtype=int8), array([0.01], dtype=float32))
    """
    check_activations(x)
    return quantize_activations(x, "per_token")  # (T, I) int8, (T,) float32


def w8a8_linear(x: np.ndarray, w_codes: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """y = s_x · s_w · (q_x q_wᵀ): int8 weights (O, I) with one scale per output channel (O,).

    >>> x = np.array([[1.27, -0.5]], dtype=np.float32)
    >>> w = np.array([[127, 0], [0, 127]], dtype=np.int8); s = np.full(2, 1 / 127, np.float32)
    >>> w8a8_linear(x, w, s)
    array([[ 1.27, -0.5 ]], dtype=float32)
    """
    check_w8a8(x, w_codes, w_scale)
    q, s = quantize_per_token(x)
    acc = int8_matmul(q, w_codes)  # (T, O) int32, exact
    return scale_accumulator(acc, s, w_scale)  # (T, O)


def scale_accumulator(acc: np.ndarray, s_x: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    """y[t, o] = acc[t, o] · s_x[t] · s_w[o] in float32, left to right (T, O).

    Left to right, acc · s_x can overflow although y fits (|x| near float32's max): those
    entries alone are recomputed in float64, so y is finite whenever the product is.

    >>> acc = np.array([[16129]], np.int32); big = np.float32(3e38)
    >>> scale_accumulator(acc, np.array([big / 127]), np.array([1 / 127], np.float32))
    array([[3.e+38]], dtype=float32)
    """
    with np.errstate(over="ignore"):
        y = acc.astype(np.float32) * s_x[:, None] * s_w[None, :]  # (T, O)
        bad = ~np.isfinite(y)
        if bad.any():
            t, o = np.nonzero(bad)
            y[t, o] = (acc[t, o].astype(np.float64) * s_x[t] * s_w[o]).astype(np.float32)
    return y


def dequantize_groups(
    codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, group_size: int
) -> np.ndarray:
    """W = (q − z) · s with one (s, z) per group of ``group_size`` inputs: (O, I) float32.

    >>> q = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    >>> s, z = np.array([[1.0, 10.0]], np.float32), np.array([[1.0, 2.0]], np.float32)
    >>> dequantize_groups(q, s, z, 2)
    array([[-1.,  0.,  0., 10.]], dtype=float32)
    """
    O, I = codes.shape
    G = I // group_size
    q = codes.astype(np.float32).reshape(O, G, group_size)  # (O, G, g)
    w = (q - zero[:, :, None]) * scale[:, :, None]  # (O, G, g)
    return w.reshape(O, I).astype(np.float32)  # (O, I)


def weight_only_linear(
    x: np.ndarray,
    packed: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    group_size: int,
    bits: int,
) -> np.ndarray:
    """y = x Wᵀ with W dequantized from ``bits``-bit packed codes (O, I·bits/8).

    One row of ones for x, so y is the sum of the dequantized row, (q − z) · s with s = 1:

    >>> x = np.ones((1, 8), np.float32); s = np.ones((1, 1), np.float32)
    >>> weight_only_linear(x[:, :2], np.array([[3, 5]], np.uint8), s, 4 * s, 2, 8)  # (3−4)+(5−4)
    array([[0.]], dtype=float32)
    >>> weight_only_linear(x[:, :4], np.array([[0x21, 0x43]], np.uint8), s, 0 * s, 4, 4)  # 1+2+3+4
    array([[10.]], dtype=float32)
    >>> weight_only_linear(x, np.full((1, 3), 0xFF, np.uint8), s, 4 * s, 8, 3)  # 8 codes 7, z = 4
    array([[24.]], dtype=float32)
    >>> weight_only_linear(x[:, :4], np.array([[0b11100100]], np.uint8), s, 2 * s, 4, 2)  # 0,1,2,3
    array([[-2.]], dtype=float32)
    """
    check_weight_only(x, packed, scale, zero, group_size, bits)
    codes = unpack(packed, bits, x.shape[1])  # (O, I) uint8
    w = dequantize_groups(codes, scale, zero, group_size)  # (O, I)
    return (x @ w.T).astype(np.float32)  # (T, O)


def fold_groups(
    acc: np.ndarray, asum: np.ndarray, scale: np.ndarray, zero: np.ndarray, s_x: np.ndarray
) -> np.ndarray:
    """W4A8's float step: y = s_x · Σ_g s · (f32(acc) − z · f32(asum)) in the contract's order.

    ``acc`` (G, T, O) holds the per-group integer sums (int32, or floats holding them exactly),
    ``asum`` (T, G) the activation group sums, ``scale``/``zero`` (O, G), ``s_x`` (T,).

    >>> acc = np.array([[[10]], [[3]]], np.int32); asum = np.array([[2, -1]], np.int32)
    >>> s, z = np.array([[0.5, 2.0]], np.float32), np.array([[8.0, 8.0]], np.float32)
    >>> fold_groups(acc, asum, s, z, np.array([0.1], np.float32))  # (0.5·(10−16) + 2·(3+8))·0.1
    array([[1.9]], dtype=float32)
    """
    G, T, O = acc.shape
    y = np.zeros((T, O), np.float32)
    for g in range(G):  # sequentially, in increasing g
        d = acc[g].astype(np.float32) - zero[None, :, g] * asum[:, g, None].astype(np.float32)
        y = y + scale[None, :, g] * d  # (T, O)
    return y * s_x[:, None]  # (T, O)


def w4a8_linear(
    x: np.ndarray,
    packed: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    group_size: int,
    bits: int,
) -> np.ndarray:
    """y = s_x · Σ_g s · (acc − z · asum): 4-bit codes (O, I/2) × int8 per-token activations.

    ``bits`` 4, or 3 (the 3-bit canonical packing; codes ≤ 7). One token, 8 codes 1 in one
    group, zero 0, scale 1: x = [1.27, 0, …] quantizes to q_x = [127, 0, …] with s_x = 0.01,
    so y = 0.01 · 127:

    >>> x = np.zeros((1, 8), np.float32); x[0, 0] = 1.27
    >>> s, z = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    >>> w4a8_linear(x, np.full((1, 4), 0x11, np.uint8), s, z, 8, 4)
    array([[1.27]], dtype=float32)
    >>> w4a8_linear(x, np.full((1, 4), 0x99, np.uint8), s, z + 8, 8, 4)  # codes 9, zero 8
    array([[1.27]], dtype=float32)
    """
    check_w4a8(x, packed, scale, zero, group_size, bits)
    T, I = x.shape
    g = group_size
    q_x, s_x = quantize_per_token(x)  # (T, I) int8, (T,) float32
    codes = unpack(packed, bits, I).astype(np.int32)  # (O, I) unsigned codes
    qx = q_x.astype(np.int32)  # (T, I)
    acc = np.stack([qx[:, k : k + g] @ codes[:, k : k + g].T for k in range(0, I, g)])  # (G, T, O)
    asum = qx.reshape(T, I // g, g).sum(axis=2, dtype=np.int32)  # (T, G)
    return fold_groups(acc, asum, scale, zero, s_x)  # (T, O)
