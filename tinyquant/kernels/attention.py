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

Memory: each step reads the n cached keys and values once: the row kernels walk the cache in
blocks that stay in L1 while all G·T queries of the group use them. At context 1536 (one
layer, 4 kv heads, hd 64: 3.1 MB of float32 K and V) the step took 0.54 ms with plain Numba
loops, 0.44 with per-row IR kernels (the cache re-read for each of the 8 query rows) and
0.32 with the blocked ones — ≈ 16 GB/s, one core's share of the memory bandwidth here: the
serial choice above is what bounds long-context decoding now.

Caching caveat (as in ``unpack_dot``): after editing the IR, clear ``kernels/__pycache__``.

Shape legend: B batch, H query heads, Hkv key/value heads, G = H / Hkv, T new queries,
C cache capacity, n filled positions (T ≤ n ≤ C), hd head dim, R = G·T query rows per kv head.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .llvm_loops import I8, I32, I64, broadcast, counted_loop, declare

__all__ = ["DECODE_MAX_T", "decode_attention"]

DECODE_MAX_T = 4  # more new queries than this is prefill: BLAS's batched GEMMs win there


def _transpose_sum(builder: ir.IRBuilder, vs: list) -> ir.Value:
    """16 vectors of 16 floats → one vector whose lane u is the sum of vs[u]'s lanes.

    Four halving steps: pairs of vectors swap halves (8, 4, 2, then 1 lanes wide) and add, so a
    lane ends up holding one vector's total — 30 shuffles and 15 adds for 16 dot products,
    instead of a 4-step horizontal reduction each.
    """
    width = 16
    while len(vs) > 1:
        width //= 2
        lo = [j for base in range(0, 32, 2 * width) for j in range(base, base + width)]
        hi = [j + width for j in lo]
        mlo, mhi = (ir.Constant(ir.VectorType(I32, 16), m) for m in (lo, hi))
        vs = [builder.fadd(builder.shuffle_vector(a, b, mlo), builder.shuffle_vector(a, b, mhi))
              for a, b in zip(vs[0::2], vs[1::2], strict=True)]  # fmt: skip
    return vs[0]


def _make_row_kernels(nvec: int):
    """Two intrinsics for the R query rows of one key/value head, hd = 16 · nvec:

    qk(q, R, k, ldk, n, out):  out[r, s] = Σ_d q[r, d] · k[s, d]     r < R, s < n
    pv(p, R, v, ldv, n, out):  out[r, d] += Σ_s p[r, s] · v[s, d]    (out zeroed by the caller)

    q (R, hd) and p (R, n), out rows contiguous float32; ``ldk``/``ldv`` the byte strides of
    the cache's positions. Both walk the positions in blocks (16 for qk, ``PV_BLOCK`` for pv)
    and run all R rows on a block while it sits in L1, so the cache is read from memory once
    per step — not once per query row (R = 8 at TinyLlama's shape: 8× the traffic, measured
    at L2 speed, ≈ 90 GB/s, without the blocking). qk sums a block's 16 products with
    ``_transpose_sum``; pv keeps an output row's hd accumulators in registers over a block.
    Why IR: Numba's loops over hd = 64 elements pay a vector loop's set-up (alias checks, a
    remainder) for every (position, query) pair — ≈ 4 multiply-adds per cycle measured.
    """
    f32 = ir.FloatType()
    v16f = ir.VectorType(f32, 16)
    zero = ir.Constant(v16f, None)

    def vec(builder, base, j):
        ptr = builder.bitcast(builder.gep(base, [I64(16 * j)]), v16f.as_pointer())
        return builder.load(ptr, align=4)

    def row_at(builder, base, pos, ld):  # float pointer to row ``pos`` of a byte-strided array
        return builder.bitcast(builder.gep(base, [builder.mul(pos, ld)]), f32.as_pointer())

    @intrinsic
    def qk(typingctx, q_addr, R, k_addr, ldk, n, out_addr):
        sig = types.void(*[types.intp] * 6)

        def codegen(context, builder, signature, args):
            q_a, R_v, k_a, ldk_v, n_v, o_a = args
            fma = declare(builder, "llvm.fma.v16f32", v16f, [v16f, v16f, v16f])
            reduce = declare(builder, "llvm.vector.reduce.fadd.v16f32", f32, [f32, v16f])
            qp = builder.inttoptr(q_a, I8.as_pointer())
            kp = builder.inttoptr(k_a, I8.as_pointer())
            op = builder.inttoptr(o_a, I8.as_pointer())
            ldq, ldo = I64(64 * nvec), builder.mul(n_v, I64(4))

            def dot(qrow, krow):
                acc = builder.fmul(vec(builder, qrow, 0), vec(builder, krow, 0))
                for j in range(1, nvec):
                    acc = builder.call(fma, [vec(builder, qrow, j), vec(builder, krow, j), acc])
                return acc

            def block(i, accs):  # positions 16i … 16i + 15, every query row
                s0 = builder.mul(i, I64(16))
                krows = [row_at(builder, kp, builder.add(s0, I64(u)), ldk_v) for u in range(16)]

                def row(r, a):
                    qrow = row_at(builder, qp, r, ldq)
                    sums = _transpose_sum(builder, [dot(qrow, kr) for kr in krows])
                    orow = row_at(builder, op, r, ldo)
                    ptr = builder.bitcast(builder.gep(orow, [s0]), v16f.as_pointer())
                    builder.store(sums, ptr, align=4)
                    return a

                counted_loop(builder, R_v, 0, zero, row, "qkr")
                return accs

            n16 = builder.sdiv(n_v, I64(16))
            counted_loop(builder, n16, 0, zero, block, "qk16")
            done = builder.mul(n16, I64(16))

            def one(i, accs):  # the last n mod 16 positions
                s = builder.add(done, i)
                krow = row_at(builder, kp, s, ldk_v)

                def row(r, a):
                    d = builder.call(reduce, [ir.Constant(f32, 0.0),
                                              dot(row_at(builder, qp, r, ldq), krow)],
                                     fastmath=("reassoc",))  # fmt: skip
                    builder.store(d, builder.gep(row_at(builder, op, r, ldo), [s]))
                    return a

                counted_loop(builder, R_v, 0, zero, row, "qk1r")
                return accs

            counted_loop(builder, builder.sub(n_v, done), 0, zero, one, "qk1")
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def pv(typingctx, p_addr, R, v_addr, ldv, n, out_addr):
        sig = types.void(*[types.intp] * 6)

        def codegen(context, builder, signature, args):
            p_a, R_v, v_a, ldv_v, n_v, o_a = args
            fma = declare(builder, "llvm.fma.v16f32", v16f, [v16f, v16f, v16f])
            pp = builder.inttoptr(p_a, I8.as_pointer())
            vp = builder.inttoptr(v_a, I8.as_pointer())
            op = builder.inttoptr(o_a, I8.as_pointer())
            ldp, ldo = builder.mul(n_v, I64(4)), I64(64 * nvec)
            bs = I64(PV_BLOCK)

            def block(i, accs):  # positions [s0, s0 + len), every output row
                s0 = builder.mul(i, bs)
                left = builder.sub(n_v, s0)
                length = builder.select(builder.icmp_signed("<", left, bs), left, bs)

                def row(r, a):
                    prow = row_at(builder, pp, r, ldp)
                    orow = row_at(builder, op, r, ldo)

                    def axpy(u, acc):
                        s = builder.add(s0, u)
                        w = broadcast(builder, builder.load(builder.gep(prow, [s])), v16f)
                        vrow = row_at(builder, vp, s, ldv_v)
                        return [builder.call(fma, [vec(builder, vrow, j), w, acc[j]])
                                for j in range(nvec)]  # fmt: skip

                    sums = counted_loop(builder, length, nvec, zero, axpy, "pvs")
                    for j in range(nvec):
                        ptr = builder.bitcast(builder.gep(orow, [I64(16 * j)]), v16f.as_pointer())
                        builder.store(builder.fadd(builder.load(ptr, align=4), sums[j]), ptr,
                                      align=4)  # fmt: skip
                    return a

                counted_loop(builder, R_v, 0, zero, row, "pvr")
                return accs

            nblocks = builder.sdiv(builder.add(n_v, I64(PV_BLOCK - 1)), bs)
            counted_loop(builder, nblocks, 0, zero, block, "pvb")
            return context.get_dummy_value()

        return sig, codegen

    return qk, pv


PV_BLOCK = 64  # positions per pv block: 64 value rows (16 KiB at hd = 64) stay in L1
qk_16, pv_16 = _make_row_kernels(1)
qk_32, pv_32 = _make_row_kernels(2)
qk_64, pv_64 = _make_row_kernels(4)
qk_128, pv_128 = _make_row_kernels(8)


@njit(cache=True)
def _scores(q, k, n, out):  # pragma: no cover - compiled
    """out[b, hk, r, s] = q[b, hk, r] · k[b, hk, s], s < n; q (B, Hkv, R, hd), k (B, Hkv, C, hd)."""
    B, Hkv, R, hd = q.shape
    C = k.shape[2]
    for bh in range(B * Hkv):
        qa, ka = q.ctypes.data + bh * R * hd * 4, k.ctypes.data + bh * C * hd * 4
        oa = out.ctypes.data + bh * R * n * 4
        if hd == 64:
            qk_64(qa, R, ka, hd * 4, n, oa)
        elif hd == 128:
            qk_128(qa, R, ka, hd * 4, n, oa)
        elif hd == 32:
            qk_32(qa, R, ka, hd * 4, n, oa)
        else:
            qk_16(qa, R, ka, hd * 4, n, oa)


@njit(cache=True)
def _weighted_values(p, v, out):  # pragma: no cover - compiled
    """out[b, hk, r] = Σ_s p[b, hk, r, s] · v[b, hk, s]; p (B, Hkv, R, n), v (B, Hkv, C, hd)."""
    B, Hkv, R, n = p.shape
    C, hd = v.shape[2], v.shape[3]
    out[:] = 0.0
    for bh in range(B * Hkv):
        pa, va = p.ctypes.data + bh * R * n * 4, v.ctypes.data + bh * C * hd * 4
        oa = out.ctypes.data + bh * R * hd * 4
        if hd == 64:
            pv_64(pa, R, va, hd * 4, n, oa)
        elif hd == 128:
            pv_128(pa, R, va, hd * 4, n, oa)
        elif hd == 32:
            pv_32(pa, R, va, hd * 4, n, oa)
        else:
            pv_16(pa, R, va, hd * 4, n, oa)


@njit(cache=True, fastmath={"reassoc", "contract"})
def _scores_loops(q, k, n, out):  # pragma: no cover - compiled
    """``_scores`` as plain loops, for head dims that are not 16, 32, 64 or 128."""
    B, Hkv, R, hd = q.shape
    for b in range(B):
        for hk in range(Hkv):
            qg, kk, o = q[b, hk], k[b, hk], out[b, hk]  # (R, hd), (C, hd), (R, n)
            for s in range(n):
                ks = kk[s]
                for r in range(R):
                    qr = qg[r]
                    acc = np.float32(0.0)
                    for d in range(hd):
                        acc += qr[d] * ks[d]
                    o[r, s] = acc


@njit(cache=True)
def _weighted_values_loops(p, v, out):  # pragma: no cover - compiled
    """``_weighted_values`` as plain loops, for the other head dims."""
    B, Hkv, R, n = p.shape
    hd = v.shape[3]
    for b in range(B):
        for hk in range(Hkv):
            pg, vv, o = p[b, hk], v[b, hk], out[b, hk]  # (R, n), (C, hd), (R, hd)
            o[:] = 0.0
            for s in range(n):
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
    vector = hd in (16, 32, 64, 128)  # the IR row kernels; other head dims: plain loops
    (_scores if vector else _scores_loops)(np.ascontiguousarray(q).reshape(B, Hkv, R, hd),
                                           k_cache, int(n), scores)  # fmt: skip
    scores *= np.float32(1.0 / math.sqrt(hd))
    sc = scores.reshape(B, Hkv, G, T, n)
    mask = np.triu(np.full((T, T - 1), -np.inf, np.float32))  # query t sees s < n − T + t + 1
    sc[..., n - T + 1 :] += mask  # (T, T − 1) over the last T − 1 positions
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    out = np.empty((B, Hkv, R, hd), np.float32)
    (_weighted_values if vector else _weighted_values_loops)(scores, v_cache, out)
    return out.reshape(B, H, T, hd)


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__
