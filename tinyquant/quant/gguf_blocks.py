"""llama.cpp's legacy block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: affine blocks of 32 weights.

Each is our affine quantizer with block (1, 32) and an FP16 scale — with llama.cpp's own rounding:

    Q8_0 (34 B per 32 = 8.5 bpw)  d = amax / 127    q = roundf(x·(1/d))               x̂ = q·d
    Q4_0 (18 B per 32 = 4.5 bpw)  d = max / −8      q = min(15, trunc(x·(1/d) + 8.5))  x̂ = (q − 8)·d
    Q4_1 (20 B per 32 = 5.0 bpw)  d = (max − min) / 15, m = min
                                  q = min(15, trunc((x − m)·(1/d) + 0.5))             x̂ = q·d + m
    Q5_0 (22 B per 32 = 5.5 bpw)  as Q4_0 with 16: d = max / −16, q = min(31, trunc(x/d + 16.5))
    Q5_1 (24 B per 32 = 6.0 bpw)  as Q4_1 with 31: d = (max − min) / 31, q = trunc((x − m)/d + 0.5)

With an importance vector w (llama.cpp's imatrix, one value per input channel) the block is
fitted by weighted least squares instead (``quantize_row_q4_0_impl`` … ``q5_1_impl``): weights
w·sqrt(σ² + x²) with σ² the row's mean x², the scale from make_qx_quants (Q4_0/Q5_0) or
make_qkx3_quants (Q4_1/Q5_1, m = −min) in kquant_search.py. Q8_0 ignores the imatrix.

``max`` in Q4_0 is the *signed* value of the element with the largest |x| (the first on ties), so
that element maps exactly to code 0 (value −8·d); the grid is asymmetric around it. ``roundf``
rounds half away from zero (C's roundf), unlike the half-to-even of affine.py. Codes are computed
with the float32 d; the stored d (and m) are rounded to FP16 (floats.encode). An all-zero block
stores d = ±0 and decodes to zeros. (A block whose float32 d is subnormal makes ggml's 1/d
overflow and its float→int cast undefined; we clip such codes to [0, 15] and do not claim a
match.) Where these differ from affine.py: the rounding rule, x·(1/d)
instead of x/d, and Q4_0's signed-max scale — which is why they live in their own module.

Byte layout of one block (little-endian), j = 0…15:
    Q8_0   [ d : fp16 ][ q0 … q31 : int8 ]
    Q4_0   [ d : fp16 ][ byte j = q[j] (low nibble) | q[j+16] << 4 (high nibble) ]
    Q4_1   [ d : fp16 ][ m : fp16 ][ byte j = q[j] | q[j+16] << 4 ]
    Q5_0   [ d : fp16 ][ qh : uint32, bit k = bit 4 of q[k] ][ byte j = low nibbles as Q4_0 ]
    Q5_1   [ d : fp16 ][ m : fp16 ][ qh : uint32 ][ byte j = low nibbles as Q4_1 ]
(Note the nibble order: element j and j+16 share a byte — not pack.py's 2k / 2k+1.)

Byte-identical to the ``gguf`` package (llama.cpp's gguf-py, itself bit-exact with ggml-quants.c);
a test proves it. Refs: ggml-quants.c quantize_row_q8_0_ref / q4_0_ref / q4_1_ref / q5_0_ref /
q5_1_ref and the ``*_impl`` variants.
Shape legend: x (…, n), n a multiple of 32; blocks (…, n/32, 32); bytes (…, n/32 · block bytes).
"""

from __future__ import annotations

import warnings

import numpy as np

from .checks import as_float32, check_int
from .floats import decode, encode
from .kquant_search import _sum, make_qkx_quants, make_qx_quants

__all__ = ["GGUF_BLOCK_BYTES", "quantize_gguf", "dequantize_gguf", "roundf"]

QK = 32  # weights per block
GGUF_BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24}
F = np.float32


def roundf(v: np.ndarray) -> np.ndarray:
    """C's roundf: round half away from zero (exact for float32; 0.49999997 → 0, not 1).

    >>> roundf(np.array([0.5, 1.5, 2.5, -0.5, 0.49999997], np.float32)).tolist()
    [1.0, 2.0, 3.0, -1.0, 0.0]
    """
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + (a - f >= 0.5))  # a − f is exact in float32


def _blocks(x: np.ndarray, kind: str) -> np.ndarray:
    if kind not in GGUF_BLOCK_BYTES:
        raise ValueError(f"unknown gguf block type {kind!r}; choose from {list(GGUF_BLOCK_BYTES)}")
    x = as_float32(x, nonempty=True)
    n = x.shape[-1]
    if n % QK:
        raise ValueError(f"last dimension {n} is not a multiple of {QK}; pad it to {n + (-n) % QK}")
    return x.reshape(*x.shape[:-1], n // QK, QK)  # (…, nb, 32)


def _fp16_bytes(v: np.ndarray, what: str = "scale d") -> np.ndarray:
    """float32 (…, nb, 1) → its FP16 bits as two little-endian bytes (…, nb, 2).

    |v| > 65504 is refused (the block would decode to inf); a scale d with 0 < |d| < 2⁻²⁵
    rounds to 0, as in llama.cpp, and the block decodes to zeros: a RuntimeWarning says so.
    """
    bits = encode(v[..., 0], "fp16")  # (…, nb) uint16
    back = decode(bits, "fp16")
    if not np.isfinite(back).all():
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(back))[0])
        raise ValueError(
            f"x: the block at {first} needs a {what} = {float(v[..., 0][first]):g} beyond the "
            "fp16 range (65504); rescale x (or use another block type)"
        )
    lost = (back == 0) & (v[..., 0] != 0)
    if what == "scale d" and lost.any():
        warnings.warn(
            f"x: {int(lost.sum())} block(s) have a scale d below fp16's smallest subnormal "
            f"(first at {tuple(int(i) for i in np.argwhere(lost)[0])}); they decode to zeros",
            RuntimeWarning,
            stacklevel=3,
        )
    return np.stack([bits & 0xFF, bits >> 8], axis=-1).astype(np.uint8)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(…, nb, 32) codes in [0, 15] → (…, nb, 16) bytes: q[j] low nibble, q[j+16] high nibble."""
    q = q.astype(np.uint8)
    return q[..., :16] | (q[..., 16:] << 4)


def _qh(q: np.ndarray) -> np.ndarray:
    """(…, nb, 32) 5-bit codes → (…, nb, 4): the uint32 of their fifth bits, little-endian."""
    bits = ((q.astype(np.uint32) >> 4) & 1) << np.arange(32, dtype=np.uint32)
    return bits.sum(axis=-1, dtype=np.uint32)[..., None].view(np.uint8)


def _weighted(xb: np.ndarray, kind: str, imatrix: np.ndarray) -> list[np.ndarray]:
    """The ``*_impl`` fit of (…, nb, 32) blocks: [fp16 d, (fp16 m), codes (…, nb, 32)]."""
    lead, nb = xb.shape[:-2], xb.shape[-2]
    rows = xb.reshape(-1, nb * QK)  # (R, n)
    sigma2 = _sum(rows * rows) / F(nb * QK)  # (R,) the row's mean x²
    qw = np.broadcast_to(np.asarray(imatrix, F).reshape(nb, QK), (rows.shape[0], nb, QK))
    wt = (qw * np.sqrt(sigma2[:, None, None] + xb.reshape(-1, nb, QK) ** 2)).astype(F)
    x32, w32 = xb.reshape(-1, QK), wt.reshape(-1, QK)
    if kind in ("q4_0", "q5_0"):
        d, L = make_qx_quants(x32, 8 if kind == "q4_0" else 16, w32)
        parts = [_fp16_bytes(d[:, None]), L]
    else:
        d, mn, L = make_qkx_quants(x32, w32, 15 if kind == "q4_1" else 31, -0.9, 0.05, 36)
        parts = [_fp16_bytes(d[:, None]), _fp16_bytes(-mn[:, None], "minimum m"), L]
    return [p.reshape(*lead, nb, -1) for p in parts]


def quantize_gguf(x: np.ndarray, kind: str = "q8_0", imatrix: np.ndarray | None = None):
    """Quantize rows of ``x`` to llama.cpp's block bytes (uint8, (…, n/32 · block bytes)).

    ``imatrix`` (n,) — importance per input channel — selects llama.cpp's weighted fit.

    >>> x = np.linspace(-1, 1, 32, dtype=np.float32)[None]
    >>> b = quantize_gguf(x, "q4_0")
    >>> b.shape, float(dequantize_gguf(b, "q4_0", 32)[0, 0])    # the max-|x| element is exact
    ((1, 18), -1.0)
    >>> float(np.abs(dequantize_gguf(quantize_gguf(x, "q5_1"), "q5_1", 32) - x).max()) < 1 / 31
    True
    """
    xb = _blocks(x, kind)
    lead = xb.shape[:-2]
    if imatrix is not None and kind != "q8_0":
        if np.shape(imatrix) != (x.shape[-1],):
            raise ValueError(f"imatrix has shape {np.shape(imatrix)}; this tensor needs "
                             f"({x.shape[-1]},)")  # fmt: skip
        with np.errstate(invalid="ignore", divide="ignore"):  # all-zero blocks, masked out
            *head, q = _weighted(xb, kind, imatrix)
        nib = _nibbles(q & 0xF)
        out = np.concatenate([*head, _qh(q), nib] if kind in ("q5_0", "q5_1") else
                             [*head, nib], axis=-1)  # fmt: skip
        return out.reshape(*lead, -1)
    if kind == "q8_0":
        d = (np.abs(xb).max(axis=-1, keepdims=True) / np.float32(127)).astype(np.float32)
        q = roundf(xb * _inverse(d)).astype(np.int8).view(np.uint8)  # (…, nb, 32)
        out = np.concatenate([_fp16_bytes(d), q], axis=-1)
    elif kind in ("q4_0", "q5_0"):
        half = 8 if kind == "q4_0" else 16
        imax = np.abs(xb).argmax(axis=-1)[..., None]  # first largest |x|
        d = (np.take_along_axis(xb, imax, axis=-1) / np.float32(-half)).astype(np.float32)
        q = np.trunc(xb * _inverse(d) + np.float32(half + 0.5)).astype(np.float32)
        q = np.clip(q, 0, 2 * half - 1).astype(np.uint8)
        body = [_nibbles(q)] if kind == "q4_0" else [_qh(q), _nibbles(q & 0xF)]
        out = np.concatenate([_fp16_bytes(d), *body], axis=-1)
    else:  # q4_1, q5_1
        top = 15 if kind == "q4_1" else 31
        lo = xb.min(axis=-1, keepdims=True)
        d = ((xb.max(axis=-1, keepdims=True) - lo) / np.float32(top)).astype(np.float32)
        q = np.trunc((xb - lo) * _inverse(d) + np.float32(0.5)).astype(np.float32)
        q = np.clip(q, 0, top).astype(np.uint8)
        body = [_nibbles(q)] if kind == "q4_1" else [_qh(q), _nibbles(q & 0xF)]
        out = np.concatenate([_fp16_bytes(d), _fp16_bytes(lo, "minimum m"), *body], -1)
    return out.reshape(*lead, -1)


def dequantize_gguf(data: np.ndarray, kind: str, n: int) -> np.ndarray:
    """Block bytes → float32 values (…, n).

    >>> x = np.arange(32, dtype=np.float32)[None] / 31
    >>> float(np.abs(dequantize_gguf(quantize_gguf(x, "q8_0"), "q8_0", 32) - x).max()) < 1 / 254
    True
    """
    if kind not in GGUF_BLOCK_BYTES:
        raise ValueError(f"unknown gguf block type {kind!r}; choose from {list(GGUF_BLOCK_BYTES)}")
    data = np.asarray(data)
    n = check_int(n, "n")
    size = GGUF_BLOCK_BYTES[kind]
    if n % QK:
        raise ValueError(f"n = {n} values per row is not a multiple of {QK} ({kind} blocks)")
    if data.dtype != np.uint8 or data.ndim == 0 or data.shape[-1] != n // QK * size:
        raise ValueError(
            f"data: {kind} rows of n = {n} values need uint8 rows of {n // QK * size} bytes, "
            f"got {data.dtype} {data.shape}"
        )
    blk = data.reshape(*data.shape[:-1], n // QK, size).astype(np.uint16)  # (…, nb, bytes)
    d = decode(blk[..., 0] | (blk[..., 1] << 8), "fp16")[..., None]  # (…, nb, 1)
    if kind == "q8_0":
        q = blk[..., 2:].astype(np.uint8).view(np.int8).astype(np.float32)
        return (q * d).reshape(*data.shape[:-1], n)
    start = {"q4_0": 2, "q4_1": 4, "q5_0": 6, "q5_1": 8}[kind]
    body = blk[..., start:]  # (…, nb, 16)
    q = np.concatenate([body & 0xF, body >> 4], axis=-1).astype(np.uint32)  # (…, nb, 32)
    if kind in ("q5_0", "q5_1"):
        qh = blk[..., start - 4 : start].astype(np.uint32)  # (…, nb, 4) little-endian uint32
        word = qh[..., 0] | qh[..., 1] << 8 | qh[..., 2] << 16 | qh[..., 3] << 24
        q |= ((word[..., None] >> np.arange(32, dtype=np.uint32)) & 1) << 4
    q = q.astype(np.float32)
    if kind in ("q4_0", "q5_0"):
        return ((q - (8 if kind == "q4_0" else 16)) * d).reshape(*data.shape[:-1], n)
    m = decode(blk[..., 2] | (blk[..., 3] << 8), "fp16")[..., None]
    return (q * d + m).reshape(*data.shape[:-1], n)
