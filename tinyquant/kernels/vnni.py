"""The CPU's int8 dot-product instruction (AVX512-VNNI ``vpdpbusd``) exposed to Numba.

One ``vpdpbusd`` does, for each of 16 int32 lanes j of a 512-bit register,

    acc[j] += Σ_{q=0..3} u[4j+q] · s[4j+q],      u unsigned 8-bit, s signed 8-bit

that is 64 multiply-adds per instruction, 4× the multiply-adds of one float32 FMA. LLVM does
not emit it from plain loops (it picks the 16-bit ``vpdpwssd``/``vpmaddwd``), so this module
writes the inner loop of the integer GEMM directly in LLVM IR, through a Numba ``@intrinsic``.

Which operands go in which lanes: weights are stored once, at load time, in *panels* (64 output
columns × 4 consecutive k per 256 bytes, ``pack_panels``), so that one zmm load feeds 16 output
columns with 4 products each, and 4 activation bytes are broadcast to all lanes; accumulators
are then columns of C — no horizontal sums (the layout of oneDNN's and FBGEMM's int8 GEMMs).
Measured against the first version, which dotted 64-byte rows and reduced each accumulator
at the end: 530 vs 346 GOP/s at 2048³, one thread, CPU time on the project's shared 2-core Xeon
(float32 BLAS in the same run: 154 GFLOP/s).

The u8 × s8 trick: the instruction wants one operand *unsigned*. Signed int8 weights w are
stored shifted, u = w + 128 ∈ [0, 255] (a XOR with 0x80 of the bits), and the shift is removed
exactly afterwards with the activations' row sum:

    Σ_k w[n,k]·a[m,k] = Σ_k u[n,k]·a[m,k] − 128 · Σ_k a[m,k]

Products are exact in int32 as long as K · 255 · 128 < 2³¹ (K ≤ 65 536).

Here the *weights* carry the offset (they are packed once anyway) and the correction is a row
sum of the activations, computed per call in O(M·K).

Refs: Intel Intrinsics Guide, ``_mm512_dpbusd_epi32``; LLVM ``llvm.x86.avx512.vpdpbusd.512``;
the same trick in oneDNN and FBGEMM (there with u8 activations, s8 weights, a "compensation"
term of weight sums).

Shape legend: N output columns (weight rows), K reduction length, M activation rows;
panels (N/64, K/4, 64, 4); a tile is mr activation rows × 64 columns.
"""

from __future__ import annotations

import functools
import os

import llvmlite.binding as llvm_binding
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .llvm_loops import I8, I32, I64, broadcast, counted_loop, declare, prefetch


def parse_cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first ``flags`` line of a ``/proc/cpuinfo`` text.

    >>> sorted(parse_cpu_flags("processor : 0\\nflags : fpu avx512_vnni sse2\\n"))
    ['avx512_vnni', 'fpu', 'sse2']
    >>> parse_cpu_flags("no flags line here")
    set()
    """
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports in ``/proc/cpuinfo`` (empty set if unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpu_flags(f.read())
    except OSError:
        return set()


@functools.cache
def has_vnni() -> bool:
    """True when both the CPU (``/proc/cpuinfo``: avx512_vnni) and LLVM's host target
    (``avx512vnni``) offer ``vpdpbusd`` on 512-bit registers.

    LLVM's view is required too: Numba compiles for the host LLVM detects, and an intrinsic the
    target lacks cannot be selected. Where ``/proc/cpuinfo`` is missing, LLVM's view decides.

    A worked example: the family it selects runs and is exact.

    >>> from tinyquant.kernels import int8_matmul
    >>> a, b = np.array([[1, -2, 3]], np.int8), np.array([[-128, 127, 5]], np.int8)
    >>> int8_matmul(a, b, "vnni" if has_vnni() else "portable")
    array([[-367]], dtype=int32)
    """
    llvm_ok = bool(llvm_binding.get_host_cpu_features().get("avx512vnni", False))
    flags = cpu_flags()
    return llvm_ok and (not flags or "avx512_vnni" in flags)


def default_kernels() -> str:
    """The integer-GEMM kernel family to use: ``TINYQUANT_KERNELS`` if set, else by CPU feature.

    ``TINYQUANT_KERNELS=portable`` forces plain Numba loops; ``=vnni`` forces the VNNI kernels
    (a ``ValueError`` if the CPU lacks them).

    >>> import unittest.mock
    >>> with unittest.mock.patch.dict(os.environ, TINYQUANT_KERNELS="Portable "):
    ...     default_kernels()
    'portable'
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


def _make_tile(mr: int):
    """Build an intrinsic ``tile(b_addr, a_addr, lda, k4, c_addr, ldc)`` computing an mr × 64
    block of C = Σ_k u[n, k] · s[m, k] from a weight *panel* (see ``pack_panels``):

        for each group of 4 k:   acc[m, j] += vpdpbusd(panel[k4, 16j:16j+16, 0:4],
                                                       broadcast(s[m, 4k4:4k4+4]))

    One zmm load of the panel holds 4 consecutive k of 16 consecutive output columns — exactly
    the u8 operand of ``vpdpbusd``; the 4 activation bytes are broadcast to all lanes. The
    mr · 4 accumulators are output columns already: no horizontal sums. ``lda``/``ldc`` are
    row strides in bytes, addresses plain integers (``a.ctypes.data``); C is overwritten.
    """
    v16 = ir.VectorType(I32, 16)
    nv = PANEL // 16  # accumulator vectors per activation row

    @intrinsic
    def tile(typingctx, b_addr, a_addr, lda, k4, c_addr, ldc):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            b_v, a_v, lda_v, k4_v, c_v, ldc_v = args
            dp = declare(builder, _VPDPBUSD, v16, [v16, v16, v16])
            bp = builder.inttoptr(b_v, I8.as_pointer())
            ap = builder.inttoptr(a_v, I8.as_pointer())
            cp = builder.inttoptr(c_v, I8.as_pointer())
            a_rows = [builder.gep(ap, [builder.mul(lda_v, I64(m))]) for m in range(mr)]

            def body(k, accs):  # one group of 4 k: mr × 4 vpdpbusd
                b_k = builder.gep(bp, [builder.mul(k, I64(4 * PANEL))])
                for j in range(nv):  # software prefetch of the panel stream (as in unpack_dot)
                    prefetch(builder, b_k, PREFETCH_BYTES + 64 * j)
                b_vecs = []
                for j in range(nv):
                    ptr = builder.bitcast(builder.gep(b_k, [I64(64 * j)]), v16.as_pointer())
                    b_vecs.append(builder.load(ptr, align=4))
                new = []
                for m in range(mr):
                    a_k = builder.gep(a_rows[m], [builder.mul(k, I64(4))])
                    word = builder.load(builder.bitcast(a_k, I32.as_pointer()), align=1)
                    a4 = broadcast(builder, word, v16)  # 4 activation bytes in every lane
                    for j in range(nv):
                        new.append(builder.call(dp, [accs[m * nv + j], b_vecs[j], a4]))
                return new

            fins = counted_loop(builder, k4_v, mr * nv, ir.Constant(v16, None), body, "vnni")
            # store the accumulators: they are C's columns
            for m in range(mr):
                c_row = builder.gep(cp, [builder.mul(ldc_v, I64(m))])
                for j in range(nv):
                    ptr = builder.bitcast(builder.gep(c_row, [I64(64 * j)]), v16.as_pointer())
                    builder.store(fins[m * nv + j], ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def pack_panels(u: np.ndarray) -> np.ndarray:
    """Weights u (N, K) uint8 → panels (N/64, K/4, 64, 4): 64 output columns × 4 consecutive k
    per 256-byte step, the order ``vpdpbusd`` consumes them. N and K are zero-padded up to
    multiples of 64 and 4 (padded k meet zero-padded activations; padded columns are dropped).

    >>> pack_panels(np.arange(8, dtype=np.uint8).reshape(1, 8)).shape
    (1, 2, 64, 4)
    """
    N, K = u.shape
    Np, Kp = -(-N // PANEL) * PANEL, -(-K // 4) * 4
    if (Np, Kp) != (N, K):
        padded = np.zeros((Np, Kp), np.uint8)
        padded[:N, :K] = u
        u = padded
    panels = u.reshape(Np // PANEL, PANEL, Kp // 4, 4).transpose(0, 2, 1, 3)  # (NP, K4, 64, 4)
    return np.ascontiguousarray(panels)


_VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"
PREFETCH_BYTES = 2048  # how far ahead in the panel stream to prefetch

# The tiles the GEMM driver uses: 6 activation rows × 64 columns for the bulk (24 accumulators +
# 4 panel vectors + 1 broadcast = 29 of the 32 zmm registers), and 1 × 64 for the rest.
PANEL = 64
TILE_MR = 6
tile_6 = _make_tile(6)
tile_1 = _make_tile(1)
