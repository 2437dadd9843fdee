"""Decode-step attention in Numba: the few newest queries against a KV cache, one thread pool.

    out[b, h, t] = Σ_{s ≤ n − T + t} softmax_s( q[b, h, t] · k[b, h // G, s] / √hd ) · v[b, h // G, s]

for the last T (≤ ``DECODE_MAX_T``) of n cached positions, with grouped-query attention (query
head h reads key/value head h // G, G = H / Hkv). The NumPy twin is ``llm.model.causal_attention``
(same function, float32 within ``reference.FLOAT_RTOL``; only the order of the sums differs).

Why a kernel: in batch-1 decoding the attention's products are small batched GEMMs (8 × 64 by
64 × S per key/value head), which NumPy hands to OpenBLAS. OpenBLAS threads that have just worked
keep spinning for a while, and so do Numba's; on a 2-core machine a quantized model that
alternates between the two pools makes each wait for the other. Measured at the TinyLlama-1.1B
shape, W4A16, 2 threads, context 1536: 39 ms/token with OpenBLAS attention, 10 ms with
OpenBLAS held to one thread (`bench decode` profile). With attention here too, a quantized
decode step enters one pool only.

Memory: each step reads the n cached keys and values once (2 · n · hd · 4 bytes per kv head);
a key row is loaded once and dotted with all G · T queries of its group.

Shape legend: B batch, H query heads, Hkv key/value heads, G = H / Hkv, T new queries,
C cache capacity, n filled positions (n ≤ C), hd head dim, R = G · T query rows per kv head.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["DECODE_MAX_T", "decode_attention"]

DECODE_MAX_T = 4  # more new queries than this is prefill: BLAS's batched GEMMs win there


@njit(cache=True, fastmath={"reassoc", "contract"})
def _scores(q, k, n, out):  # pragma: no cover - compiled
    """out[b, hk, r, s] = q[b, hk, r] · k[b, hk, s] for s < n; q (B, Hkv, R, hd), k (B, Hkv, C, hd)."""
    B, Hkv, R, hd = q.shape
    for b in range(B):
        for hk in range(Hkv):
            qg, kk, o = q[b, hk], k[b, hk], out[b, hk]  # (R, hd), (C, hd), (R, n)
            for s in range(n):  # each key row once, against the group's R queries
                ks = kk[s]
                for r in range(R):
                    qr = qg[r]
                    acc = np.float32(0.0)
                    for d in range(hd):
                        acc += qr[d] * ks[d]
                    o[r, s] = acc


@njit(cache=True)
def _weighted_values(p, v, out):  # pragma: no cover - compiled
    """out[b, hk, r] = Σ_s p[b, hk, r, s] · v[b, hk, s]; p (B, Hkv, R, n), v (B, Hkv, C, hd)."""
    B, Hkv, R, n = p.shape
    hd = v.shape[3]
    for b in range(B):
        for hk in range(Hkv):
            pg, vv, o = p[b, hk], v[b, hk], out[b, hk]  # (R, n), (C, hd), (R, hd)
            o[:] = 0.0
            for s in range(n):  # each value row once, into the R output rows
                vs = vv[s]
                for r in range(R):
                    w, orow = pg[r, s], o[r]
                    for d in range(hd):
                        orow[d] += w * vs[d]


def decode_attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n: int) -> np.ndarray:
    """Causal attention of the last T queries over the first ``n`` cached positions.

    q (B, H, T, hd) float32, the newest T of the n positions (rotated); k_cache, v_cache
    (B, Hkv, C, hd) float32, C-contiguous, positions [0, n) filled -> (B, H, T, hd).

    >>> from tinyquant.llm.model import causal_attention
    >>> rng = np.random.default_rng(0)
    >>> q = rng.standard_normal((1, 4, 1, 8), dtype=np.float32)
    >>> kc, vc = (rng.standard_normal((1, 2, 16, 8), dtype=np.float32) for _ in range(2))
    >>> ref = causal_attention(q, kc[:, :, :5], vc[:, :, :5])
    >>> bool(np.allclose(decode_attention(q, kc, vc, 5), ref, rtol=1e-5, atol=1e-6))
    True
    """
    for name, a in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 4:
            raise ValueError(f"{name} must be a 4-D float32 array, got {_describe(a)}")
    k_cache, v_cache = np.ascontiguousarray(k_cache), np.ascontiguousarray(v_cache)
    B, H, T, hd = q.shape
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache {k_cache.shape} and v_cache {v_cache.shape} differ in shape")
    Bk, Hkv, C, hdk = k_cache.shape
    if Bk != B or hdk != hd or Hkv == 0 or H % Hkv:
        raise ValueError(
            f"q {q.shape} does not fit a cache of shape {k_cache.shape}: batch and head dim "
            "must agree and the query heads must be a multiple of the key/value heads"
        )
    if not 1 <= T <= DECODE_MAX_T:
        raise ValueError(f"q has {T} new positions; decode_attention takes 1…{DECODE_MAX_T}")
    if not T <= n <= C:
        raise ValueError(f"n = {n} positions must hold the {T} queries and fit the cache ({C})")
    # 1) scores (Numba), 2) causal softmax (NumPy's vectorized exp), 3) P V (Numba)
    G, R = H // Hkv, (H // Hkv) * T
    scores = np.empty((B, Hkv, R, n), np.float32)
    _scores(np.ascontiguousarray(q).reshape(B, Hkv, R, hd), k_cache, int(n), scores)
    scores *= np.float32(1.0 / math.sqrt(hd))
    sc = scores.reshape(B, Hkv, G, T, n)
    sc[..., n - T + 1 :] += np.triu(np.full((T, T - 1), -np.inf, np.float32))  # query t sees < n−T+t+1
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    out = np.empty((B, Hkv, R, hd), np.float32)
    _weighted_values(scores, v_cache, out)
    return out.reshape(B, H, T, hd)


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__
