"""llama.cpp's K-quants: 256-weight super-blocks of 16 or 32-weight sub-blocks, two-level scales.

Each sub-block j gets its own scale (and min) from a search (kquant_search.py); those are then
quantized to 4, 6 or 8 bits against one FP16 super-scale d (and dmin), and the weights are
requantized with the scales as stored:

    Q2_K  84 B = 2.625 bpw   16 × 16   x̂ = d·sc_j·q − dmin·m_j    q ∈ [0, 3],  sc, m 4-bit
    Q3_K 110 B = 3.4375 bpw  16 × 16   x̂ = d·(sc_j − 32)·(q − 4)  q ∈ [0, 7],  sc 6-bit
    Q4_K 144 B = 4.5 bpw      8 × 32   x̂ = d·sc_j·q − dmin·m_j    q ∈ [0, 15], sc, m 6-bit
    Q5_K 176 B = 5.5 bpw      8 × 32   x̂ = d·sc_j·q − dmin·m_j    q ∈ [0, 31], sc, m 6-bit
    Q6_K 210 B = 6.5625 bpw  16 × 16   x̂ = d·sc_j·(q − 32)        q ∈ [0, 63], sc int8

Without an importance vector the reference quantizers (``quantize_row_*_ref``) weight each
weight by x² (Q3/Q6), |x| (Q2) or rms(x)+|x| (Q4/Q5). With one — the imatrix, mean x² of the
input channel — the ``*_impl`` quantizers weight by imatrix·sqrt(σ² + x²), search harder
(36 trial scales) and fit the super-block scales by weighted least squares (make_qp_quants).

Byte layouts (little-endian; L the 256 codes of a super-block, c a chunk of 64 or 128):
    Q2_K [ scales 16: sc_j | m_j << 4 ][ qs 64 ][ d fp16 ][ dmin fp16 ]
         qs[32c + l] = L[128c + l] | L[128c+32+l] << 2 | L[128c+64+l] << 4 | L[128c+96+l] << 6
    Q3_K [ hmask 32: bit ⌊j/32⌋ of byte j%32 = bit 2 of L[j] ][ qs 64: low 2 bits as Q2_K ]
         [ scales 12: 6-bit s_j, low nibbles in bytes 0–7, high 2 bits in bytes 8–11 ][ d fp16 ]
    Q4_K [ d ][ dmin ][ scales 12 (packed 6-bit, below) ][ qs 128: L[64c+l] | L[64c+32+l] << 4 ]
    Q5_K [ d ][ dmin ][ scales 12 ][ qh 32: bit 2c / 2c+1 of qh[l] = bit 4 of L[64c+l] /
         L[64c+32+l] ][ qs 128: low nibbles as Q4_K ]
    Q6_K [ ql 128: ql[64c+l] = L[128c+l] | L[128c+64+l] << 4, ql[64c+32+l] = L[128c+32+l] |
         L[128c+96+l] << 4 ][ qh 64: 2 high bits of L[128c+32k+l] at bit 2k of qh[32c+l] ]
         [ scales 16 int8 ][ d fp16 ]
    6-bit scale pair (Q4_K/Q5_K), j < 4: byte j = sc_j | (sc_{j+4} >> 4) << 6,
         byte j+4 = m_j | (m_{j+4} >> 4) << 6, byte j+8 = sc_{j+4} & 15 | (m_{j+4} & 15) << 4

Byte-identical to llama.cpp's quantizer (tests/test_export_gguf.py runs it); dequantization
equals gguf-py's. Refs: ggml-quants.c quantize_row_q{2..6}_K_ref and _impl, ggml-common.h
block_q*_K; llama.cpp PR #1684 (K-quants), #4861 (imatrix).
Shapes: x (…, n), n a multiple of 256; B = #super-blocks; w (n,) imatrix of the input channels.
"""

from __future__ import annotations

import numpy as np

from .affine import as_float32
from .floats import decode, encode
from .kquant_search import (
    _sum,
    make_q3_quants,
    make_qkx_quants,
    make_qp_quants,
    make_qx_quants,
    nearest_int,
)

__all__ = ["KQUANT_BLOCK_BYTES", "QK_K", "quantize_kquant", "dequantize_kquant"]

F = np.float32
QK_K = 256
KQUANT_BLOCK_BYTES = {"q2_k": 84, "q3_k": 110, "q4_k": 144, "q5_k": 176, "q6_k": 210}


def _h(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (B,) → (its FP16 bytes (B, 2), the FP16 value back in float32 (B,))."""
    bits = encode(v.astype(F), "fp16")
    return np.stack([bits & 0xFF, bits >> 8], -1).astype(np.uint8), decode(bits, "fp16")


def _fp16(b: np.ndarray) -> np.ndarray:
    """(B, 2) bytes → (B, 1) float32."""
    b = b.astype(np.uint16)
    return decode(b[:, 0] | (b[:, 1] << 8), "fp16")[:, None]


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (a / b).astype(F)


def _requant(x, L, d, lo, hi, dm=None):
    """Codes of x (B, S, s) on the stored sub-scales d (B, S): rint((x + dm)/d) − lo, clipped
    to [lo, hi] first; the search's codes L are kept where d = 0 (ggml's ``if (!d) continue``)."""
    num = x if dm is None else x + dm[..., None]
    new = np.clip(nearest_int(_div(num, d[..., None])), lo, hi) - lo
    return np.where(d[..., None] != 0, new, L)


def _pack2(L: np.ndarray) -> np.ndarray:
    """(B, 256) 2-bit codes → (B, 64): four codes 32 apart per byte, per 128-chunk."""
    q = L.reshape(-1, 2, 4, 32).astype(np.uint8)  # (B, chunk, k, l)
    return (q[:, :, 0] | q[:, :, 1] << 2 | q[:, :, 2] << 4 | q[:, :, 3] << 6).reshape(-1, 64)


def _unpack2(qs: np.ndarray) -> np.ndarray:
    q = qs.reshape(-1, 2, 1, 32)
    return ((q >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 3).reshape(-1, 256)


def _pack_scale_min(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins (B, 8) → the 12 bytes of Q4_K/Q5_K."""
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    lo = ls[:, :4] | (ls[:, 4:] >> 4) << 6
    mid = lm[:, :4] | (lm[:, 4:] >> 4) << 6
    hi = (ls[:, 4:] & 0xF) | (lm[:, 4:] & 0xF) << 4
    return np.concatenate([lo, mid, hi], axis=1)


def _unpack_scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4 for j = 0…7: (B, 12) → scales, mins (B, 8)."""
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], 1)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], 1)
    return sc, m


def _q2_k(x, w):
    xs = x.reshape(-1, 16, 16)  # (B, 16 sub-blocks, 16)
    B = xs.shape[0]
    if w is None:  # quantize_row_q2_K_ref
        sc, mn, L = make_qkx_quants(xs.reshape(-1, 16), np.abs(xs).reshape(-1, 16), 3, -0.5,
                                    0.1, 15, use_mad=True)  # fmt: skip
        sc, mn = sc.reshape(B, 16), mn.reshape(B, 16)
        max_sc, max_mn = np.maximum(sc.max(1), F(0)), np.maximum(mn.max(1), F(0))
        ls = np.where(max_sc[:, None] > 0, nearest_int(_div(F(15), max_sc)[:, None] * sc), 0)
        lm = np.where(max_mn[:, None] > 0, nearest_int(_div(F(15), max_mn)[:, None] * mn), 0)
        d, dmin = max_sc / F(15), max_mn / F(15)
    else:  # quantize_row_q2_K_impl
        sigma2 = _sum(x * x) / F(QK_K)  # (B,)
        wt = (w.reshape(-1, 16, 16) * np.sqrt(sigma2[:, None, None] + xs * xs)).astype(F)
        sc, mn, L = make_qkx_quants(xs.reshape(-1, 16), wt.reshape(-1, 16), 3, -0.9, 0.05, 36)
        sw = _sum(wt)  # (B, 16)
        d, ls = make_qp_quants(sc.reshape(B, 16), 15, sw)
        dmin, lm = make_qp_quants(mn.reshape(B, 16), 15, sw)
    scales = ls.astype(np.uint8) | (lm.astype(np.uint8) << 4)  # (B, 16)
    db, dv = _h(d)
    mb, mv = _h(dmin)
    dsub = dv[:, None] * (scales & 0xF).astype(F)
    L = _requant(xs, L.reshape(B, 16, 16), dsub, 0, 3, mv[:, None] * (scales >> 4).astype(F))
    return np.concatenate([scales, _pack2(L.reshape(B, 256)), db, mb], axis=1)


def _q3_k(x, w):
    xs = x.reshape(-1, 16, 16)
    B = xs.shape[0]
    if w is None:  # quantize_row_q3_K_ref
        sc, L = make_q3_quants(xs.reshape(-1, 16), 4)
        sc = sc.reshape(B, 16)
        max_sc = np.take_along_axis(sc, np.abs(sc).argmax(1)[:, None], 1)[:, 0]  # signed
        iscale = _div(F(-32), max_sc)
        ls = np.clip(nearest_int(iscale[:, None] * sc), -32, 31) + 32
        ls = np.where(max_sc[:, None] != 0, ls, 0)
        d = np.where(max_sc != 0, _div(F(1), iscale), F(0))
    else:  # quantize_row_q3_K_impl
        sigma2 = F(2) * _sum(x * x) / F(QK_K)
        wt = (w.reshape(-1, 16, 16) * np.sqrt(sigma2[:, None, None] + xs * xs)).astype(F)
        sc, L = make_qx_quants(xs.reshape(-1, 16), 4, wt.reshape(-1, 16))
        d, ls = make_qx_quants(sc.reshape(B, 16), 32, _sum(wt))
    ls = ls.astype(np.uint8)  # (B, 16) 6-bit
    scales = np.zeros((B, 12), np.uint8)
    scales[:, :8] = (ls[:, :8] & 0xF) | ((ls[:, 8:] & 0xF) << 4)
    hi = (ls >> 4).reshape(B, 4, 4)  # (B, j//4, j%4)
    scales[:, 8:] = hi[:, 0] | hi[:, 1] << 2 | hi[:, 2] << 4 | hi[:, 3] << 6
    db, dv = _h(d)
    dsub = dv[:, None] * (ls.astype(F) - F(32))
    L = _requant(xs, L.reshape(B, 16, 16), dsub, -4, 3).reshape(B, 256)  # codes q + 4
    hmask = np.zeros((B, 32), np.uint8)
    for b in range(8):  # bit b of hmask byte m ↔ code 32·b + m
        hmask |= (L[:, 32 * b : 32 * b + 32] > 3).astype(np.uint8) << b
    return np.concatenate([hmask, _pack2(L & 3), scales, db], axis=1)


def _q45_k(x, w, nmax):
    xs = x.reshape(-1, 8, 32)  # (B, 8 sub-blocks, 32)
    B = xs.shape[0]
    if w is None:  # quantize_row_q4_K_ref / q5_K_ref
        av_x = np.sqrt(_sum(xs * xs) / F(32))  # (B, 8)
        wt = av_x[..., None] + np.abs(xs)
        rmin = -1.0 if nmax == 15 else -0.5
        sc, mn, L = make_qkx_quants(xs.reshape(-1, 32), wt.reshape(-1, 32), nmax, rmin, 0.1,
                                    20 if nmax == 15 else 15)  # fmt: skip
        sc, mn = sc.reshape(B, 8), mn.reshape(B, 8)
        max_sc, max_mn = np.maximum(sc.max(1), F(0)), np.maximum(mn.max(1), F(0))
        inv_sc = np.where(max_sc > 0, _div(F(63), max_sc), F(0))
        inv_mn = np.where(max_mn > 0, _div(F(63), max_mn), F(0))
        ls = np.minimum(63, nearest_int(inv_sc[:, None] * sc) & 0xFF)
        lm = np.minimum(63, nearest_int(inv_mn[:, None] * mn) & 0xFF)
        d, dmin = max_sc / F(63), max_mn / F(63)
    else:  # quantize_row_q4_K_impl / q5_K_impl
        sigma2 = F(2) * _sum(x * x) / F(QK_K)
        wt = (w.reshape(-1, 8, 32) * np.sqrt(sigma2[:, None, None] + xs * xs)).astype(F)
        sc, mn, L = make_qkx_quants(xs.reshape(-1, 32), wt.reshape(-1, 32), nmax, -0.9, 0.05, 36)
        sw = _sum(wt)
        d, ls = make_qp_quants(sc.reshape(B, 8), 63, sw)
        dmin, lm = make_qp_quants(mn.reshape(B, 8), 63, sw)
    db, dv = _h(d)
    mb, mv = _h(dmin)
    dsub, msub = dv[:, None] * ls.astype(F), mv[:, None] * lm.astype(F)
    L = _requant(xs, L.reshape(B, 8, 32), dsub, 0, nmax, msub).reshape(B, 4, 2, 32)
    lo = (L & 0xF).astype(np.uint8)
    qs = (lo[:, :, 0] | lo[:, :, 1] << 4).reshape(B, 128)  # (B, chunk·32 + l)
    head = [db, mb, _pack_scale_min(ls, lm)]
    if nmax == 15:
        return np.concatenate([*head, qs], axis=1)
    hb = (L >> 4).astype(np.uint8)  # (B, chunk c, half, l): bit 2c + half of qh[l]
    qh = np.zeros((B, 32), np.uint8)
    for c in range(4):
        qh |= hb[:, c, 0] << (2 * c) | hb[:, c, 1] << (2 * c + 1)
    return np.concatenate([*head, qh, qs], axis=1)


def _q6_k(x, w):
    xs = x.reshape(-1, 16, 16)
    B = xs.shape[0]
    qw = None if w is None else w.reshape(-1, 16)  # _impl passes the imatrix as the weights
    sc, L = make_qx_quants(xs.reshape(-1, 16), 32, qw)
    sc = sc.reshape(B, 16)
    max_sc = np.take_along_axis(sc, np.abs(sc).argmax(1)[:, None], 1)[:, 0]
    zero = np.abs(max_sc) < F(1e-15)
    iscale = _div(F(-128), max_sc)
    db, dv = _h(np.where(zero, F(0), _div(F(1), iscale)))
    ls = np.minimum(127, nearest_int(iscale[:, None] * sc)).astype(np.int8)  # (B, 16)
    dsub = dv[:, None] * ls.astype(F)
    L = _requant(xs, L.reshape(B, 16, 16), dsub, -32, 31).reshape(B, 2, 4, 32).astype(np.uint8)
    lo, hi = L & 0xF, L >> 4  # (B, chunk, k, l)
    ql = np.concatenate([lo[:, :, 0] | lo[:, :, 2] << 4, lo[:, :, 1] | lo[:, :, 3] << 4], 2)
    qh = hi[:, :, 0] | hi[:, :, 1] << 2 | hi[:, :, 2] << 4 | hi[:, :, 3] << 6
    out = np.concatenate([ql.reshape(B, 128), qh.reshape(B, 64), ls.view(np.uint8), db], 1)
    return np.where(zero[:, None], np.uint8(0), out)


def quantize_kquant(x: np.ndarray, kind: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``x`` → llama.cpp K-quant bytes (uint8, (…, n/256 · block bytes)).

    ``imatrix`` (n,) weights the input channels (llama.cpp's importance matrix).

    >>> x = np.sin(np.arange(512, dtype=np.float32))[None]
    >>> b = quantize_kquant(x, "q4_k")
    >>> b.shape, float(np.abs(dequantize_kquant(b, "q4_k", 512) - x).max()) < 0.08
    ((1, 288), True)
    """
    if kind not in KQUANT_BLOCK_BYTES:
        raise ValueError(f"unknown K-quant {kind!r}; choose from {list(KQUANT_BLOCK_BYTES)}")
    x = as_float32(x)
    n = x.shape[-1]
    if n % QK_K:
        raise ValueError(f"row length {n} is not a multiple of {QK_K}; {kind} needs whole "
                         "super-blocks (llama.cpp falls back to a 32-block type)")  # fmt: skip
    w = None
    if imatrix is not None:
        w = np.asarray(imatrix, F)
        if w.shape != (n,):
            raise ValueError(f"imatrix has shape {w.shape}; this tensor needs ({n},)")
        w = np.broadcast_to(w, x.shape).reshape(-1, QK_K)
    xb = x.reshape(-1, QK_K)  # (B, 256)
    fn = {"q2_k": _q2_k, "q3_k": _q3_k, "q6_k": _q6_k}.get(kind)
    with np.errstate(invalid="ignore", divide="ignore"):  # all-zero blocks: inf·0, masked out
        out = fn(xb, w) if fn else _q45_k(xb, w, 15 if kind == "q4_k" else 31)
    return out.reshape(*x.shape[:-1], -1)


def dequantize_kquant(data: np.ndarray, kind: str, n: int) -> np.ndarray:
    """K-quant bytes → float32 values (…, n), as ggml's dequantize_row_q*_K.

    >>> b = quantize_kquant(np.ones((1, 256), np.float32), "q6_k")
    >>> dequantize_kquant(b, "q6_k", 256).min(), b.shape
    (np.float32(1.0), (1, 210))
    """
    size = KQUANT_BLOCK_BYTES.get(kind)
    data = np.asarray(data)
    if size is None or data.dtype != np.uint8 or n % QK_K or data.shape[-1] != n // QK_K * size:
        raise ValueError(f"{kind}: {n} values need uint8 rows of {n // QK_K * (size or 0)} bytes "
                         f"of a K-quant, got {data.dtype} {data.shape}")  # fmt: skip
    b = data.reshape(-1, size)
    B = b.shape[0]
    if kind in ("q4_k", "q5_k"):
        d, dmin = _fp16(b[:, 0:2]), _fp16(b[:, 2:4])
        sc, m = _unpack_scale_min(b[:, 4:16])
        qs = b[:, -128:].reshape(B, 4, 1, 32) >> np.array([0, 4], np.uint8)[:, None]
        q = (qs & 0xF).reshape(B, 8, 32).astype(np.int32)
        if kind == "q5_k":
            shifts = np.arange(8, dtype=np.uint8)[:, None]  # sub-block j ↔ bit j of qh
            q |= ((b[:, 16:48][:, None, :] >> shifts) & 1).astype(np.int32) << 4
        y = (d * sc)[..., None] * q - (dmin * m)[..., None]
    elif kind == "q6_k":
        ql, qh = b[:, :128].reshape(B, 2, 2, 32), b[:, 128:192].reshape(B, 2, 1, 32)
        lo = np.stack([ql[:, :, 0] & 0xF, ql[:, :, 1] & 0xF, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], 2)
        hi = (qh >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 3  # (B, 2, 4, 32)
        q = (lo | hi << 4).astype(np.int32).reshape(B, 16, 16) - 32
        sc = b[:, 192:208].view(np.int8).astype(F)
        y = (_fp16(b[:, 208:210]) * sc)[..., None] * q
    elif kind == "q3_k":
        s = b[:, 96:108]
        low = np.concatenate([s[:, :8] & 0xF, s[:, :8] >> 4], 1)  # (B, 16)
        high = (s[:, 8:12][:, None, :] >> (2 * np.arange(4, dtype=np.uint8))[:, None]) & 3
        sc = (low | high.reshape(B, 16) << 4).astype(F) - 32
        hbit = (b[:, :32][:, None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1  # (B, 8, 32)
        q = _unpack2(b[:, 32:96]).astype(np.int32) - 4 * (1 - hbit.reshape(B, 256))
        y = (_fp16(b[:, 108:110]) * sc)[..., None] * q.reshape(B, 16, 16)
    else:  # q2_k
        sc = b[:, :16]
        q = _unpack2(b[:, 16:80]).reshape(B, 16, 16)
        d, dmin = _fp16(b[:, 80:82]), _fp16(b[:, 82:84])
        y = (d * (sc & 0xF))[..., None] * q - (dmin * (sc >> 4))[..., None]
    return y.astype(F).reshape(*data.shape[:-1], n)
