"""Decode-step attention: the few newest queries against a KV cache, outside OpenBLAS.

    out[b, h, t] = Σ_{s < n−T+t+1} softmax_s(q[b, h, t] · k[b, h/G, s] / √hd) · v[b, h/G, s]

for the last T (≤ ``DECODE_MAX_T``) of n cached positions, with grouped-query attention (query
head h reads key/value head h // G, G = H / Hkv). The NumPy twin is ``llm.model.causal_attention``
(same function, float32; only the order of the sums differs). Steps: 1) q·k scores in Numba,
2) the causal softmax in NumPy (its exp is vectorized, Numba's scalar one is not), 3) P·V in
Numba. Both Numba steps are serial on purpose.

Why: in batch-1 decoding the attention's products are small batched GEMMs (G·T × hd by hd × n
per key/value head), which NumPy hands to OpenBLAS. OpenBLAS's threads keep spinning for a
while after a call, and so do Numba's; on a 2-core machine a quantized model whose Linears run
in Numba's pool and whose attention runs in OpenBLAS's makes each wait for the other. Measured
on a 4-block TinyLlama-1.1B-shaped model, W4A16, 2 threads, context 1536: 39 ms per token with
OpenBLAS attention, 11 ms with this one (FP32: 34.9 and 35.3 ms). A parallel Numba attention
fixed the quantized model (9.4 ms) but broke the FP32 one (60 ms: now its Linears in OpenBLAS
met Numba's spinning threads); a serial one runs beside either pool's idle threads.

Memory: each step reads the n cached keys and values once; a key or value row is loaded once
and used by all G·T queries of its group.

Shape legend: B batch, H query heads, Hkv key/value heads, G = H / Hkv, T new queries,
C cache capacity, n filled positions (T ≤ n ≤ C), hd head dim, R = G·T query rows per kv head.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["DECODE_MAX_T", "decode_attention"]

DECODE_MAX_T = 4  # more new queries than this is prefill: BLAS's batched GEMMs win there


@njit(cache=True, fastmath={"reassoc", "contract"})
def _scores(q, k, n, out):  # pragma: no cover - compiled
    """out[b, hk, r, s] = q[b, hk, r] · k[b, hk, s], s < n; q (B, Hkv, R, hd), k (B, Hkv, C, hd)."""
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
    mask = np.triu(np.full((T, T - 1), -np.inf, np.float32))  # query t sees s < n − T + t + 1
    sc[..., n - T + 1 :] += mask  # (T, T − 1) over the last T − 1 positions
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
