"""2-bit weight-only decoding by table lookup: no multiply per weight (the T-MAC idea).

Two 2-bit codes of one row, in adjacent columns 2p and 2p + 1, take only 16 values together,
so for one token every possible partial dot product of that pair can be tabulated once:

    T_p[k] = (k mod 4) · x[2p] + (k div 4) · x[2p + 1]              k < 16,  p < I / 2
    Σ_{i ∈ g} q[o, i] · x[i] = Σ_{p ⊂ g} T_p[ q[o, 2p] + 4 · q[o, 2p + 1] ]

and the zero points fold per group as in ``weight_only``: y = Σ_g s·(that sum) − s·z·Σ_{i∈g} x.
One ``vpermps`` looks up 16 rows at once (it reads the low 4 bits of each int32 lane as an index
into 16 floats), so a pair of columns costs a shift, a lookup and an add per 16 rows, where
``unpack_dot`` spends a lookup (code → float) and a multiply-add per column: half the work per
weight. The table is built per token (I / 2 · 16 floats, 64 KiB for I = 2048) and re-read from
L2 by every 64-row block.

Layout (``prepack_lut2``), per block of 64 rows, per step of 16 input columns c0 … c0 + 15:
256 bytes = 4 zmm loads, load j covering rows 16j … 16j + 15, one little-endian int32 per row:

    bits 4k … 4k + 3 of row r's int32 = q[r, c0 + 2k] | q[r, c0 + 2k + 1] << 2      k < 8

so lane r of (v >> 4k) indexes T_{c0/2 + k} directly. Requires I and g to be multiples of 16
(a step never straddles a group) and AVX-512 (``unpack_dot.USE_LUT``); ``QuantLinear`` falls
back to ``weight_only`` otherwise, and for more than ``MAX_TOKENS`` tokens, where its kernels
share each unpacked weight among 4 tokens (or dequantize slabs for BLAS).

Same function as ``reference.weight_only_linear`` (bits = 2), float32 within
``reference.FLOAT_RTOL`` (the table entries and the sums round differently).
Ref: Wei et al. 2024, "T-MAC: CPU Renaissance via Table Lookup for Low-Bit LLM Deployment on
Edge", §3 (bit-serial lookup tables; here one table per pair of 2-bit columns).
Shape legend: T tokens, I in features, O out features, NB = ⌈O / 64⌉ blocks, g group size,
G = I / g, S = I / 16 steps, P = I / 2 column pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from tinyquant.quant.pack import unpack

from .checks import check_buffer, check_size, check_weight_only, scale_term_bound
from .llvm_loops import I8, I32, I64, counted_loop, declare, prefetch, store_vectors
from .threads import threads_for
from .unpack_dot import USE_LUT, fold_group

__all__ = ["MAX_TOKENS", "PackedLut2", "lut2_fits", "prepack_lut2", "lut2_linear_checked"]

ROWS, COLS = 64, 16  # rows per block; input columns per step (8 pairs in one int32 per row)
# above this, weight_only's kernels: from 4 tokens its unpacking is shared by 4 tokens per
# pass (7B block, 8 tokens: 11.6 ms unpacking vs 14.7 ms by tables; 1 token: 3.3 vs 2.9 ms)
MAX_TOKENS = 3
PREFETCH_BYTES = 4096  # how far ahead in a block's weight stream to prefetch (16 steps)


@dataclass(frozen=True, eq=False)
class PackedLut2:
    """A 2-bit weight in the lookup kernel's layout, made once by ``prepack_lut2``.

    >>> p = prepack_lut2(np.full((3, 8), 0b11100100, np.uint8), np.ones((3, 1), np.float32),
    ...                  np.zeros((3, 1), np.float32), 32)
    >>> p.w.shape, hex(int(p.w[0, 0, 0].view(np.uint32)[0]))  # codes 0,1,2,3,… → pairs 4, 14
    ((1, 2, 64, 4), '0xe4e4e4e4')
    """

    in_features: int  # I, a multiple of 16
    out_features: int  # O (rows beyond O are zero padding)
    group_size: int  # g, a multiple of 16 dividing I
    w: np.ndarray  # (NB, S, 64, 4) uint8: row r's int32 at [b, step, r]
    scale: np.ndarray  # (NB, G, 64) float32, s[o, g] at [o // 64, g, o % 64]
    scale_zero: np.ndarray  # (NB, G, 64) float32, s·z

    # max over rows and groups of 3·|s| + |s·z| (float64): bounds every term the kernel adds
    term_bound: float = field(init=False, repr=False)

    def __post_init__(self):
        self.check_layout("PackedLut2")
        bound = scale_term_bound("PackedLut2", self.scale, self.scale_zero, 3)  # qmax = 3
        object.__setattr__(self, "term_bound", bound)

    @property
    def bits(self) -> int:
        return 2

    def check_layout(self, name: str = "p") -> None:
        """Sizes, dtypes and contiguity of the buffers agree with the size fields (O(1))."""
        I = check_size(self.in_features, f"{name}.in_features")
        O = check_size(self.out_features, f"{name}.out_features", minimum=0)
        g = check_size(self.group_size, f"{name}.group_size")
        if not lut2_fits(I, g):
            raise ValueError(f"{name}: in_features {I} and group_size {g} must be multiples of "
                             f"{COLS}, the group dividing in_features")  # fmt: skip
        NB = -(-O // ROWS)
        what = f"{O} × {I} codes of 2 bits"
        check_buffer(self.w, f"{name}.w", np.uint8, (NB, I // COLS, ROWS, 4), what)
        for field_name in ("scale", "scale_zero"):
            check_buffer(getattr(self, field_name), f"{name}.{field_name}", np.float32,
                         (NB, I // g, ROWS), f"{what} in groups of {g}")  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads per token from the weight (codes + scales + s·z)."""
        return int(self.w.nbytes + self.scale.nbytes + self.scale_zero.nbytes)


def lut2_fits(in_features: int, group_size: int) -> bool:
    """Whether the lookup kernel takes this shape (and runs on this CPU).

    >>> lut2_fits(2048, 64) == USE_LUT, lut2_fits(2048, 8)
    (True, False)
    """
    return bool(USE_LUT and in_features % COLS == 0 and group_size % COLS == 0
                and in_features % group_size == 0)  # fmt: skip


def prepack_lut2(
    packed: np.ndarray, scale: np.ndarray, zero: np.ndarray, group_size: int
) -> PackedLut2:
    """Canonical 2-bit codes (O, I/4) + per-group scale/zero (O, G) → ``PackedLut2``."""
    I = packed.shape[1] * 4 if packed.ndim == 2 else 0
    check_weight_only(np.zeros((1, max(I, 1)), np.float32), packed, scale, zero, group_size, 2)
    if not lut2_fits(I, group_size):
        raise ValueError(f"in_features {I} and group_size {group_size} must be multiples of "
                         f"{COLS} for the lookup kernel; use weight_only.prepack")  # fmt: skip
    O = packed.shape[0]
    NB = -(-O // ROWS)
    codes = np.zeros((NB * ROWS, I), np.uint32)
    codes[:O] = unpack(packed, 2, I)  # (Op, I)
    pairs = codes[:, 0::2] | (codes[:, 1::2] << 2)  # (Op, P) 4-bit indices
    nib = pairs.reshape(NB * ROWS, I // COLS, 8)  # (Op, S, 8): pair k of each step
    word = np.zeros((NB * ROWS, I // COLS), np.uint32)
    for k in range(8):
        word |= nib[:, :, k] << (4 * k)
    w = word.reshape(NB, ROWS, I // COLS).transpose(0, 2, 1).astype("<u4")  # (NB, S, 64)
    s = np.zeros((NB * ROWS, scale.shape[1]), np.float32)
    sz = np.zeros_like(s)
    s[:O], sz[:O] = scale, scale * zero
    blocks = (NB, ROWS, scale.shape[1])
    return PackedLut2(
        in_features=I,
        out_features=O,
        group_size=int(group_size),
        w=np.ascontiguousarray(w).view(np.uint8).reshape(NB, I // COLS, ROWS, 4),
        scale=np.ascontiguousarray(s.reshape(blocks).transpose(0, 2, 1)),  # (NB, G, 64)
        scale_zero=np.ascontiguousarray(sz.reshape(blocks).transpose(0, 2, 1)),
    )


def _make_block():
    """An intrinsic ``f(w, tab, xs, s, sz, n_groups, steps_per_group, y)``: one token, one
    64-row block, every group. w the block's (S, 64, 4) codes; tab the token's (P, 16) table;
    xs its G group sums of x; s, sz the block's (G, 64); y 64 float32, written."""
    f32 = ir.FloatType()
    v16f, v16i = ir.VectorType(f32, 16), ir.VectorType(I32, 16)

    @intrinsic
    def block(typingctx, w, tab, xs, s, sz, n_groups, spg, y):
        sig = types.void(*[types.intp] * 8)

        def codegen(context, builder, signature, args):
            w_a, t_a, xs_a, s_a, sz_a, ng_v, spg_v, y_a = args
            permvar = declare(builder, "llvm.x86.avx512.permvar.sf.512", v16f, [v16f, v16i])
            wp, tp = builder.inttoptr(w_a, I8.as_pointer()), builder.inttoptr(t_a, I8.as_pointer())
            xsp = builder.inttoptr(xs_a, f32.as_pointer())
            sp, szp = (builder.inttoptr(a, f32.as_pointer()) for a in (s_a, sz_a))
            zero = ir.Constant(v16f, None)

            def load(base, byte_offset, ty):
                ptr = builder.bitcast(builder.gep(base, [byte_offset]), ty.as_pointer())
                return builder.load(ptr, align=4)

            def group(gi, outs):
                def step(st, accs):  # 16 columns: 8 tables, 4 × 8 lookups
                    k = builder.add(builder.mul(gi, spg_v), st)  # the step's index in the block
                    wk = builder.mul(k, I64(ROWS * 4))
                    for j in range(4):
                        prefetch(builder, builder.gep(wp, [wk]), PREFETCH_BYTES + 64 * j)
                    tk = builder.mul(k, I64(8 * 16 * 4))
                    tabs = [load(tp, builder.add(tk, I64(64 * p)), v16f) for p in range(8)]
                    new = list(accs)
                    for j in range(4):
                        v = load(wp, builder.add(wk, I64(64 * j)), v16i)
                        for p in range(8):
                            idx = builder.lshr(v, ir.Constant(v16i, [4 * p] * 16)) if p else v
                            new[j] = builder.fadd(new[j], builder.call(permvar, [tabs[p], idx]))
                    return new

                accs = counted_loop(builder, spg_v, 4, zero, step, "lut")
                return fold_group(builder, sp, szp, xsp, gi, accs, outs)  # as unpack_dot's

            outs = counted_loop(builder, ng_v, 4, zero, group, "grp")
            store_vectors(builder, builder.inttoptr(y_a, f32.as_pointer()), outs)
            return context.get_dummy_value()

        return sig, codegen

    return block


lut2_block = _make_block()


@njit(cache=True)
def _tables(x, tab):  # pragma: no cover - compiled
    """tab[t, p, k] = (k & 3) · x[t, 2p] + (k >> 2) · x[t, 2p + 1] (float32)."""
    T, P = tab.shape[0], tab.shape[1]
    for t in range(T):
        for p in range(P):
            a, b = x[t, 2 * p], x[t, 2 * p + 1]
            for k in range(16):
                tab[t, p, k] = np.float32(k & 3) * a + np.float32(k >> 2) * b


@njit(parallel=True, cache=True)
def _lut2_gemv(tab, xs, w, s, sz, spg, y):  # pragma: no cover - compiled
    """y (T, NB·64) from the tokens' tables (T, P, 16) and group sums xs (T, G)."""
    T, P = tab.shape[0], tab.shape[1]
    NB, S = w.shape[0], w.shape[1]
    G = s.shape[1]
    for ob in prange(NB):
        wb = w.ctypes.data + ob * S * ROWS * 4
        sb, szb = s.ctypes.data + ob * G * ROWS * 4, sz.ctypes.data + ob * G * ROWS * 4
        for t in range(T):
            ta, xa = tab.ctypes.data + t * P * 16 * 4, xs.ctypes.data + t * G * 4
            lut2_block(wb, ta, xa, sb, szb, G, spg, y.ctypes.data + (t * NB + ob) * ROWS * 4)


def lut2_linear_checked(x: np.ndarray, p: PackedLut2) -> np.ndarray:
    """y = x Wᵀ (T, O) for validated x (finite float32 (T, I), C-contiguous, T ≤ MAX_TOKENS,
    ``weight_only.needs_overflow_shift(x, p)`` false) and a ``PackedLut2`` the caller built (a
    ``QuantLinear``, which falls back to ``weight_only`` where those do not hold).

    >>> from tinyquant.kernels import reference
    >>> rng = np.random.default_rng(0)
    >>> packed = rng.integers(0, 256, (70, 16), dtype=np.uint8)   # O = 70, I = 64
    >>> s = rng.random((70, 2), dtype=np.float32); z = np.full((70, 2), 1.5, np.float32)
    >>> x = rng.standard_normal((2, 64), dtype=np.float32)
    >>> y = lut2_linear_checked(x, prepack_lut2(packed, s, z, 32))
    >>> bool(np.allclose(y, reference.weight_only_linear(x, packed, s, z, 32, 2), atol=1e-4))
    True
    """
    T, I = x.shape
    if T == 0:
        return np.zeros((0, p.out_features), np.float32)
    g, NB = p.group_size, p.w.shape[0]
    tab = np.empty((T, I // 2, 16), np.float32)  # (T, P, 16)
    _tables(x, tab)
    xs = x.reshape(T, I // g, g).sum(axis=2, dtype=np.float32)  # (T, G)
    y = np.empty((T, NB * ROWS), np.float32)
    with threads_for(T * I * NB * ROWS):
        _lut2_gemv(tab, xs, p.w, p.scale, p.scale_zero, g // COLS, y)
    return y[:, : p.out_features]
