"""W4A8 linear in Numba: 4-bit group-wise weights × int8 per-token activations, on ``vpdpbusd``.

    acc[t, o, g] = Σ_{i∈g} q[o, i] · q_x[t, i]                          int32, exact
    asum[t, g]   = Σ_{i∈g} q_x[t, i]                                     int32, exact
    y[t, o]      = s_x[t] · Σ_g s[o, g] · (acc[t, o, g] − z[o, g] · asum[t, g])

with W[o, i] = (q[o, i] − z[o, g]) · s[o, g] (q unsigned 4-bit codes; symmetric formats z = 8)
and q_x, s_x = ``quantize_activations(x, "per_token")``. The float32 order is fixed and shared
with ``reference.fold_groups``: y = +0; for g in increasing order, d = f32(acc) − z · f32(asum),
y = y + s · d; at the end y = y · s_x — plain fmul/fsub/fadd, no fused multiply-add, no
fast-math. So the reference, both kernels and ``QuantLinear``'s fake path agree *to the bit*
(as in W8A8: a last-bit difference would flip an activation code at a rounding tie downstream).

Why: batch-1 W4A16 decoding is bound by unpacking (one float FMA per weight and a code → float
conversion). With int8 activations one ``vpdpbusd`` does 64 multiply-adds on the codes as they
are: the 4-bit codes are *unsigned*, exactly the u8 operand, and q_x is the s8 operand — no
+128 offset trick. The zero-point costs one multiply per group via asum (zero-point folding).

Layout (``prepack_w4a8``), per block of 64 output rows, per 8 consecutive inputs k … k + 7,
256 bytes = 4 zmm loads; load j covers rows 16j … 16j + 15, dword lane r is row 16j + r:

    byte b of lane r = [ q[row, k + 4 + b] : high nibble | q[row, k + b] : low nibble ]   b < 4

so lo = v & 0x0F0F0F0F and hi = (v >> 4) & 0x0F0F0F0F are the u8 operands for inputs k … k+3
and k+4 … k+7, and 4 broadcast activation bytes the s8 operand. Accumulators are output rows:
no horizontal sums. The group's int32 sums fold into float accumulators in registers; y is
stored once per block. ``tt`` = 4 tokens per pass share each load (prefill does not re-unpack
per token). Rows beyond O are zero padding (dropped from y).

Overflow: int32 is exact while g · 15 · 127 < 2³¹ (``checks.MAX_W4A8_GROUP``, g ≤ 1 127 288);
the float fold overflows to inf only where the float32 sum itself does, identically everywhere.

A one-off timing on the project's shared 2-core machine (5632 × 2048, g = 128, weights
L3-resident, medians of 30 calls in one process): T = 1, the whole call 0.17 ms (the kernel
alone 0.10 ms on 2 threads, 0.21 ms on 1 — 31 GB/s of weights, so bandwidth-bound: splitting
the lo/hi accumulator chains changed nothing) vs W4A16 ``packed_linear`` 0.20 ms; T = 4,
0.18 vs 0.36 ms. The portable kernel: 0.29 ms at T = 1.

Kernels: ``vnni`` (the IR below; AVX512-VNNI CPUs) and ``portable`` (plain Numba loops over the
same layout, any CPU), chosen by ``vnni.default_kernels()`` unless ``kernels`` says.
Refs: Intel Intrinsics Guide ``_mm512_dpbusd_epi32``; llama.cpp ggml-cpu ``ggml_vec_dot_q4_0_q8_0``
(4-bit weights × int8 activations, integer dot products); Lin et al. 2024 "QServe" (W4A8 with
group zero-points).
Shape legend: T tokens, I in features, O out features, Op = O padded to 64, NB = Op / 64,
g group size, G = I / g, K8 = I / 8 steps of 8 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from tinyquant.quant.pack import unpack

from .act_int8 import quantize_rows
from .checks import (
    check_activations,
    check_array,
    check_bits,
    check_buffer,
    check_size,
    check_w4a8,
)
from .llvm_loops import I8, I32, I64, broadcast, counted_loop, declare, prefetch
from .threads import threads_for
from .vnni import check_kernels, default_kernels

__all__ = ["PackedW4A8", "prepack_w4a8", "w4a8_packed_linear", "w4a8_packed_linear_checked"]

ROWS = 64  # output rows per block = 4 zmm of 16 int32 lanes
STEP_BYTES = ROWS * 4  # one step of 8 inputs: 64 rows × 4 bytes
PREFETCH_BYTES = 2048  # how far ahead in the weight stream to prefetch
TOKENS_PER_CALL = 4  # 16 int32 accumulators + 8 code vectors + 2 broadcasts in registers


@dataclass(frozen=True, eq=False)
class PackedW4A8:
    """A W4A8 weight in the kernels' layout, made once by ``prepack_w4a8``; checked against its
    buffers when built (``dataclasses.replace`` included) and before each kernel call.

    >>> p = prepack_w4a8(np.full((3, 32), 0x21, np.uint8), np.ones((3, 2), np.float32),
    ...                  np.full((3, 2), 8, np.float32), 32, 4)
    >>> p.w.shape, p.scale.shape, p.nbytes     # codes 1, 2 alternate: byte 0 = q[k+4]·16 + q[k]
    ((1, 8, 64, 4), (1, 2, 64), 3072)
    >>> int(p.w[0, 0, 0, 0]), int(p.w[0, 0, 0, 1])
    (17, 34)
    """

    bits: int  # 4, or 3 (3-bit codes in 4-bit fields)
    in_features: int  # I
    out_features: int  # O (rows beyond O are zero padding)
    group_size: int  # g, a multiple of 8 dividing I
    w: np.ndarray  # (NB, K8, 64, 4) uint8: step k, row r, byte b = q[r, 8k+b] | q[r, 8k+4+b] << 4
    scale: np.ndarray  # (NB, G, 64) float32, s[o, g] at [o // 64, g, o % 64]
    zero: np.ndarray  # (NB, G, 64) float32, z[o, g] likewise

    def __post_init__(self):
        self.check_layout("PackedW4A8")
        for name in ("scale", "zero"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"PackedW4A8.{name} contains NaN or Inf; re-quantize the weight")

    def check_layout(self, name: str = "p") -> None:
        """Sizes, dtypes and contiguity of the buffers agree with the size fields (O(1))."""
        if self.bits not in (4, 3) or isinstance(self.bits, bool):
            raise ValueError(f"{name}.bits must be 4 or 3, got {self.bits!r}; use prepack_w4a8()")
        I = check_size(self.in_features, f"{name}.in_features")
        O = check_size(self.out_features, f"{name}.out_features", minimum=0)
        g = check_size(self.group_size, f"{name}.group_size")
        if I % g or g % 8:
            raise ValueError(
                f"{name}.group_size {g} must be a multiple of 8 dividing in_features {I}; "
                "make the weight with prepack_w4a8()"
            )
        NB = -(-O // ROWS)
        what = f"{O} × {I} codes of {self.bits} bits"
        check_buffer(self.w, f"{name}.w", np.uint8, (NB, I // 8, ROWS, 4), what)
        for field in ("scale", "zero"):
            check_buffer(getattr(self, field), f"{name}.{field}", np.float32,
                         (NB, I // g, ROWS), f"{what} in groups of {g}")  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads per token: codes + scales + zeros (padding rows included)."""
        return int(self.w.nbytes + self.scale.nbytes + self.zero.nbytes)


def prepack_w4a8(
    packed: np.ndarray, scale: np.ndarray, zero: np.ndarray, group_size: int, bits: int
) -> PackedW4A8:
    """Canonical packed codes (O, I·bits/8) + per-group scale/zero (O, G) → ``PackedW4A8``.

    >>> from tinyquant.quant.pack import pack
    >>> codes = (np.arange(16, dtype=np.uint8) % 16).reshape(1, 16)
    >>> s, z = np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32)
    >>> p = prepack_w4a8(pack(codes, 4), s, z, 8, 4)
    >>> [hex(int(b)) for b in p.w[0, 1, 0]]   # inputs 8…11 low nibbles, 12…15 high nibbles
    ['0xc8', '0xd9', '0xea', '0xfb']
    """
    check_array(packed, "packed", np.uint8, 2)
    if packed.shape[1] == 0:
        raise ValueError(f"packed has shape {packed.shape}: no codes; pass (out, in·bits/8) bytes")
    bits = check_bits(bits)  # an int (4.0 refused) before it sizes anything
    O = packed.shape[0]
    I = packed.shape[1] * 8 // bits
    check_w4a8(np.zeros((1, I), np.float32), packed, scale, zero, group_size, bits)
    # 1) unsigned codes, rows padded to a multiple of 64 (padding rows: code 0, scale 0, zero 0)
    NB = -(-O // ROWS)
    codes = np.zeros((NB * ROWS, I), np.uint8)
    codes[:O] = unpack(packed, bits, I)  # (O, I)
    s = np.zeros((NB * ROWS, scale.shape[1]), np.float32)
    z = np.zeros_like(s)
    s[:O], z[:O] = scale, zero  # (O, G)
    # 2) per step of 8 inputs: byte b of row r = q[r, 8k + b] | q[r, 8k + 4 + b] << 4
    c = codes.reshape(NB, ROWS, I // 8, 2, 4)  # (NB, 64, K8, half, b)
    w = c[:, :, :, 0, :] | (c[:, :, :, 1, :] << 4)  # (NB, 64, K8, 4)
    blocks = (NB, ROWS, scale.shape[1])
    return PackedW4A8(
        bits=int(bits),
        in_features=I,
        out_features=O,
        group_size=int(group_size),
        w=np.ascontiguousarray(w.transpose(0, 2, 1, 3)),  # (NB, K8, 64, 4)
        scale=np.ascontiguousarray(s.reshape(blocks).transpose(0, 2, 1)),  # (NB, G, 64)
        zero=np.ascontiguousarray(z.reshape(blocks).transpose(0, 2, 1)),  # (NB, G, 64)
    )


# ---------------------------------------------------------------------------------------------
# vnni: one 64-row block × tt tokens, every group, in LLVM IR
# ---------------------------------------------------------------------------------------------
def _make_block(tt: int):
    """An intrinsic ``f(w, qx, ldq, asum, ldas, s, z, sx, nstep, G, y, ldy)`` computing
    y[t, r] for tt tokens and the 64 rows of one block (addresses as integers, strides in
    bytes): w the block's (K8, 64, 4) codes, qx &q_x[t0, 0] (int8), asum &f32(asum)[t0, 0],
    s / z the block's (G, 64) float32, sx &s_x[t0], nstep = g / 8, y &y[t0, 64·block]."""
    f32 = ir.FloatType()
    v16i, v16f = ir.VectorType(I32, 16), ir.VectorType(f32, 16)
    nib = ir.Constant(v16i, [0x0F0F0F0F] * 16)
    four = ir.Constant(v16i, [4] * 16)

    @intrinsic
    def block(typingctx, w, qx, ldq, asum, ldas, s, z, sx, nstep, G, y, ldy):
        sig = types.void(*([types.intp] * 12))

        def codegen(context, builder, signature, args):
            w_a, qx_a, ldq_v, as_a, ldas_v, s_a, z_a, sx_a, nstep_v, G_v, y_a, ldy_v = args
            dp = declare(builder, "llvm.x86.avx512.vpdpbusd.512", v16i, [v16i, v16i, v16i])
            addrs = (w_a, qx_a, as_a, s_a, z_a, sx_a, y_a)
            wp, qp, asp, sp, zp, sxp, yp = [builder.inttoptr(a, I8.as_pointer()) for a in addrs]

            def load(base, offset, ty):
                ptr = builder.bitcast(builder.gep(base, [offset]), ty.as_pointer())
                return builder.load(ptr, align=1 if ty is I32 else 4)

            def group(gi, ys):  # one group: the int32 sums, then the float fold
                step0 = builder.mul(gi, nstep_v)

                def step(k, accs):  # 8 inputs: 4 loads, tt · 8 vpdpbusd
                    kk = builder.add(step0, k)
                    w_k = builder.gep(wp, [builder.mul(kk, I64(STEP_BYTES))])
                    for j in range(4):
                        prefetch(builder, w_k, PREFETCH_BYTES + 64 * j)
                    lo, hi = [], []
                    for j in range(4):
                        v = load(w_k, I64(64 * j), v16i)
                        lo.append(builder.and_(v, nib))  # codes of inputs k … k+3 (u8)
                        hi.append(builder.and_(builder.lshr(v, four), nib))  # k+4 … k+7
                    new = []
                    for t in range(tt):
                        q_t = builder.add(builder.mul(ldq_v, I64(t)), builder.mul(kk, I64(8)))
                        a_lo = broadcast(builder, load(qp, q_t, I32), v16i)  # q_x[t, k:k+4]
                        a_hi = broadcast(builder, load(qp, builder.add(q_t, I64(4)), I32), v16i)
                        for j in range(4):
                            acc = builder.call(dp, [accs[4 * t + j], lo[j], a_lo])
                            new.append(builder.call(dp, [acc, hi[j], a_hi]))
                    return new

                accs = counted_loop(builder, nstep_v, 4 * tt, ir.Constant(v16i, None), step, "k")
                # fold: d = f32(acc) − z · f32(asum);  y = y + s · d   (the contract's order)
                row0 = builder.mul(gi, I64(ROWS * 4))
                s_j = [load(sp, builder.add(row0, I64(64 * j)), v16f) for j in range(4)]
                z_j = [load(zp, builder.add(row0, I64(64 * j)), v16f) for j in range(4)]
                new = []
                for t in range(tt):
                    a_off = builder.add(builder.mul(ldas_v, I64(t)), builder.mul(gi, I64(4)))
                    asum_t = broadcast(builder, load(asp, a_off, f32), v16f)
                    for j in range(4):
                        d = builder.fsub(builder.sitofp(accs[4 * t + j], v16f),
                                         builder.fmul(z_j[j], asum_t))  # fmt: skip
                        new.append(builder.fadd(ys[4 * t + j], builder.fmul(s_j[j], d)))
                return new

            fins = counted_loop(builder, G_v, 4 * tt, ir.Constant(v16f, None), group, "g")
            # y = y · s_x, stored once
            for t in range(tt):
                sx_t = broadcast(builder, load(sxp, I64(4 * t), f32), v16f)
                y_t = builder.gep(yp, [builder.mul(ldy_v, I64(t))])
                for j in range(4):
                    ptr = builder.bitcast(builder.gep(y_t, [I64(64 * j)]), v16f.as_pointer())
                    builder.store(builder.fmul(fins[4 * t + j], sx_t), ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return block


_block_t4 = _make_block(TOKENS_PER_CALL)
_block_t1 = _make_block(1)


@njit(parallel=True, cache=True)
def _w4a8_vnni(qx, asum, sx, w, s, z, y):  # pragma: no cover - compiled
    """y (T, Op) for all blocks; qx (T, I) int8, asum (T, G) float32, sx (T,) float32."""
    T, I = qx.shape
    NB, K8 = w.shape[0], w.shape[1]
    G = s.shape[1]
    nstep = K8 // G
    Op = y.shape[1]
    for ob in prange(NB):
        wb = w.ctypes.data + ob * K8 * STEP_BYTES
        sb = s.ctypes.data + ob * G * ROWS * 4
        zb = z.ctypes.data + ob * G * ROWS * 4
        t = 0
        while t < T:
            q_t, a_t = qx.ctypes.data + t * I, asum.ctypes.data + t * G * 4
            sx_t = sx.ctypes.data + t * 4
            y_t = y.ctypes.data + (t * Op + ob * ROWS) * 4
            if T - t >= TOKENS_PER_CALL:
                _block_t4(wb, q_t, I, a_t, G * 4, sb, zb, sx_t, nstep, G, y_t, Op * 4)
                t += TOKENS_PER_CALL
            else:
                _block_t1(wb, q_t, I, a_t, G * 4, sb, zb, sx_t, nstep, G, y_t, Op * 4)
                t += 1


# ---------------------------------------------------------------------------------------------
# portable: plain loops over the same layout, the same float order
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _i32(v):  # pragma: no cover - compiled
    return np.int32(v)


@njit(cache=True, inline="always")
def _nib(v, shift):  # pragma: no cover - compiled
    """The 4-bit field of the int32 ``v`` at bit ``shift`` (int32, so LLVM keeps 32-bit lanes)."""
    return np.int32((v >> np.int32(shift)) & np.int32(15))


@njit(parallel=True, cache=True)
def _w4a8_portable(qx, asum, sx, w32, s, z, y):  # pragma: no cover - compiled
    """The same y as ``_w4a8_vnni``; w32 is the layout viewed as (NB, K8, 64) uint32 words (the
    4 bytes of a row, little-endian: byte b in bits 8b … 8b + 7), so the row loop vectorizes."""
    T = qx.shape[0]
    NB, K8 = w32.shape[0], w32.shape[1]
    G = s.shape[1]
    nstep = K8 // G
    for ob in prange(NB):
        acc = np.empty(ROWS, np.int32)
        yb = np.empty(ROWS, np.float32)
        for t in range(T):
            q = qx[t]
            yb[:] = 0
            for gi in range(G):
                acc[:] = 0
                for k in range(gi * nstep, (gi + 1) * nstep):
                    col = w32[ob, k]  # (64,) words
                    qk = q[8 * k : 8 * k + 8]  # q_x[t, 8k … 8k + 7]
                    q0, q1, q2, q3 = _i32(qk[0]), _i32(qk[1]), _i32(qk[2]), _i32(qk[3])
                    q4, q5, q6, q7 = _i32(qk[4]), _i32(qk[5]), _i32(qk[6]), _i32(qk[7])
                    for r in range(ROWS):
                        v = np.int32(col[r])
                        a = np.int32(np.int32(_nib(v, 0) * q0) + np.int32(_nib(v, 8) * q1))
                        b = np.int32(np.int32(_nib(v, 16) * q2) + np.int32(_nib(v, 24) * q3))
                        c = np.int32(np.int32(_nib(v, 4) * q4) + np.int32(_nib(v, 12) * q5))
                        e = np.int32(np.int32(_nib(v, 20) * q6) + np.int32(_nib(v, 28) * q7))
                        lo, hi = np.int32(a + b), np.int32(c + e)  # inputs k…k+3, k+4…k+7
                        acc[r] = np.int32(acc[r] + np.int32(lo + hi))
                a_tg = asum[t, gi]
                s_g, z_g = s[ob, gi], z[ob, gi]  # (64,)
                for r in range(ROWS):  # the contract's order: d = f32(acc) − z·f32(asum); y += s·d
                    d = np.float32(acc[r]) - z_g[r] * a_tg
                    yb[r] = yb[r] + s_g[r] * d
            for r in range(ROWS):
                y[t, ob * ROWS + r] = yb[r] * sx[t]


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def w4a8_packed_linear(x: np.ndarray, p: PackedW4A8, kernels: str | None = None) -> np.ndarray:
    """y (T, O) float32 for x (T, I) float32 and a prepacked weight; ``array_equal`` to
    ``reference.w4a8_linear``. ``kernels``: "vnni" | "portable" | None (this CPU's default).

    >>> from tinyquant.kernels import reference
    >>> rng = np.random.default_rng(0)
    >>> packed = rng.integers(0, 256, (70, 64), dtype=np.uint8)   # O = 70, I = 128
    >>> s = rng.random((70, 4), dtype=np.float32); z = np.full((70, 4), 8, np.float32)
    >>> x = rng.standard_normal((5, 128), dtype=np.float32)
    >>> y = w4a8_packed_linear(x, prepack_w4a8(packed, s, z, 32, 4))
    >>> y.shape, bool(np.array_equal(y, reference.w4a8_linear(x, packed, s, z, 32, 4)))
    ((5, 70), True)
    """
    # 1) validate in Python: x, the weight's fields against its buffers, the kernel family
    check_activations(x)
    if not isinstance(p, PackedW4A8):
        raise ValueError(f"p must be a PackedW4A8 from prepack_w4a8(), got {type(p).__name__}")
    p.check_layout("p")
    if x.shape[1] != p.in_features:
        raise ValueError(f"x has {x.shape[1]} features but the weight expects {p.in_features}")
    return w4a8_packed_linear_checked(x, p, kernels)


def w4a8_packed_linear_checked(x: np.ndarray, p: PackedW4A8, kernels: str | None = None):
    """``w4a8_packed_linear`` for a caller that validated x (finite float32 (T, I), C-contiguous)
    and built ``p`` itself (a ``QuantLinear``): no second validation of the same arrays."""
    T, I = x.shape
    if T == 0:  # no tokens: nothing to compute
        return np.zeros((0, p.out_features), np.float32)
    kind = default_kernels() if kernels is None else check_kernels(kernels)
    # 2) the activation codes — the reference's own function — and their exact group sums
    g = p.group_size
    q_x, s_x, asum = quantize_rows(x, g)  # (T, I) int8, (T,) float32, (T, G) int32: one pass
    asum = asum.astype(np.float32)  # exact: |asum| ≤ g · 127 < 2²⁴
    # 3) the kernel: all blocks, all groups; small calls on one thread (threads.py)
    NB = p.w.shape[0]
    y = np.empty((T, NB * ROWS), np.float32)  # (T, Op)
    with threads_for(T * I * NB * ROWS):
        if kind == "vnni":
            _w4a8_vnni(q_x, asum, s_x, p.w, p.scale, p.zero, y)
        else:  # a row's 4 bytes as one word, byte b in bits 8b … 8b + 7 (a view where native)
            if np.little_endian:
                w32 = p.w.view(np.uint32).reshape(NB, I // 8, ROWS)  # (NB, K8, 64)
            else:
                shifts = np.array([0, 8, 16, 24], np.uint32)
                w32 = np.bitwise_or.reduce(p.w.astype(np.uint32) << shifts, axis=3)
            _w4a8_portable(q_x, asum, s_x, w32, p.scale, p.zero, y)
    return y[:, : p.out_features]  # (T, O)
