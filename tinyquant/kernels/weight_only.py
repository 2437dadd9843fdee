"""Weight-only W{8,4,3,2}A16 matmuls in Numba: packed integer weights, float32 activations.

    y[t, o] = Σ_g s[o, g] · ( Σ_{i∈g} q[o, i] · x[t, i]  −  z[o, g] · Σ_{i∈g} x[t, i] )

The inner sum touches only codes and x (an int → float conversion and one FMA per weight); the
zero-point costs one FMA per *group* thanks to the per-group sums of x, computed once per call
(the "zero-point folding" of GPTQ/AWQ kernels).

Batch-1 decoding reads every weight once per token, so its speed is bytes / bandwidth: 4-bit
codes move 8× fewer bytes than float32. To turn that into speed the unpacking must cost less
than the bytes saved, hence a layout made for the kernel, converted once at load time by
``prepack``: 64 output rows "in lanes", the 2 (4-bit) or 4 (2-bit) codes of one byte belonging
to rows 32 (16) apart in the same input column (bit diagrams in ``unpack_dot``). Then one 16-byte
load, a shift and an AND give 16 codes of 16 consecutive rows — one FMA each, no shuffles and no
horizontal sums. 3-bit codes are stored in the 4-bit layout (same speed as 4-bit, ¾ of the
bits wasted: a real 3-bit layout is left undone).

For many tokens (prefill, T > ``DEQUANT_MIN_TOKENS``) unpacking per token costs more than it
saves; the kernel then dequantizes slabs of rows to float32 once and lets BLAS do the GEMM —
the only place where dequantize-then-matmul pays.

Overflow: both paths add terms no larger than I · max|x| · max(qmax·|s| + |s·z|). Where that
bound nears float32's max (activations around 1e37), x is scaled by 2⁻ᵏ and y by 2ᵏ — exact
for powers of two, so results elsewhere are unchanged bit for bit.

Refs: Frantar et al. 2023 "GPTQ", §5 (group-wise weights, the fused dequant GEMV); Lin et al.
2024 "AWQ", §3.3 (on-the-fly dequantization kernels); llama.cpp ggml-cpu Q4_0 dot products.
Shape legend: T tokens, I in features, O out features, Op = O padded to 64, NB = Op / 64 blocks,
g group size, G = I / g, BPC = 64·b/8 bytes per column of a block.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from tinyquant.quant.pack import unpack

from .checks import (
    check_activations,
    check_array,
    check_bits,
    check_buffer,
    check_size,
    check_weight_only,
    scale_term_bound,
)
from .lut2 import PackedLut2
from .numba_int import PackedW8A8
from .threads import threads_for
from .unpack_dot import (
    ROWS,
    TOKENS_PER_CALL,
    bytes_per_column,
    unpack_dot2_groups,
    unpack_dot2_t1,
    unpack_dot2_t4,
    unpack_dot4_groups,
    unpack_dot4_t1,
    unpack_dot4_t4,
    unpack_dot8_groups,
    unpack_dot8_t1,
    unpack_dot8_t4,
)
from .w4a8 import PackedW4A8

__all__ = [
    "DEQUANT_MIN_TOKENS",
    "PackedWeightOnly",
    "prepack",
    "packed_linear",
    "packed_linear_checked",
    "stack_packed",
    "needs_overflow_shift",
    "dequantize_packed",
    "dequantize_packed_t",
    "weight_only_linear",
]

# Above this many tokens, dequantize slabs to float32 and use BLAS (compute-bound regime).
DEQUANT_MIN_TOKENS = 16
_STORE_BITS = {8: 8, 4: 4, 3: 4, 2: 2}  # 3-bit codes live in the 4-bit layout
_SLAB_ELEMS = 1 << 26  # weights dequantized at once on the BLAS path (256 MiB of float32)
_F32_MAX = float(np.finfo(np.float32).max)
_SAFE_SUM = 2.0**126  # partial sums below this stay finite in float32 (max ≈ 2^128)


@dataclass(frozen=True, eq=False)
class PackedWeightOnly:
    """A weight in the kernel's layout, made once by ``prepack``.

    Construction checks every field against the buffers' actual shapes, dtypes and values
    (``dataclasses.replace`` included), and each kernel call re-checks the shapes, so a kernel
    never reads or writes past a buffer.

    >>> pw = prepack(np.zeros((3, 64), np.uint8), np.ones((3, 1), np.float32),
    ...              np.zeros((3, 1), np.float32), 128, 4)
    >>> pw.w.shape, pw.out_features, pw.in_features
    ((1, 128, 32), 3, 128)
    >>> import dataclasses; dataclasses.replace(pw, in_features=256)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: PackedWeightOnly.w has shape (1, 128, 32) but 3 × 256 codes of 4 bits need ...
    """

    bits: int  # bits of the codes (8, 4, 3, 2)
    store_bits: int  # bits of a field in the layout (8, 4, 4, 2)
    in_features: int  # I
    out_features: int  # O (rows beyond O are zero padding)
    group_size: int  # g
    w: np.ndarray  # (NB, I, BPC) uint8, rows in lanes
    scale: np.ndarray  # (NB, G, 64) float32, s[o, g] at [o // 64, g, o % 64]
    scale_zero: np.ndarray  # (NB, G, 64) float32, s·z
    # max over rows and groups of qmax·|s| + |s·z| (float64): bounds every term the kernels add
    term_bound: float = field(init=False, repr=False)

    def __post_init__(self):
        self.check_layout("PackedWeightOnly")
        qmax = (1 << self.store_bits) - 1  # any value a field can hold
        bound = scale_term_bound("PackedWeightOnly", self.scale, self.scale_zero, qmax)
        object.__setattr__(self, "term_bound", bound)

    def check_layout(self, name: str = "pw") -> None:
        """Sizes, dtypes and contiguity of the buffers agree with the size fields (O(1))."""
        bits = check_bits(self.bits)
        if self.store_bits != _STORE_BITS[bits]:
            raise ValueError(
                f"{name}.store_bits is {self.store_bits!r} but {bits}-bit codes are stored in "
                f"{_STORE_BITS[bits]}-bit fields; make the weight with prepack()"
            )
        I = check_size(self.in_features, f"{name}.in_features")
        O = check_size(self.out_features, f"{name}.out_features", minimum=0)
        g = check_size(self.group_size, f"{name}.group_size")
        if I % g:
            raise ValueError(f"{name}.group_size {g} does not divide in_features {I}; prepack()")
        NB = -(-O // ROWS)
        what = f"{O} × {I} codes of {bits} bits"
        check_buffer(self.w, f"{name}.w", np.uint8, (NB, I, bytes_per_column(_STORE_BITS[bits])),
                     what)  # fmt: skip
        for field_name in ("scale", "scale_zero"):
            check_buffer(getattr(self, field_name), f"{name}.{field_name}", np.float32,
                         (NB, I // g, ROWS), f"{what} in groups of {g}")  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads per token: codes + scales + scale·zero (padding included)."""
        return int(self.w.nbytes + self.scale.nbytes + self.scale_zero.nbytes)


def prepack(
    packed: np.ndarray, scale: np.ndarray, zero: np.ndarray, group_size: int, bits: int
) -> PackedWeightOnly:
    """Convert canonical packed codes (O, I·bits/8) + per-group scale/zero (O, G) to the layout.

    >>> codes = np.arange(64, dtype=np.uint8).reshape(1, 64) % 16
    >>> from tinyquant.quant.pack import pack
    >>> s, z = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    >>> pw = prepack(pack(codes, 4), s, z, 64, 4)
    >>> int(pw.w[0, 5, 0] & 15)  # row 0, column 5 sits in byte 0 of column 5, low nibble
    5
    """
    bits = check_bits(bits)
    check_array(packed, "packed", np.uint8, 2)
    if packed.shape[1] == 0:
        raise ValueError(f"packed has shape {packed.shape}: no codes; pass (out, in·bits/8) bytes")
    O = packed.shape[0]
    in_features = packed.shape[1] * 8 // bits
    dummy = np.zeros((1, in_features), np.float32)
    check_weight_only(dummy, packed, scale, zero, group_size, bits)
    with np.errstate(over="ignore"):
        sz64 = np.abs(scale.astype(np.float64) * zero)  # (O, G)
    terms = ((1 << _STORE_BITS[bits]) - 1) * np.abs(scale, dtype=np.float64) + sz64  # (O, G)
    if terms.size and not terms.max() < _F32_MAX:
        o, g = np.unravel_index(np.argmax(terms), terms.shape)
        raise ValueError(
            f"scale and zero at row {o}, group {g} ({scale[o, g]:.3g}, {zero[o, g]:.3g}) make "
            f"q·s + |s·z| = {terms[o, g]:.3g}, beyond float32's {_F32_MAX:.3g}; re-quantize "
            "the weight with smaller scales (or divide it by a power of two first)"
        )

    # 1) unsigned codes, rows padded to a multiple of 64 (padding rows: code 0, scale 0)
    NB = -(-O // ROWS)
    Op = NB * ROWS
    codes = np.zeros((Op, in_features), np.uint8)
    codes[:O] = unpack(packed, bits, in_features)  # (O, I)
    s = np.zeros((Op, scale.shape[1]), np.float32)
    sz = np.zeros_like(s)
    s[:O] = scale
    sz[:O] = scale * zero  # (O, G) float32
    # 2) rows in lanes: byte j of a column holds rows j, j + BPC, j + 2·BPC, … (one per field)
    sb = _STORE_BITS[bits]
    bpc = bytes_per_column(sb)
    fields = 8 // sb
    cb = codes.reshape(NB, ROWS, in_features).transpose(0, 2, 1)  # (NB, I, 64)
    cb = cb.reshape(NB, in_features, fields, bpc).astype(np.uint32)  # row = f·BPC + j
    w = np.zeros((NB, in_features, bpc), np.uint32)
    for f in range(fields):
        w |= cb[:, :, f, :] << (f * sb)
    G = scale.shape[1]
    blocks = (NB, ROWS, G)
    return PackedWeightOnly(
        bits=bits,
        store_bits=sb,
        in_features=in_features,
        out_features=O,
        group_size=int(group_size),
        w=np.ascontiguousarray(w.astype(np.uint8)),  # (NB, I, BPC)
        scale=np.ascontiguousarray(s.reshape(blocks).transpose(0, 2, 1)),  # (NB, G, 64)
        scale_zero=np.ascontiguousarray(sz.reshape(blocks).transpose(0, 2, 1)),  # (NB, G, 64)
    )


@njit(parallel=True, cache=True)
def _wo_gemv(x, xs, w, s, sz, group_size, store_bits, y):  # pragma: no cover - compiled
    """y[t, ob·64 + r] for all blocks ob; x (T, I), xs (T, G) group sums, y (T, Op)."""
    T, I = x.shape
    NB, _, bpc = w.shape
    G = s.shape[1]
    for ob in prange(NB):
        acc = np.empty(TOKENS_PER_CALL * ROWS, np.float32)
        out = np.zeros((T, ROWS), np.float32)
        wblock = w.ctypes.data + ob * I * bpc
        for g in range(G):
            col0 = g * group_size
            wcol = wblock + col0 * bpc
            sg = s[ob, g]  # (64,)
            szg = sz[ob, g]  # (64,)
            t = 0
            while t < T:
                tt = TOKENS_PER_CALL if T - t >= TOKENS_PER_CALL else 1
                xaddr = x.ctypes.data + (t * I + col0) * 4
                if store_bits == 4:
                    if tt == 4:
                        unpack_dot4_t4(wcol, xaddr, I * 4, group_size, acc.ctypes.data)
                    else:
                        unpack_dot4_t1(wcol, xaddr, I * 4, group_size, acc.ctypes.data)
                elif store_bits == 2:
                    if tt == 4:
                        unpack_dot2_t4(wcol, xaddr, I * 4, group_size, acc.ctypes.data)
                    else:
                        unpack_dot2_t1(wcol, xaddr, I * 4, group_size, acc.ctypes.data)
                else:
                    if tt == 4:
                        unpack_dot8_t4(wcol, xaddr, I * 4, group_size, acc.ctypes.data)
                    else:
                        unpack_dot8_t1(wcol, xaddr, I * 4, group_size, acc.ctypes.data)
                for u in range(tt):
                    xg = xs[t + u, g]
                    o = out[t + u]
                    a = acc[u * ROWS : (u + 1) * ROWS]
                    for r in range(ROWS):
                        o[r] += sg[r] * a[r] - szg[r] * xg
                t += tt
        y[:, ob * ROWS : (ob + 1) * ROWS] = out


@njit(parallel=True, cache=True)
def _wo_gemv_tokens(x, xs, w, s, sz, group_size, store_bits, y):  # pragma: no cover - compiled
    """As ``_wo_gemv``, one token at a time, each block's groups folded in registers (decode)."""
    T, I = x.shape
    NB, _, bpc = w.shape
    G = s.shape[1]
    for ob in prange(NB):
        wblock = w.ctypes.data + ob * I * bpc
        sblock = s.ctypes.data + ob * G * ROWS * 4
        szblock = sz.ctypes.data + ob * G * ROWS * 4
        for t in range(T):
            xaddr = x.ctypes.data + t * I * 4
            xsaddr = xs.ctypes.data + t * G * 4
            yaddr = y.ctypes.data + (t * NB + ob) * ROWS * 4
            if store_bits == 4:
                unpack_dot4_groups(wblock, xaddr, xsaddr, sblock, szblock, G, group_size, yaddr)
            elif store_bits == 2:
                unpack_dot2_groups(wblock, xaddr, xsaddr, sblock, szblock, G, group_size, yaddr)
            else:
                unpack_dot8_groups(wblock, xaddr, xsaddr, sblock, szblock, G, group_size, yaddr)


@njit(parallel=True, cache=True)
def _dequant_slab_t(w, s, sz, group_size, store_bits, ob0, out_t):  # pragma: no cover - compiled
    """out_t[i, (ob − ob0)·64 + r] = q · s − s·z: the slab *transposed* (I, rows), so that both
    the prepacked source (rows in lanes) and the destination are read and written contiguously."""
    _, I, bpc = w.shape
    nb = out_t.shape[1] // ROWS
    fields = 8 // store_bits
    mask = np.int32((1 << store_bits) - 1)
    for i in prange(I):
        g = i // group_size
        dst = out_t[i]
        for b in range(nb):
            ob = ob0 + b
            src = w[ob, i]  # (BPC,)
            sg = s[ob, g]  # (64,)
            szg = sz[ob, g]
            for f in range(fields):
                shift = np.int32(f * store_bits)
                for j in range(bpc):
                    r = f * bpc + j
                    q = np.int32((np.int32(src[j]) >> shift) & mask)
                    dst[b * ROWS + r] = np.float32(q) * sg[r] - szg[r]


def dequantize_packed_t(pw: PackedWeightOnly, r0: int = 0, n: int | None = None) -> np.ndarray:
    """Rows r0 … r0 + n (multiples of 64) of the weight, dequantized and *transposed*: (I, n).

    The transposed form is what the kernel writes contiguously and what BLAS consumes as is
    (y = x @ Wᵀ-slab).

    >>> pw = prepack(np.full((2, 32), 0x21, np.uint8), np.ones((2, 1), np.float32),
    ...              np.zeros((2, 1), np.float32), 64, 4)
    >>> dequantize_packed_t(pw).shape
    (64, 64)
    """
    _check_packed(pw)
    total = pw.w.shape[0] * ROWS
    r0 = check_size(r0, "r0", minimum=0)
    n = check_size(total - r0 if n is None else n, "n", minimum=0)
    if r0 % ROWS or n % ROWS or r0 + n > total:
        raise ValueError(f"rows [{r0}, {r0 + n}) must be multiples of {ROWS} within {total}")
    out_t = np.empty((pw.in_features, n), np.float32)
    _dequant_slab_t(pw.w, pw.scale, pw.scale_zero, pw.group_size, pw.store_bits, r0 // ROWS,
                    out_t)  # fmt: skip
    return out_t


def dequantize_packed(pw: PackedWeightOnly) -> np.ndarray:
    """The float32 weight (O, I) a prepacked weight stands for (same values as the reference).

    >>> pw = prepack(np.full((2, 32), 0x21, np.uint8), np.ones((2, 1), np.float32),
    ...              np.zeros((2, 1), np.float32), 64, 4)
    >>> dequantize_packed(pw)[:, :4]
    array([[1., 2., 1., 2.],
           [1., 2., 1., 2.]], dtype=float32)
    """
    return np.ascontiguousarray(dequantize_packed_t(pw)[:, : pw.out_features].T)


def packed_linear(x: np.ndarray, pw: PackedWeightOnly) -> np.ndarray:
    """y = x Wᵀ (T, O) for a prepacked weight; float32 within ``reference.FLOAT_RTOL``.

    >>> from tinyquant.kernels import reference
    >>> rng = np.random.default_rng(0)
    >>> p = rng.integers(0, 256, (70, 64), dtype=np.uint8)
    >>> s = rng.random((70, 2), dtype=np.float32); z = np.full((70, 2), 8, np.float32)
    >>> x = rng.standard_normal((3, 128), dtype=np.float32)
    >>> y = packed_linear(x, prepack(p, s, z, 64, 4))
    >>> bool(np.allclose(y, reference.weight_only_linear(x, p, s, z, 64, 4), rtol=1e-4,
    ...                   atol=1e-4))
    True
    """
    # 1) validate in Python: x, and the weight's fields against its buffers
    check_activations(x)
    _check_packed(pw)
    if x.shape[1] != pw.in_features:
        raise ValueError(f"x has {x.shape[1]} features but the weight expects {pw.in_features}")
    return packed_linear_checked(x, pw)


def packed_linear_checked(x: np.ndarray, pw: PackedWeightOnly) -> np.ndarray:
    """``packed_linear`` for a caller that has validated x (finite float32 (T, I), C-contiguous)
    and built ``pw`` itself — a ``QuantLinear``: the decode step skips a second validation of
    the same arrays (≈ 8 µs of the ≈ 35 µs a small call costs in Python)."""
    T, I = x.shape
    if T == 0:  # no tokens (an empty batch reaching a Linear): nothing to compute
        return np.zeros((0, pw.out_features), np.float32)
    # 2) every partial sum either path forms is at most I · max|x| · term_bound; if that could
    #    overflow float32, run on x · 2⁻ᵏ and scale y back by 2ᵏ (exact: powers of two)
    k = _overflow_shift(I * float(np.abs(x).max()) * pw.term_bound)
    if k:
        x = np.ldexp(x, -k)  # (T, I) float32
    NB = pw.w.shape[0]
    y = np.empty((T, NB * ROWS), np.float32)
    if T > DEQUANT_MIN_TOKENS:
        # 3a) dequantize (Numba threads) then one BLAS GEMM per slab: few switches between the
        #     two thread pools, which contend badly on a small machine
        rows = max(ROWS, min(NB * ROWS, _SLAB_ELEMS // I // ROWS * ROWS))
        for r0 in range(0, NB * ROWS, rows):
            n = min(rows, NB * ROWS - r0)
            y[:, r0 : r0 + n] = x @ dequantize_packed_t(pw, r0, n)  # (T, I) @ (I, n) BLAS
    else:
        # 3b) the fused unpack-and-FMA kernel, zero points folded into per-group sums of x
        g = pw.group_size
        xs = x.reshape(T, I // g, g).sum(axis=2, dtype=np.float32)  # (T, G)
        gemv = _wo_gemv if T >= TOKENS_PER_CALL else _wo_gemv_tokens
        with threads_for(T * I * NB * ROWS):  # small calls: one thread (threads.py)
            gemv(x, xs, pw.w, pw.scale, pw.scale_zero, g, pw.store_bits, y)
    y = y[:, : pw.out_features]  # (T, O)
    if k:
        with np.errstate(over="ignore"):  # inf only where x Wᵀ itself exceeds float32
            y = np.ldexp(y, k)
    return y


def stack_packed(pws: list) -> tuple:
    """One weight made of the 64-row blocks of ``pws`` in order, and each of ``pws`` again as a
    view into it (no second copy). Row ``r`` of member j sits at row ``64·(blocks before j) + r``
    of the stack; a member's padding rows stay in the stack (their output is dropped).

    ``pws``: all ``PackedWeightOnly``, ``PackedLut2`` or ``PackedW4A8`` of one kind sharing bits,
    in_features and group_size, or all ``PackedW8A8`` sharing kernels and in_features. The
    stack's kernel call computes every member's rows exactly as the member's own call does:
    each 64-row block is an independent computation (for weight-only, on the decode path,
    T ≤ ``DEQUANT_MIN_TOKENS``).

    >>> a = prepack(np.full((3, 32), 0x11, np.uint8), np.ones((3, 1), np.float32),
    ...             np.zeros((3, 1), np.float32), 64, 4)
    >>> st, (a2, b2) = stack_packed([a, a])
    >>> st.out_features, a2.out_features, bool(np.shares_memory(st.w, b2.w))
    (128, 3, True)
    """
    if not pws:
        raise ValueError("stack_packed needs at least one weight")
    if all(isinstance(pw, PackedW8A8) for pw in pws):
        return _stack_w8a8(pws)
    kind = type(pws[0])
    if kind not in _BLOCK_ARRAYS or any(type(pw) is not kind for pw in pws):
        raise ValueError("stack_packed takes PackedWeightOnly or PackedW4A8 weights, one kind")
    first = pws[0]
    for pw in pws:
        pw.check_layout("pw")
        if (pw.bits, pw.in_features, pw.group_size) != (first.bits, first.in_features,
                                                        first.group_size):  # fmt: skip
            raise ValueError(
                f"weights to stack must share bits, in_features and group_size; got "
                f"({pw.bits}, {pw.in_features}, {pw.group_size}) after "
                f"({first.bits}, {first.in_features}, {first.group_size})"
            )
    names = _BLOCK_ARRAYS[kind]  # the arrays whose first axis is the 64-row block
    stacked = {n: np.concatenate([getattr(pw, n) for pw in pws]) for n in names}  # (ΣNB, …)
    nb = stacked["w"].shape[0]
    stack = dataclasses.replace(first, out_features=nb * ROWS, **stacked)
    views, b0 = [], 0
    for pw in pws:
        b1 = b0 + pw.w.shape[0]
        views.append(dataclasses.replace(pw, **{n: a[b0:b1] for n, a in stacked.items()}))
        b0 = b1
    return stack, views


def _stack_w8a8(ps: list[PackedW8A8]) -> tuple[PackedW8A8, list[PackedW8A8]]:
    """``stack_packed`` for W8A8 weights: panels of 64 rows (vnni) or plain rows (portable);
    each member's scale is zero-padded to its panels' rows, so a row keeps its panel."""
    first = ps[0]
    for p in ps:
        p.check_layout("p")
        if (p.kernels, p.in_features) != (first.kernels, first.in_features):
            raise ValueError("W8A8 weights to stack must share kernels and in_features")
    rows = ROWS if first.kernels == "vnni" else 1  # rows per unit of u's first axis
    units = [p.u.shape[0] for p in ps]
    u = np.concatenate([p.u for p in ps])  # (ΣNP, K4, 64, 4) or (ΣO, I)
    scale = np.zeros(sum(units) * rows, np.float32)
    views, b0 = [], 0
    for p, n in zip(ps, units, strict=True):
        scale[b0 * rows : b0 * rows + p.out_features] = p.scale
        own = scale[b0 * rows : b0 * rows + p.out_features]  # a view of the stacked scale
        views.append(dataclasses.replace(p, u=u[b0 : b0 + n], scale=own))
        b0 += n
    stack = dataclasses.replace(first, u=u, scale=scale, out_features=scale.size)
    return stack, views


_BLOCK_ARRAYS = {PackedWeightOnly: ("w", "scale", "scale_zero"),
                 PackedW4A8: ("w", "scale", "zero"),
                 PackedLut2: ("w", "scale", "scale_zero")}  # fmt: skip


def needs_overflow_shift(x: np.ndarray, pw: PackedWeightOnly) -> bool:
    """Whether ``packed_linear`` would scale x by 2⁻ᵏ for this weight (activations near 1e37)."""
    return x.size > 0 and _overflow_shift(x.shape[1] * float(np.abs(x).max()) * pw.term_bound) > 0


def _check_packed(pw) -> None:
    if not isinstance(pw, PackedWeightOnly):
        raise ValueError(f"pw must be a PackedWeightOnly from prepack(), got {type(pw).__name__}")
    pw.check_layout("pw")


def _overflow_shift(bound: float) -> int:
    """The k ≥ 0 that brings a bound on the kernels' partial sums below ``_SAFE_SUM``."""
    return 0 if bound <= _SAFE_SUM else math.ceil(math.log2(bound / _SAFE_SUM))


def weight_only_linear(x, packed, scale, zero, group_size: int, bits: int) -> np.ndarray:
    """Same signature and semantics as ``reference.weight_only_linear`` (prepacks per call —
    for repeated use, ``prepack`` once and call ``packed_linear``).

    >>> from tinyquant.kernels import reference
    >>> rng = np.random.default_rng(0); x = rng.standard_normal((3, 64), dtype=np.float32)
    >>> s, z = np.full((5, 2), 0.1, np.float32), np.full((5, 2), 1, np.float32)
    >>> for bits in (8, 4, 3, 2):
    ...     p = rng.integers(0, 256, (5, 64 * bits // 8), dtype=np.uint8)
    ...     y, y_ref = weight_only_linear(x, p, s, z, 32, bits), reference.weight_only_linear(
    ...         x, p, s, z, 32, bits)
    ...     print(bits, y.shape, bool(np.allclose(y, y_ref, rtol=1e-5, atol=1e-5)))
    8 (3, 5) True
    4 (3, 5) True
    3 (3, 5) True
    2 (3, 5) True
    """
    check_weight_only(x, packed, scale, zero, group_size, bits)
    return packed_linear(x, prepack(packed, scale, zero, group_size, bits))
