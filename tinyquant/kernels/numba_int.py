"""Integer GEMM and W8A8 linear in Numba: the same signatures as ``reference``, exact int32.

Both kernel families compute the u8 × s8 form (see ``vnni`` for the trick):

    raw[m, n] = Σ_k u[n, k] · s[m, k],   u = w + 128 (uint8 weights),  s int8 activations
    C[m, n]   = raw[m, n] − 128 · Σ_k s[m, k]                                (exact)

* ``portable``: plain Numba loops over a 4 × 4 register tile with int32 accumulators; LLVM
  vectorizes the k loop with 16-bit multiply-adds (``vpmaddwd``/``vpdpwssd``) — any CPU.
* ``vnni``: weights in 64-column panels, 6 × 64 tiles with the loop body written in LLVM IR
  around ``vpdpbusd`` (64 u8 × s8 multiply-adds per instruction) — AVX512-VNNI CPUs only.

``kernels=None`` picks ``vnni.default_kernels()`` (CPU feature, overridable with the
``TINYQUANT_KERNELS`` environment variable); pass "portable" or "vnni" to force one.

W8A8 stores its int8 weights as u = q_w + 128 — exactly the unsigned codes a symmetric int8
QTensor holds — in the chosen kernel's layout, once (``prepack_w8a8``); the activation codes
come from ``act_int8.quantize_rows``, the one-pass twin of ``reference.quantize_per_token``
(tested bit for bit), so both paths see identical integers.

Loop order: output columns in slabs (portable: 128 weight rows; VNNI: one 64-column panel,
64·K bytes, L2-resident) split across threads; inside a slab, a register tile (portable 4 × 4
dot products; VNNI 6 rows × 64 columns), K innermost.
Refs: Goto & van de Geijn 2008 (register/cache blocking); Jacob et al. 2018 (integer-only
inference, int32 accumulation); Xiao et al. 2023 "SmoothQuant" (W8A8 scales).
Shape legend: M activation rows (tokens T), N weight rows (out features O), K in features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from .act_int8 import quantize_rows
from .checks import (
    check_activations,
    check_array,
    check_buffer,
    check_int8_operands,
    check_k,
    check_size,
    check_w8a8,
)
from .reference import scale_accumulator
from .threads import threads_for
from .vnni import PANEL, check_kernels, default_kernels, pack_panels, tile_1, tile_6

__all__ = [
    "int8_matmul",
    "int8_matmul_packed",
    "matmul_u8s8",
    "PackedW8A8",
    "prepack_w8a8",
    "pack_w8a8_u8",
    "w8a8_linear",
    "w8a8_packed_linear",
]

_SLAB = 128  # weight rows per parallel work item (128 · K bytes: L2-resident)


# ---------------------------------------------------------------------------------------------
# portable: plain loops
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _dot_u8s8(u, s):  # pragma: no cover - compiled
    acc = np.int32(0)
    for k in range(u.size):
        acc = np.int32(acc + np.int32(u[k]) * np.int32(s[k]))
    return acc


@njit(parallel=True, cache=True)
def _raw_portable(s, u, c):  # pragma: no cover - compiled
    """c[m, n] = Σ_k u[n, k] · s[m, k] (int32) with plain loops."""
    M, K = s.shape
    N = u.shape[0]
    n_slabs = (N + _SLAB - 1) // _SLAB
    for sl in prange(n_slabs):
        n0 = sl * _SLAB
        n1 = min(N, n0 + _SLAB)
        m = 0
        while m + 4 <= M:
            s0, s1, s2, s3 = s[m], s[m + 1], s[m + 2], s[m + 3]
            n = n0
            while n + 4 <= n1:
                u0, u1, u2, u3 = u[n], u[n + 1], u[n + 2], u[n + 3]
                c00 = c01 = c02 = c03 = np.int32(0)
                c10 = c11 = c12 = c13 = np.int32(0)
                c20 = c21 = c22 = c23 = np.int32(0)
                c30 = c31 = c32 = c33 = np.int32(0)
                for k in range(K):
                    a0, a1 = np.int32(s0[k]), np.int32(s1[k])
                    a2, a3 = np.int32(s2[k]), np.int32(s3[k])
                    b0, b1 = np.int32(u0[k]), np.int32(u1[k])
                    b2, b3 = np.int32(u2[k]), np.int32(u3[k])
                    c00 = np.int32(c00 + a0 * b0)
                    c01 = np.int32(c01 + a0 * b1)
                    c02 = np.int32(c02 + a0 * b2)
                    c03 = np.int32(c03 + a0 * b3)
                    c10 = np.int32(c10 + a1 * b0)
                    c11 = np.int32(c11 + a1 * b1)
                    c12 = np.int32(c12 + a1 * b2)
                    c13 = np.int32(c13 + a1 * b3)
                    c20 = np.int32(c20 + a2 * b0)
                    c21 = np.int32(c21 + a2 * b1)
                    c22 = np.int32(c22 + a2 * b2)
                    c23 = np.int32(c23 + a2 * b3)
                    c30 = np.int32(c30 + a3 * b0)
                    c31 = np.int32(c31 + a3 * b1)
                    c32 = np.int32(c32 + a3 * b2)
                    c33 = np.int32(c33 + a3 * b3)
                c[m, n], c[m, n + 1], c[m, n + 2], c[m, n + 3] = c00, c01, c02, c03
                c[m + 1, n], c[m + 1, n + 1], c[m + 1, n + 2], c[m + 1, n + 3] = c10, c11, c12, c13
                c[m + 2, n], c[m + 2, n + 1], c[m + 2, n + 2], c[m + 2, n + 3] = c20, c21, c22, c23
                c[m + 3, n], c[m + 3, n + 1], c[m + 3, n + 2], c[m + 3, n + 3] = c30, c31, c32, c33
                n += 4
            for nn in range(n, n1):  # edge columns
                for mm in range(m, m + 4):
                    c[mm, nn] = _dot_u8s8(u[nn], s[mm])
            m += 4
        for mm in range(m, M):  # edge rows (all of them when M < 4: the GEMV case)
            srow = s[mm]
            n = n0
            while n + 4 <= n1:
                u0, u1, u2, u3 = u[n], u[n + 1], u[n + 2], u[n + 3]
                c0 = c1 = c2 = c3 = np.int32(0)
                for k in range(K):
                    a = np.int32(srow[k])
                    c0 = np.int32(c0 + a * np.int32(u0[k]))
                    c1 = np.int32(c1 + a * np.int32(u1[k]))
                    c2 = np.int32(c2 + a * np.int32(u2[k]))
                    c3 = np.int32(c3 + a * np.int32(u3[k]))
                c[mm, n], c[mm, n + 1], c[mm, n + 2], c[mm, n + 3] = c0, c1, c2, c3
                n += 4
            for nn in range(n, n1):
                c[mm, nn] = _dot_u8s8(u[nn], srow)


# ---------------------------------------------------------------------------------------------
# vnni: the same tiles, body in LLVM IR around vpdpbusd
# ---------------------------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def _raw_vnni(s, panels, c):  # pragma: no cover - compiled
    """c[m, n] = Σ_k u[n, k] · s[m, k] (int32) from weight panels (NP, K/4, 64, 4); s (M, 4·K/4)
    and c (M, 64·NP) are padded to the panels' sizes."""
    M, K = s.shape
    NP, K4 = panels.shape[0], panels.shape[1]
    ldc = c.shape[1] * 4
    for p in prange(NP):
        b = panels.ctypes.data + p * K4 * 4 * PANEL
        m = 0
        while m < M:
            a = s.ctypes.data + m * K
            cc = c.ctypes.data + m * ldc + p * PANEL * 4
            if M - m >= 6:
                tile_6(b, a, K, K4, cc, ldc)
                m += 6
            else:
                tile_1(b, a, K, K4, cc, ldc)
                m += 1


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def _vnni_u8s8(s: np.ndarray, panels: np.ndarray, n: int) -> np.ndarray:
    """Raw Σ_k u[n, k] · s[m, k] for the first n columns, from panels (no −128 correction)."""
    M, K = s.shape
    K4 = panels.shape[1]
    if 4 * K4 != K:  # zero-pad the activations to the panels' K
        padded = np.zeros((M, 4 * K4), np.int8)
        padded[:, :K] = s
        s = padded
    c = np.empty((M, panels.shape[0] * PANEL), np.int32)
    if M:
        _raw_vnni(s, panels, c)
    return c[:, :n]


def matmul_u8s8(s: np.ndarray, u: np.ndarray, kernels: str | None = None) -> np.ndarray:
    """C[m, n] = Σ_k (u[n, k] − 128) · s[m, k], int32 (M, N).

    ``s`` int8 (M, K) activations, ``u`` uint8 (N, K) weights stored with the +128 offset.

    >>> s = np.array([[1, -1]], np.int8); u = np.array([[128 + 5, 128 - 3]], np.uint8)
    >>> matmul_u8s8(s, u, "portable")
    array([[8]], dtype=int32)
    """
    check_array(s, "s", np.int8, 2)
    check_array(u, "u", np.uint8, 2)
    check_int8_operands(s, u.view(np.int8))
    kind = default_kernels() if kernels is None else check_kernels(kernels)
    M, N = s.shape[0], u.shape[0]
    if kind == "vnni":
        c = np.ascontiguousarray(_vnni_u8s8(s, pack_panels(u), N))
    else:
        c = np.empty((M, N), np.int32)
        if M and N:
            _raw_portable(s, u, c)
    row_sum = s.sum(axis=1, dtype=np.int32)  # (M,)
    c -= np.int32(128) * row_sum[:, None]
    return c


def int8_matmul(a: np.ndarray, b: np.ndarray, kernels: str | None = None) -> np.ndarray:
    """C = A Bᵀ, int8 (M, K) × int8 (N, K) → int32 (M, N); ``array_equal`` to the reference.

    >>> a = np.array([[1, -2, 3]], dtype=np.int8); b = np.array([[4, 5, 6], [-1, 0, 1]], np.int8)
    >>> int8_matmul(a, b, "portable")
    array([[12,  2]], dtype=int32)
    """
    check_int8_operands(a, b)
    u = b.view(np.uint8) ^ np.uint8(0x80)  # b + 128 as uint8 (two's complement)
    return matmul_u8s8(a, u, kernels)


@dataclass(frozen=True, eq=False)
class PackedW8A8:
    """W8A8 weight in a kernel's layout, made once by ``prepack_w8a8``.

    ``kernels="portable"``: u = q_w + 128 as rows (O, I); ``kernels="vnni"``: the same bytes as
    panels (O/64, I/4, 64, 4) (``vnni.pack_panels``). ``scale`` is s_w (O,) float32.

    >>> p = prepack_w8a8(np.array([[-128, 0, 127]], np.int8), np.ones(1, np.float32), "portable")
    >>> p.u, p.nbytes
    (array([[  0, 128, 255]], dtype=uint8), 7)
    """

    kernels: str  # "portable" | "vnni": which layout ``u`` is in
    u: np.ndarray  # (O, I) uint8 rows, or (O/64, I/4, 64, 4) uint8 panels
    scale: np.ndarray  # (O,) float32
    out_features: int  # O
    in_features: int  # I

    def __post_init__(self):
        self.check_layout("PackedW8A8")
        if not np.all(np.isfinite(self.scale)):
            raise ValueError("PackedW8A8.scale contains NaN or Inf; re-quantize the weight")

    def check_layout(self, name: str = "p") -> None:
        """Sizes, dtypes and contiguity of ``u`` and ``scale`` agree with the size fields (O(1))."""
        if self.kernels not in ("portable", "vnni"):
            raise ValueError(f"{name}.kernels must be 'portable' or 'vnni', got {self.kernels!r}")
        O = check_size(self.out_features, f"{name}.out_features", minimum=0)
        I = check_size(self.in_features, f"{name}.in_features")
        check_k(I)
        what = f"{O} × {I} weights in the {self.kernels} layout"
        if self.kernels == "vnni":
            shape: tuple[int, ...] = (-(-O // PANEL), -(-I // 4), PANEL, 4)
        else:
            shape = (O, I)
        check_buffer(self.u, f"{name}.u", np.uint8, shape, what)
        check_buffer(self.scale, f"{name}.scale", np.float32, (O,), f"{O} output channels")

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads per token: O · I codes + O scales (padding excluded)."""
        return int(self.out_features * self.in_features + self.scale.nbytes)

    def rows(self) -> np.ndarray:
        """u as rows (O, I), whatever the layout."""
        if self.kernels == "portable":
            return self.u
        NP, K4 = self.u.shape[:2]
        rows = self.u.transpose(0, 2, 1, 3).reshape(NP * PANEL, K4 * 4)
        return np.ascontiguousarray(rows[: self.out_features, : self.in_features])


def prepack_w8a8(
    w_codes: np.ndarray, w_scale: np.ndarray, kernels: str | None = None
) -> PackedW8A8:
    """int8 codes (O, I) + scale (O,) → ``PackedW8A8`` for ``kernels`` (default: this CPU's).

    >>> prepack_w8a8(np.zeros((2, 4), np.int8), np.ones(2, np.float32), "portable").u.shape
    (2, 4)
    """
    check_w8a8(np.zeros((1, w_codes.shape[1]), np.float32), w_codes, w_scale)
    return pack_w8a8_u8(w_codes.view(np.uint8) ^ np.uint8(0x80), w_scale, kernels)


def pack_w8a8_u8(u: np.ndarray, w_scale: np.ndarray, kernels: str | None = None) -> PackedW8A8:
    """Like ``prepack_w8a8`` from codes already offset, u = q_w + 128 (a signed int8 QTensor's
    stored codes).

    >>> pack_w8a8_u8(np.full((3, 8), 128, np.uint8), np.ones(3, np.float32), "portable").nbytes
    36
    """
    check_array(u, "u", np.uint8, 2)
    check_w8a8(np.zeros((1, u.shape[1]), np.float32), u.view(np.int8), w_scale)
    kind = default_kernels() if kernels is None else check_kernels(kernels)
    data = pack_panels(u) if kind == "vnni" else np.ascontiguousarray(u)
    return PackedW8A8(kind, data, w_scale.astype(np.float32), u.shape[0], u.shape[1])


def int8_matmul_packed(a: np.ndarray, p: PackedW8A8) -> np.ndarray:
    """C = A Bᵀ (int32) for int8 A (M, K) and a B prepacked once by ``prepack_w8a8`` (its scale
    is ignored): the GEMM as a model runs it, weights already in the kernel's layout.

    >>> p = prepack_w8a8(np.array([[4, 5, 6], [-1, 0, 1]], np.int8), np.ones(2, np.float32))
    >>> int8_matmul_packed(np.array([[1, -2, 3]], dtype=np.int8), p)
    array([[12,  2]], dtype=int32)
    """
    _check_packed(p)
    check_array(a, "a", np.int8, 2)
    if a.shape[1] != p.in_features:
        raise ValueError(f"a has K = {a.shape[1]} columns but the weight has {p.in_features}")
    if check_kernels(p.kernels) == "vnni":
        c = _vnni_u8s8(a, p.u, p.out_features)
        return c - np.int32(128) * a.sum(axis=1, dtype=np.int32)[:, None]
    return matmul_u8s8(a, p.u, "portable")


def w8a8_packed_linear(x: np.ndarray, p: PackedW8A8, kernels: str | None = None) -> np.ndarray:
    """y = s_x · s_w · (q_x q_wᵀ) for a prepacked weight; bit-identical to the reference.

    ``kernels`` other than the one ``p`` was packed for converts the layout on the fly (slow).

    >>> p = prepack_w8a8(np.array([[127, 0], [0, 127]], np.int8), np.full(2, 1 / 127, np.float32))
    >>> w8a8_packed_linear(np.array([[1.27, -0.5]], np.float32), p)
    array([[ 1.27, -0.5 ]], dtype=float32)
    """
    _check_packed(p)
    check_activations(x)
    if x.shape[1] != p.in_features:
        raise ValueError(f"x has {x.shape[1]} features but the weight expects {p.in_features}")
    return w8a8_packed_linear_checked(
        x, p, check_kernels(p.kernels if kernels is None else kernels)
    )


def w8a8_packed_linear_checked(x: np.ndarray, p: PackedW8A8, kind: str) -> np.ndarray:
    """``w8a8_packed_linear`` for a caller that validated x (finite float32 (T, I), C-contiguous),
    built ``p`` itself and names a valid kernel family ``kind`` (a ``QuantLinear``)."""
    if x.shape[0] == 0:  # no tokens: nothing to compute
        return np.zeros((0, p.out_features), np.float32)
    # the reference's codes (quant.activations), computed in one pass by its twin
    q, s, rsum = quantize_rows(x, x.shape[1])  # (T, I) int8, (T,) float32, (T, 1) Σ q
    with threads_for(x.shape[0] * p.in_features * p.out_features):  # small: one thread
        if kind == "vnni" and p.kernels == "vnni":
            acc = _vnni_u8s8(q, p.u, p.out_features)  # (T, O) raw Σ u·q
            acc = acc - np.int32(128) * rsum
        else:
            acc = matmul_u8s8(q, p.rows(), kind)  # (T, O) int32, exact
    return scale_accumulator(acc, s, p.scale)  # the reference's own function


def _check_packed(p) -> None:
    if not isinstance(p, PackedW8A8):
        raise ValueError(f"p must be a PackedW8A8 from prepack_w8a8(), got {type(p).__name__}")
    p.check_layout("p")


def w8a8_linear(
    x: np.ndarray, w_codes: np.ndarray, w_scale: np.ndarray, kernels: str | None = None
) -> np.ndarray:
    """Same signature as ``reference.w8a8_linear`` (plus ``kernels``); prepacks per call.

    >>> x = np.array([[1.27, -0.5]], dtype=np.float32)
    >>> w = np.array([[127, 0], [0, 127]], dtype=np.int8); s = np.full(2, 1 / 127, np.float32)
    >>> w8a8_linear(x, w, s, "portable")
    array([[ 1.27, -0.5 ]], dtype=float32)
    """
    check_w8a8(x, w_codes, w_scale)
    return w8a8_packed_linear(x, prepack_w8a8(w_codes, w_scale, kernels), kernels)
