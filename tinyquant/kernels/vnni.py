"""The CPU's int8 dot-product instruction (AVX512-VNNI ``vpdpbusd``) exposed to Numba.

One ``vpdpbusd`` does, for each of 16 int32 lanes j of a 512-bit register,

    acc[j] += Σ_{q=0..3} u[4j+q] · s[4j+q],      u unsigned 8-bit, s signed 8-bit

that is 64 multiply-adds per instruction, 4× the multiply-adds of one float32 FMA. LLVM does
not emit it from plain loops (it picks the 16-bit ``vpdpwssd``/``vpmaddwd``), so this module
writes the inner loop of the integer GEMM directly in LLVM IR, through a Numba ``@intrinsic``.

The u8 × s8 trick: the instruction wants one operand *unsigned*. Signed int8 weights w are
stored shifted, u = w + 128 ∈ [0, 255] (a XOR with 0x80 of the bits), and the shift is removed
exactly afterwards with the activations' row sum:

    Σ_k w[n,k]·a[m,k] = Σ_k u[n,k]·a[m,k] − 128 · Σ_k a[m,k]

Products are exact in int32 as long as K · 255 · 128 < 2³¹ (K ≤ 65 536).

Refs: Intel Intrinsics Guide, ``_mm512_dpbusd_epi32``; LLVM ``llvm.x86.avx512.vpdpbusd.512``;
the same trick in oneDNN and FBGEMM (u8 activations, s8 weights, "compensation" term).

Shape legend: MR activation rows and NR weight rows per tile, K reduction length (bytes).
"""

from __future__ import annotations

import functools
import os

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_VEC_BYTES = 64  # one zmm register: 64 int8 = 16 int32 lanes


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports in ``/proc/cpuinfo`` (empty set if unreadable).

    >>> isinstance(cpu_flags(), set)
    True
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def has_vnni() -> bool:
    """True when both the CPU (``/proc/cpuinfo``: avx512_vnni) and LLVM's host target
    (``avx512vnni``) offer ``vpdpbusd`` on 512-bit registers.

    LLVM's view is required too: Numba compiles for the host LLVM detects, and an intrinsic the
    target lacks cannot be selected. Where ``/proc/cpuinfo`` is missing, LLVM's view decides.

    >>> has_vnni() in (True, False)
    True
    """
    llvm_ok = bool(llvm_binding.get_host_cpu_features().get("avx512vnni", False))
    flags = cpu_flags()
    return llvm_ok and (not flags or "avx512_vnni" in flags)


def default_kernels() -> str:
    """The integer-GEMM kernel family to use: ``TINYQUANT_KERNELS`` if set, else by CPU feature.

    ``TINYQUANT_KERNELS=portable`` forces plain Numba loops; ``=vnni`` forces the VNNI kernels
    (a ``ValueError`` if the CPU lacks them).

    >>> default_kernels() in ("portable", "vnni")
    True
    """
    choice = os.environ.get("TINYQUANT_KERNELS", "").strip().lower()
    if choice in ("", "auto"):
        return "vnni" if has_vnni() else "portable"
    return check_kernels(choice)


def check_kernels(choice: str) -> str:
    """Validate a kernel-family name ("portable" | "vnni") against this CPU.

    >>> check_kernels("portable")
    'portable'
    """
    if choice not in ("portable", "vnni"):
        raise ValueError(f"kernels must be 'portable' or 'vnni' (or None for auto), got {choice!r}")
    if choice == "vnni" and not has_vnni():
        raise ValueError(
            "kernels='vnni' needs an AVX512-VNNI CPU (flag avx512_vnni); this CPU lacks it — "
            "use 'portable'"
        )
    return choice


def _make_tile(mr: int, nr: int):
    """Build an intrinsic ``tile(u_addr, ldu, s_addr, lds, nblocks, out_addr)`` computing

        out[m·nr + n] = Σ_{k < 64·nblocks} u[n·ldu + k] · s[m·lds + k]     (int32, overwritten)

    for an mr × nr tile: u holds nr unsigned weight rows, s holds mr signed activation rows,
    ``ldu``/``lds`` are row strides in bytes, and addresses are plain integers (``a.ctypes.data``).
    The loop keeps mr·nr 16-lane accumulators in registers and reduces them once at the end.
    """
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    v16 = ir.VectorType(i32, 16)

    @intrinsic
    def tile(typingctx, u_addr, ldu, s_addr, lds, nblocks, out_addr):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            u_addr_v, ldu_v, s_addr_v, lds_v, nblocks_v, out_addr_v = args
            mod = builder.module
            dp = cgutils.get_or_insert_function(
                mod, ir.FunctionType(v16, [v16, v16, v16]), "llvm.x86.avx512.vpdpbusd.512"
            )
            hsum = cgutils.get_or_insert_function(
                mod, ir.FunctionType(i32, [v16]), "llvm.vector.reduce.add.v16i32"
            )
            u_base = builder.inttoptr(u_addr_v, i8.as_pointer())
            s_base = builder.inttoptr(s_addr_v, i8.as_pointer())
            out_ptr = builder.inttoptr(out_addr_v, i32.as_pointer())
            u_rows = [builder.gep(u_base, [builder.mul(ldu_v, i64(n))]) for n in range(nr)]
            s_rows = [builder.gep(s_base, [builder.mul(lds_v, i64(m))]) for m in range(mr)]
            kend = builder.mul(nblocks_v, i64(_VEC_BYTES))
            zero = ir.Constant(v16, None)

            entry = builder.block
            loop = builder.append_basic_block("vnni.loop")
            done = builder.append_basic_block("vnni.done")
            builder.cbranch(builder.icmp_signed(">", kend, i64(0)), loop, done)

            # loop body: k += 64, one vpdpbusd per (m, n)
            builder.position_at_end(loop)
            k = builder.phi(i64, "k")
            k.add_incoming(i64(0), entry)
            accs = []
            for _ in range(mr * nr):
                p = builder.phi(v16)
                p.add_incoming(zero, entry)
                accs.append(p)

            def load(row):
                ptr = builder.bitcast(builder.gep(row, [k]), v16.as_pointer())
                return builder.load(ptr, align=1)

            uvecs = [load(r) for r in u_rows]
            svecs = [load(r) for r in s_rows]
            new = []
            for m in range(mr):
                for n in range(nr):
                    new.append(builder.call(dp, [accs[m * nr + n], uvecs[n], svecs[m]]))
            k_next = builder.add(k, i64(_VEC_BYTES))
            k.add_incoming(k_next, loop)
            for p, v in zip(accs, new, strict=True):
                p.add_incoming(v, loop)
            builder.cbranch(builder.icmp_signed("<", k_next, kend), loop, done)

            # horizontal sums, stored once
            builder.position_at_end(done)
            fins = []
            for idx in range(mr * nr):  # all phis first: LLVM wants them at the block's top
                fin = builder.phi(v16)
                fin.add_incoming(zero, entry)
                fin.add_incoming(new[idx], loop)
                fins.append(fin)
            for idx, fin in enumerate(fins):
                builder.store(builder.call(hsum, [fin]), builder.gep(out_ptr, [i64(idx)]))
            return context.get_dummy_value()

        return sig, codegen

    return tile


# The tiles the GEMM driver uses: 6 activation rows × 4 weight rows for the bulk (24 accumulators
# + 4 weight vectors + 1 activation vector = 29 of the 32 zmm registers), edge tiles for the rest.
TILE_MR, TILE_NR = 6, 4
tile_6x4 = _make_tile(6, 4)
tile_1x4 = _make_tile(1, 4)
tile_6x1 = _make_tile(6, 1)
tile_1x1 = _make_tile(1, 1)
VEC_BYTES = _VEC_BYTES
