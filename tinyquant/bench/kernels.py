"""Kernel benchmarks: integer GEMM, batch-1/8/128 decoding over 7B-shaped blocks, compile time.

Every figure is a ratio against a baseline timed in the same process (median and minimum of
repeats, ``tinyquant.bench.time_it``):

* memory-bandwidth probe — sum of a 1 GiB float32 array (NumPy, one thread; Numba, all threads)
  and a copy; the ceiling for batch-1 decoding;
* GEMM (M, K, N) ∈ {512³, 2048³, 128×4096×11008}: int8 kernels (portable, VNNI; weights packed
  once into the kernel's layout, as a model loads them) vs float32 BLAS and NumPy's int matmul;
* decoding over Llama-2-7B-shaped blocks (d = 4096, d_ff = 11008: q, k, v, o, gate, up, down;
  random weights): FP32 BLAS vs W8A16, W8A8, W4A16, W4A8 and W2A16 (group 128; W2A16 also by
  table lookup, ``kernels/lut2.py``) at batch 1, 8, 128.
  Each format cycles through enough copies of the block that its weights exceed
  ``DECODE_BYTES`` (1.1 GB, more than twice the 480 MiB L3 this machine reports): a benchmark
  that re-reads a cache-resident matrix measures the cache, not DRAM. ``gbps`` = bytes of the
  format's weights (codes + scales) read per second;
* what dequantizing the whole weight per token costs (one 11008 × 4096 matrix, re-read: it fits
  in the L3, so these three rows are cache-speed figures);
* cold import + compile of all kernels, and a warm import from Numba's cache, in subprocesses.

Rows print to stderr as they finish (stdout stays clean for ``--json``). On a shared machine,
``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 tinyquant bench kernels`` gives steadier ratios:
with two threads each parallel kernel call waits for a time slice on the busy core, and the
decode figures then measure the scheduler (every format ≈ the same time per block).
Shape legend: T tokens per step, d model width, F d_ff, M/K/N GEMM sizes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from numba import njit, prange

from tinyquant.bench import time_it

D_MODEL, D_FF, GROUP = 4096, 11008, 128
DECODE_BYTES = 1.1e9
GEMM_SHAPES = [(512, 512, 512), (2048, 2048, 2048), (128, 4096, 11008)]


def _emit(rows: list[dict], row: dict) -> None:
    rows.append(row)
    extra = f"  {row['gbps']:.1f} GB/s" if row.get("gbps") else ""
    if row.get("speedup_vs_numpy_int"):
        extra += f"  ×{row['speedup_vs_numpy_int']:.0f} vs NumPy int matmul"
    sp = ""
    if row.get("baseline"):
        sp = f"  ×{row['speedup']:.2f} (min ×{row['speedup_min']:.2f}) vs {row['baseline']}"
    print(
        f"{row['name']:<28} {str(row['shape']):<24} median {row['seconds'] * 1e3:9.2f} ms  "
        f"min {row['min_seconds'] * 1e3:9.2f} ms{sp}{extra}",
        file=sys.stderr,
        flush=True,
    )


def _row(name, shape, med, best, baseline=None, base=None, nbytes=None, **extra) -> dict:
    row = {"name": name, "shape": list(shape), "seconds": med, "min_seconds": best}
    row["baseline"] = baseline
    row["baseline_seconds"] = base[0] if base else None
    row["speedup"] = base[0] / med if base else None
    row["speedup_min"] = base[1] / best if base else None  # from the minima of the repeats
    row["gbps"] = nbytes / med / 1e9 if nbytes else None
    row.update(extra)
    return row


# ---------------------------------------------------------------------------------------------
# 1) memory bandwidth
# ---------------------------------------------------------------------------------------------
@njit(parallel=True, fastmath=True, cache=True)
def _par_sum(a):  # pragma: no cover - compiled
    s = np.float32(0.0)
    for i in prange(a.size):
        s += a[i]
    return s


def bandwidth(quick: bool, n: int | None = None) -> list[dict]:
    """Read bandwidth (GB/s) of a big float32 array: NumPy sum, Numba parallel sum, copy."""
    rows: list[dict] = []
    if n is None:
        n = (1 << 24) if quick else (1 << 28)  # 64 MiB or 1 GiB
    a = np.ones(n, np.float32)
    b = np.empty_like(a)
    reps = 3 if quick else 5
    med, best = time_it(lambda: a.sum(), repeats=reps)
    _emit(rows, _row("bandwidth_numpy_sum", [n], med, best, nbytes=a.nbytes, threads=1))
    med, best = time_it(lambda: _par_sum(a), repeats=reps)
    _emit(rows, _row("bandwidth_numba_sum", [n], med, best, nbytes=a.nbytes, threads="all"))
    med, best = time_it(lambda: np.copyto(b, a), repeats=reps)
    _emit(rows, _row("bandwidth_copy", [n], med, best, nbytes=2 * a.nbytes, threads=1))
    return rows


# ---------------------------------------------------------------------------------------------
# 2) GEMM
# ---------------------------------------------------------------------------------------------
def gemm(quick: bool, shapes: list[tuple[int, int, int]] | None = None) -> list[dict]:
    """int8 GEMM C = A Bᵀ: portable and VNNI kernels vs fp32 BLAS and NumPy's int matmul."""
    from tinyquant.kernels import has_vnni, int8_matmul_packed, prepack_w8a8

    rows: list[dict] = []
    rng = np.random.default_rng(0)
    if shapes is None:
        shapes = [(256, 256, 256)] if quick else GEMM_SHAPES
    kinds = ["portable"] + (["vnni"] if has_vnni() else [])
    for M, K, N in shapes:
        a = rng.integers(-127, 128, (M, K), dtype=np.int8)
        b = rng.integers(-127, 128, (N, K), dtype=np.int8)
        af, bf = a.astype(np.float32), b.astype(np.float32)
        reps = 3 if quick else 5
        base = time_it(lambda af=af, bf=bf: af @ bf.T, repeats=reps)
        ops = 2.0 * M * K * N
        _emit(rows, _row("gemm_fp32_blas", (M, K, N), *base, gops=ops / base[0] / 1e9))
        big = ops > 2e9  # NumPy's integer matmul runs at a few GOP/s: time it once
        np_int = time_it(lambda a=a, b=b: a.astype(np.int32) @ b.astype(np.int32).T,
                         repeats=1 if big else 3, warmup=0 if big else 1)  # fmt: skip
        _emit(rows, _row("gemm_numpy_int32", (M, K, N), *np_int, "fp32 BLAS", base,
                         gops=ops / np_int[0] / 1e9))  # fmt: skip
        for kind in kinds:  # weights packed once, as a model loads them
            p = prepack_w8a8(b, np.ones(N, np.float32), kind)
            med, best = time_it(lambda a=a, p=p: int8_matmul_packed(a, p), repeats=reps)
            row = _row(f"gemm_int8_{kind}", (M, K, N), med, best, "fp32 BLAS", base,
                       gops=ops / med / 1e9, speedup_vs_numpy_int=np_int[0] / med)  # fmt: skip
            _emit(rows, row)
    return rows


# ---------------------------------------------------------------------------------------------
# 3) decoding over 7B-shaped blocks
# ---------------------------------------------------------------------------------------------
def _block_shapes(d: int, f: int) -> list[tuple[int, int]]:
    """(out, in) of the 7 Linears of a LLaMA block: q, k, v, o, gate, up, down."""
    return [(d, d)] * 4 + [(f, d), (f, d), (d, f)]


def _make_block(fmt: str, d: int, f: int, rng, kernels: str | None = None) -> tuple[list, int]:
    """One block of random weights in ``fmt``'s kernel layout, and its bytes."""
    from tinyquant.kernels import prepack, prepack_w4a8, prepack_w8a8
    from tinyquant.kernels.lut2 import prepack_lut2

    mats, nbytes = [], 0
    for O, I in _block_shapes(d, f):
        if fmt == "fp32":
            m = rng.standard_normal((O, I), dtype=np.float32)
            nbytes += m.nbytes
        elif fmt == "w8a8":
            m = prepack_w8a8(rng.integers(-127, 128, (O, I), dtype=np.int8),
                             rng.random(O, dtype=np.float32), kernels)  # fmt: skip
            nbytes += m.nbytes
        else:
            bits = {"w8a16": 8, "w4a16": 4, "w4a8": 4, "w2a16": 2, "w2a16_lut": 2}[fmt]
            packed = rng.integers(0, 256, (O, I * bits // 8), dtype=np.uint8)
            G = I // GROUP
            scale = rng.random((O, G), dtype=np.float32) * np.float32(0.01)
            zero = rng.integers(0, 1 << bits, (O, G)).astype(np.float32)
            if fmt == "w4a8":
                m = prepack_w4a8(packed, scale, zero, GROUP, bits)
            elif fmt == "w2a16_lut":
                m = prepack_lut2(packed, scale, zero, GROUP)
            else:
                m = prepack(packed, scale, zero, GROUP, bits)
            nbytes += m.nbytes
        mats.append(m)
    return mats, nbytes


def _copy_block(mats: list) -> list:
    """The same weights in new buffers (every array field of a packed weight copied)."""
    from dataclasses import fields, replace

    out = []
    for m in mats:
        if isinstance(m, np.ndarray):
            out.append(m.copy())
        else:
            arrays = {f.name: getattr(m, f.name).copy() for f in fields(m)
                      if isinstance(getattr(m, f.name), np.ndarray)}  # fmt: skip
            out.append(replace(m, **arrays))
    return out


def _step(fmt: str, blocks: list, xd: np.ndarray, xf: np.ndarray, kernels: str | None):
    """One decoding step: every Linear of every block copy (inputs reused: shapes only)."""
    from tinyquant.kernels import packed_linear, w4a8_packed_linear, w8a8_packed_linear
    from tinyquant.kernels.lut2 import lut2_linear_checked

    d = xd.shape[1]
    calls = []
    for mats in blocks:
        for m, (_, I) in zip(mats, _block_shapes(d, xf.shape[1]), strict=True):
            calls.append((m, xd if I == d else xf))

    def run() -> None:
        for m, x in calls:
            if fmt == "fp32":
                x @ m.T
            elif fmt == "w8a8":
                w8a8_packed_linear(x, m, kernels)
            elif fmt == "w4a8":
                w4a8_packed_linear(x, m)
            elif fmt == "w2a16_lut":
                lut2_linear_checked(x, m)  # x: finite float32 from the benchmark
            else:
                packed_linear(x, m)

    return run


def decode(
    quick: bool,
    d: int | None = None,
    f: int | None = None,
    target: float | None = None,
    batches: list[int] | None = None,
) -> list[dict]:
    """FP32 BLAS vs W8A16, W8A8, W4A16, W4A8, W2A16 (unpacking and table lookup) on 7B-shaped
    blocks at batch 1, 8, 128.

    ``d``, ``f`` (block widths), ``target`` (bytes of weights per format) and ``batches``
    override the defaults (notebook 05 runs a reduced block).
    """
    from tinyquant.kernels import has_vnni
    from tinyquant.kernels.lut2 import MAX_TOKENS, lut2_fits

    rows: list[dict] = []
    rng = np.random.default_rng(0)
    d = d or (1024 if quick else D_MODEL)
    f = f or (2816 if quick else D_FF)
    target = target or (0.1e9 if quick else DECODE_BYTES)
    batches = batches or ([1, 8] if quick else [1, 8, 128])
    formats = [("fp32", None), ("w8a16", None), ("w8a8", "portable")]
    if has_vnni():
        formats.append(("w8a8", "vnni"))
    formats += [("w4a16", None)]
    formats += [("w4a8", None)] if has_vnni() else []
    formats += [("w2a16", None)]
    formats += [("w2a16_lut", None)] if lut2_fits(d, GROUP) and lut2_fits(f, GROUP) else []
    base: dict[int, tuple[float, float]] = {}
    for fmt, kernels in formats:
        blocks = None  # keep one format's weights in memory at a time
        one, nbytes = _make_block(fmt, d, f, rng, kernels)
        n_copies = max(1, math.ceil(target / nbytes))
        blocks = [one] + [_copy_block(one) for _ in range(n_copies - 1)]
        name = fmt if kernels is None else f"{fmt}_{kernels}"
        for T in batches:
            if fmt == "w2a16_lut" and T > MAX_TOKENS:
                continue  # the lookup kernel is for decoding; prefill takes the W2A16 path
            use = blocks if T <= 8 else blocks[:2]  # many tokens: compute-bound, 2 copies suffice
            xd = rng.standard_normal((T, d), dtype=np.float32)
            xf = rng.standard_normal((T, f), dtype=np.float32)
            reps = 3 if (quick or T > 8) else 15  # min of many: robust to a shared machine
            med, best = time_it(_step(fmt, use, xd, xf, kernels), repeats=reps)
            med, best = med / len(use), best / len(use)  # seconds per block
            if fmt == "fp32":
                base[T] = (med, best)
            row = _row(f"decode_{name}", (T, d, f), med, best,
                       None if fmt == "fp32" else "fp32 BLAS", None if fmt == "fp32" else base[T],
                       nbytes=nbytes if T <= 8 else None,
                       block_bytes=nbytes, copies=len(use), block_tokens_per_s=T / med,
                       tokens_per_s_32_blocks=T / (32 * med))  # fmt: skip
            _emit(rows, row)
    return rows


def dequant_then_matmul(quick: bool, O: int | None = None, I: int | None = None) -> list[dict]:
    """What "dequantize the whole weight, then BLAS" costs per token, vs the fused W4A16 kernel."""
    from tinyquant.kernels import dequantize_packed_t, packed_linear, prepack

    rows: list[dict] = []
    rng = np.random.default_rng(1)
    O = O or (2816 if quick else D_FF)
    I = I or (1024 if quick else D_MODEL)
    packed = rng.integers(0, 256, (O, I // 2), dtype=np.uint8)
    scale = rng.random((O, I // GROUP), dtype=np.float32)
    zero = np.full((O, I // GROUP), 8, np.float32)
    pw = prepack(packed, scale, zero, GROUP, 4)
    x = rng.standard_normal((1, I), dtype=np.float32)
    w = np.ascontiguousarray(dequantize_packed_t(pw)[:, :O].T)  # (O, I) float32
    base = time_it(lambda: x @ w.T, repeats=7)
    _emit(rows, _row("gemv_fp32_blas", (1, I, O), *base, nbytes=w.nbytes))
    med, best = time_it(lambda: x @ dequantize_packed_t(pw), repeats=5)
    _emit(rows, _row("w4a16_dequant_then_blas", (1, I, O), med, best, "fp32 BLAS", base))
    med, best = time_it(lambda: packed_linear(x, pw), repeats=7)
    _emit(rows, _row("w4a16_fused", (1, I, O), med, best, "fp32 BLAS", base, nbytes=pw.nbytes))
    return rows


# ---------------------------------------------------------------------------------------------
# 4) compile time
# ---------------------------------------------------------------------------------------------
_TOUCH = """
import time
t0 = time.perf_counter()
import numpy as np
import tinyquant.kernels as k
from tinyquant.bench.kernels import touch_all_kernels
t1 = time.perf_counter()
touch_all_kernels()
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def touch_all_kernels() -> None:
    """Run every kernel once on tiny inputs (compiles it, or loads it from the cache)."""
    from tinyquant import kernels as k

    rng = np.random.default_rng(0)
    a = rng.integers(-127, 128, (5, 70), dtype=np.int8)
    k.int8_matmul(a, a, "portable")
    if k.has_vnni():
        k.int8_matmul(a, a, "vnni")
    x = rng.standard_normal((20, 128), dtype=np.float32)
    s = np.ones((3, 1), np.float32)
    for bits in (8, 4, 2):
        p = np.zeros((3, 128 * bits // 8), np.uint8)
        k.weight_only_linear(x[:5], p, s, s, 128, bits)  # fused kernel
    k.weight_only_linear(x, np.zeros((3, 64), np.uint8), s, s, 128, 4)  # dequantize + BLAS
    _par_sum(np.ones(8, np.float32))


def compile_times(quick: bool) -> list[dict]:
    """Cold import + compile of all kernels (fresh Numba cache), then a warm import (cached)."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        for label in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", _TOUCH], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
            t_import, t_compile = float(out[-2]), float(out[-1])
            total = t_import + t_compile
            _emit(rows, _row(f"import_and_compile_{label}", [], total, total,
                             import_seconds=t_import, compile_seconds=t_compile))  # fmt: skip
    return rows


def run(quick: bool, threads: int | None = None) -> list[dict]:
    """All kernel benchmarks; ``quick`` shrinks shapes and repeats to a smoke test.

    ``threads`` sets Numba's thread count (default: all cores). The float32 baseline is
    OpenBLAS's, whose threads only ``OPENBLAS_NUM_THREADS`` sets, before Python starts: for a
    one-thread table run ``OPENBLAS_NUM_THREADS=1 tinyquant bench kernels --threads 1``.
    """
    import numba

    from tinyquant.kernels import default_kernels

    if threads is not None:
        numba.set_num_threads(threads)
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "all cores")
    print(f"# kernels: default {default_kernels()}; Numba threads {numba.get_num_threads()}, "
          f"OpenBLAS threads {blas}", file=sys.stderr, flush=True)  # fmt: skip
    rows: list[dict] = []
    rows += compile_times(quick)
    rows += bandwidth(quick)
    rows += gemm(quick)
    rows += dequant_then_matmul(quick)
    rows += decode(quick)
    for r in rows:
        r.setdefault("numba_threads", numba.get_num_threads())
        r.setdefault("openblas_threads", blas)
    return rows


if __name__ == "__main__":  # python -m tinyquant.bench.kernels [--quick]
    print(json.dumps(run("--quick" in sys.argv), indent=1))
