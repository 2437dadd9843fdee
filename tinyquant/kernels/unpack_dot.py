"""Unpack-and-accumulate micro-kernel for weight-only matmuls, with explicit 16-lane vectors.

For one block of R = 64 output rows stored "rows in lanes" (see ``weight_only.prepack``) and a
run of n input columns, it computes, for tt tokens,

    acc[t, r] = Σ_{i < n} q[r, i] · x[t, i]          r < 64, q unsigned b-bit codes, float32

One input column holds the 64 codes of the block in 64·b/8 bytes; row r sits in byte r mod BPC,
field r div BPC (BPC = 64·b/8 bytes per column), so a 16-byte load zero-extended to 16 int32
lanes, one shift and one AND give 16 codes of 16 *consecutive rows* — the lanes of one FMA with
x[t, i] broadcast. No horizontal sums, no per-byte shuffles:

    b = 4: byte j = [ q[j + 32] : high nibble | q[j] : low nibble ]        j < 32
    b = 2: byte j = [ q[j + 48] | q[j + 32] | q[j + 16] | q[j] ]            j < 16
    b = 8: byte j = q[j]                                                     j < 64

Two intrinsics share the column code: ``unpack_dot{b}_t{tt}`` returns the raw sums of one
group for tt tokens (the caller folds scales and zero points), and ``unpack_dot{b}_groups``
runs one token through *all* groups of a block, folding y += s·acc − s·z·Σx in registers —
the decode path, one call per 64-row block (W4A16, 2048 × 2048, one thread, cache-resident:
23 → 29 G weights/s against the per-group calls).

Code → float: with AVX-512 (``lut=True``) a table lookup, ``vpermps``, which reads the low 4 bits
of each lane as an index into 16 floats: table[k] = (k >> offset) & mask gives the field's value
as a float directly — no AND, no int → float conversion (both compete with the FMAs for the same
execution port; the lookup runs on the shuffle port). Measured on this project's 2-core Xeon
(single thread, 11008 × 4096): W2 9.5 → 15.1 G weights/s, W4 10.4 → 11.0. Without AVX-512 the
generic path (lshr, and, uitofp) is used.

Why IR and not plain Numba loops: LLVM's loop vectorizer picks 256-bit vectors on this kind of
CPU ("prefer-256-bit") and keeps the accumulators in memory; with explicit <16 x float> values
the 4·tt accumulators live in zmm registers (AVX-512) for the whole run. Apart from the lookup,
the IR uses generic vector operations (zext, lshr, and, uitofp, llvm.fma) that LLVM lowers on
any CPU — to narrower registers where AVX-512 is missing.

Caching caveat: Numba's on-disk cache of a kernel that calls these intrinsics is keyed on the
*calling* module's source; after editing this file, clear the ``__pycache__`` of ``kernels/``.

Ref: the interleaved-nibble weight layouts of llama.cpp's Q4_0 and of Marlin (Frantar et al.
2024) serve the same purpose: one AND/shift feeds many contiguous lanes.
Shape legend: R = 64 rows per block, BPC bytes per column, tt tokens per call, n columns.
"""

from __future__ import annotations

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .llvm_loops import I8, I32, I64, broadcast, counted_loop, declare, prefetch, store_vectors

ROWS = 64  # rows per block = 4 vectors of 16 float32 lanes
PREFETCH_BYTES = 2048  # how far ahead of the current column the weights are prefetched
_LANES = 16


def bytes_per_column(bits: int) -> int:
    """Bytes one input column of a 64-row block occupies: 64 · bits / 8.

    >>> bytes_per_column(4), bytes_per_column(2)
    (32, 16)
    """
    return ROWS * bits // 8


def _lut_available() -> bool:
    """True when the host has AVX-512F, so that ``vpermps`` on zmm registers exists."""
    return bool(llvm_binding.get_host_cpu_features().get("avx512f", False))


def _column_codes(builder: ir.IRBuilder, col: ir.Value, bits: int, lut: bool) -> list[ir.Value]:
    """The 64 codes of the column at byte pointer ``col`` as four <16 x float>: rows 16j … 16j+15.

    Prefetches the weights ``PREFETCH_BYTES`` ahead (read, keep in all caches): the hardware
    streamer alone left decoding ≈ 25% below DRAM bandwidth (measured, W8, 1 thread).
    """
    f32 = ir.FloatType()
    v16i, v16f, v16b = ir.VectorType(I32, 16), ir.VectorType(f32, 16), ir.VectorType(I8, 16)
    bpc, fields, mask = bytes_per_column(bits), 8 // bits, (1 << bits) - 1
    permvar = declare(builder, "llvm.x86.avx512.permvar.sf.512", v16f, [v16f, v16i])
    prefetch(builder, col, PREFETCH_BYTES)
    raw: dict[int, ir.Value] = {}
    q = []
    for j in range(4):
        byte0, field = (16 * j) % bpc, (16 * j) // bpc
        if byte0 not in raw:
            ptr = builder.bitcast(builder.gep(col, [I64(byte0)]), v16b.as_pointer())
            raw[byte0] = builder.zext(builder.load(ptr, align=1), v16i)
        v = raw[byte0]
        if lut and bits < 8:
            # vpermps reads the low 4 bits of each lane as a table index: the table maps them
            # straight to the float code (no AND, no int → float convert)
            shift = 4 * ((field * bits) // 4)
            if shift:
                v = builder.lshr(v, ir.Constant(v16i, [shift] * _LANES))
            low = (field * bits) % 4  # bit offset of the field inside the index
            table = ir.Constant(v16f, [float((k >> low) & mask) for k in range(16)])
            q.append(builder.call(permvar, [table, v]))
            continue
        if field:
            v = builder.lshr(v, ir.Constant(v16i, [field * bits] * _LANES))
        if field != fields - 1:
            v = builder.and_(v, ir.Constant(v16i, [mask] * _LANES))
        q.append(builder.uitofp(v, v16f))
    return q


def _make_unpack_dot(bits: int, tt: int, lut: bool):
    """An intrinsic ``f(w_addr, x_addr, ldx, n, acc_addr)`` for ``bits``-bit codes, tt tokens.

    w_addr: first byte of column 0 of the block (columns are ``bytes_per_column`` apart);
    x_addr: &x[0, 0] of the tokens (float32, ``ldx`` bytes between tokens);
    acc_addr: tt · 64 float32, overwritten with acc[t, r] at t·64 + r.
    """
    f32 = ir.FloatType()
    v16f = ir.VectorType(f32, 16)
    bpc = bytes_per_column(bits)

    @intrinsic
    def unpack_dot(typingctx, w_addr, x_addr, ldx, n, acc_addr):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            w_a, x_a, ldx_v, n_v, acc_a = args
            fma = declare(builder, "llvm.fma.v16f32", v16f, [v16f, v16f, v16f])
            wp = builder.inttoptr(w_a, I8.as_pointer())
            xp = builder.inttoptr(x_a, f32.as_pointer())
            accp = builder.inttoptr(acc_a, f32.as_pointer())
            ldx_el = builder.ashr(ldx_v, I64(2))  # bytes → float32 elements

            def body(i, accs):
                # 1) the 64 codes of column i; 2) acc[t, 16j:16j+16] += q_j · x[t, i]
                q = _column_codes(builder, builder.gep(wp, [builder.mul(i, I64(bpc))]), bits, lut)
                new = []
                for t in range(tt):
                    x_ti = builder.gep(xp, [builder.add(builder.mul(ldx_el, I64(t)), i)])
                    xv = broadcast(builder, builder.load(x_ti), v16f)
                    for j in range(4):
                        new.append(builder.call(fma, [q[j], xv, accs[4 * t + j]]))
                return new

            fins = counted_loop(builder, n_v, tt * 4, ir.Constant(v16f, None), body, "ud")
            store_vectors(builder, accp, fins)  # 3) store the accumulators once
            return context.get_dummy_value()

        return sig, codegen

    return unpack_dot


def fold_group(builder: ir.IRBuilder, sp, szp, xsp, gi, accs: list, outs: list) -> list:
    """The zero-point fold of group ``gi`` for one 64-row block, in registers:

        out[r] += s[gi, r] · acc[r] − sz[gi, r] · xs[gi]          r < 64 (4 vectors of 16)

    sp, szp: float pointers to the block's (G, 64) scales and s·z; xsp: the token's group sums.
    """
    v16f = accs[0].type
    fma = declare(builder, "llvm.fma.v16f32", v16f, [v16f, v16f, v16f])
    xs = broadcast(builder, builder.load(builder.gep(xsp, [gi])), v16f)
    new = []
    for j in range(4):
        at = builder.add(builder.mul(gi, I64(ROWS)), I64(16 * j))
        s_v, sz_v = (builder.load(builder.bitcast(builder.gep(p, [at]), v16f.as_pointer()), align=4)
                     for p in (sp, szp))  # fmt: skip
        o = builder.call(fma, [s_v, accs[j], outs[j]])
        new.append(builder.fsub(o, builder.fmul(sz_v, xs)))
    return new


def _make_unpack_dot_groups(bits: int, lut: bool):
    """An intrinsic ``f(w_addr, x_addr, xs_addr, s_addr, sz_addr, n_groups, g, y_addr)``: one
    token, one 64-row block, every group, the zero points folded in registers:

        y[r] = Σ_gi ( s[gi, r] · Σ_{i ∈ gi} q[r, i] · x[i]  −  sz[gi, r] · xs[gi] )

    w_addr: column 0 of the block; x_addr: &x[0] (float32); xs_addr: the n_groups group sums
    of x; s_addr, sz_addr: (n_groups, 64) float32 of the block; y_addr: 64 float32, written.
    One call per block instead of one per group: no per-group call, store and reload.
    """
    f32 = ir.FloatType()
    v16f = ir.VectorType(f32, 16)
    bpc = bytes_per_column(bits)

    @intrinsic
    def unpack_dot_groups(typingctx, w_addr, x_addr, xs_addr, s_addr, sz_addr, n_groups, g,
                          y_addr):  # fmt: skip
        sig = types.void(*[types.intp] * 8)

        def codegen(context, builder, signature, args):
            w_a, x_a, xs_a, s_a, sz_a, ng_v, g_v, y_a = args
            fma = declare(builder, "llvm.fma.v16f32", v16f, [v16f, v16f, v16f])
            wp = builder.inttoptr(w_a, I8.as_pointer())
            xp = builder.inttoptr(x_a, f32.as_pointer())
            xsp = builder.inttoptr(xs_a, f32.as_pointer())
            sp = builder.inttoptr(s_a, f32.as_pointer())
            szp = builder.inttoptr(sz_a, f32.as_pointer())
            zero = ir.Constant(v16f, None)

            def group(gi, outs):
                # 1) acc[r] = Σ_{i ∈ gi} q[r, i] · x[i], columns col0 … col0 + g
                col0 = builder.mul(gi, g_v)
                w_g = builder.gep(wp, [builder.mul(col0, I64(bpc))])
                x_g = builder.gep(xp, [col0])

                def column(i, accs):
                    q = _column_codes(builder, builder.gep(w_g, [builder.mul(i, I64(bpc))]),
                                      bits, lut)  # fmt: skip
                    xv = broadcast(builder, builder.load(builder.gep(x_g, [i])), v16f)
                    return [builder.call(fma, [q[j], xv, accs[j]]) for j in range(4)]

                accs = counted_loop(builder, g_v, 4, zero, column, "col")
                return fold_group(builder, sp, szp, xsp, gi, accs, outs)  # 2) scales, zeros

            outs = counted_loop(builder, ng_v, 4, zero, group, "grp")
            store_vectors(builder, builder.inttoptr(y_a, f32.as_pointer()), outs)
            return context.get_dummy_value()

        return sig, codegen

    return unpack_dot_groups


# tt = 4 tokens keeps 16 accumulators + 4 code vectors in registers; tt = 1 serves the rest.
TOKENS_PER_CALL = 4
USE_LUT = _lut_available()
unpack_dot8_t4 = _make_unpack_dot(8, 4, USE_LUT)
unpack_dot8_t1 = _make_unpack_dot(8, 1, USE_LUT)
unpack_dot4_t4 = _make_unpack_dot(4, 4, USE_LUT)
unpack_dot4_t1 = _make_unpack_dot(4, 1, USE_LUT)
unpack_dot2_t4 = _make_unpack_dot(2, 4, USE_LUT)
unpack_dot2_t1 = _make_unpack_dot(2, 1, USE_LUT)
unpack_dot8_groups = _make_unpack_dot_groups(8, USE_LUT)
unpack_dot4_groups = _make_unpack_dot_groups(4, USE_LUT)
unpack_dot2_groups = _make_unpack_dot_groups(2, USE_LUT)
