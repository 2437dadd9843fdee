"""Randomized Hadamard rotation (incoherence processing): make weights Gaussian before rounding.

For an orthogonal R, a Linear is unchanged when its weight and its input rotate together:

    y = x Wᵀ = (x R)(W R)ᵀ,        R = D·H / √n,   D = diag(±1) random,   H Hᵀ = n·I

W R spreads every outlier of a row over all n columns (a weighted sum of n random-sign terms is
nearly Gaussian), so a few huge weights no longer stretch the quantization grid — the route to
usable 2/3-bit weights. x R is computed online with the fast Walsh–Hadamard transform,
O(n log n): at each of log2(n) stages, pairs (a, b) become (a + b, a − b).

n need not be a power of two: n = m·2^k with a Hadamard matrix of order m in hand uses
H_n = H_m ⊗ H_{2^k} (apply H_{2^k} by the fast transform, then the m×m matrix). We use the
symmetric Paley-II matrix of order 12, so d_ff = 768 = 12·64 gets a true 768×768 Hadamard
(not a block-diagonal patchwork); every H here is symmetric, hence (H/√n)² = I.

For GPTQ the layer Hessian rotates as H_x ← Rᵀ H_x R (the statistics of x R).

Refs: Chee et al. 2023 "QuIP" (incoherence processing); Tseng et al. 2024 "QuIP#" §3 (randomized
Hadamard transform, Kronecker with small Hadamards for non-powers of two); Ashkboos et al. 2024
"QuaRot" (Hadamard rotations of LLaMA, computational invariance); Paley 1933 (construction II).
Shapes: n rotated dimension, O out features, N rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinyquant.quant.checks import check_int, float_array


def _paley2_12() -> np.ndarray:
    """The symmetric Hadamard matrix of order 12 = 2(q + 1), q = 5 (Paley construction II)."""
    q = 5
    chi = np.array([0, 1, -1, -1, 1])  # quadratic character of GF(5): residues {1, 4}
    Q = chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q]  # (5, 5) symmetric Jacobsthal
    C = np.zeros((q + 1, q + 1), np.int64)
    C[0, 1:] = C[1:, 0] = 1
    C[1:, 1:] = Q
    return np.kron(C, [[1, 1], [1, -1]]) + np.kron(
        np.eye(q + 1, dtype=np.int64), [[1, -1], [-1, -1]]
    )


_SMALL = {1: np.ones((1, 1), np.int64), 12: _paley2_12()}


def _split(n: int) -> tuple[int, int]:
    """n = m·2^k with a known Hadamard of order m; returns (m, 2^k)."""
    for m in sorted(_SMALL, reverse=True):
        p = n // m
        if n % m == 0 and p & (p - 1) == 0:
            return m, p
    raise ValueError(
        f"no Hadamard matrix of order {n} here; use n = 2^k or 12·2^k (e.g. 256, 768, 1024)"
    )


def hadamard_transform(x: np.ndarray, normalize: bool = True) -> np.ndarray:
    """x H along the last axis (H symmetric Hadamard of order n), divided by √n if normalized.

    >>> hadamard_transform(np.array([1.0, 0.0, 0.0, 0.0]), normalize=False)
    array([1., 1., 1., 1.])
    >>> x = np.random.default_rng(0).normal(size=(3, 768))
    >>> bool(np.allclose(hadamard_transform(hadamard_transform(x)), x))   # H/√n is involutive
    True
    """
    x = np.asarray(x) if not isinstance(x, str | bytes) else x
    if getattr(x, "dtype", None) is not None and x.dtype.kind in "iu":
        x = x.astype(np.float64)  # integers transform exactly in float64 (as before)
    x = float_array(x, "x", dtype=np.result_type(np.asarray(x).dtype, np.float32))
    n = x.shape[-1]
    m, p = _split(n)
    # |entries| grow up to n·max|x| before the division by √n: scale by an exact power of two
    # when that would overflow (results otherwise unchanged), and refuse a true overflow
    big = np.finfo(x.dtype).max / (2 * n)
    amax = float(np.abs(x).max())
    if amax > big:
        k = int(np.ceil(np.log2(amax / big)))
        y = _transform(np.ldexp(x, -k), m, p, normalize)
        with np.errstate(over="ignore"):
            y = np.ldexp(y, k)
        if not np.isfinite(y).all():
            raise ValueError(
                f"x (max |x| = {amax:g}) transforms to values beyond the {x.dtype} range; "
                "rescale x first"
            )
        return y
    return _transform(x, m, p, normalize)


def _transform(x: np.ndarray, m: int, p: int, normalize: bool) -> np.ndarray:
    """The butterflies of ``hadamard_transform`` on a validated float array x (…, m·p)."""
    n, lead = m * p, x.shape[:-1]
    y = np.array(x).reshape(-1, m, p)  # (N, m, p), a copy
    h = 1
    while h < p:  # fast Walsh–Hadamard on the last axis: log2(p) butterfly stages
        y = y.reshape(-1, m, p // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = np.stack([a + b, a - b], axis=-2).reshape(-1, m, p)
        h *= 2
    if m > 1:  # the small factor: (H_m ⊗ H_p) acting on the (m, p) view
        y = np.einsum("ij,njp->nip", _SMALL[m].astype(y.dtype), y)
    y = y.reshape(*lead, n)
    return y / np.sqrt(n).astype(y.dtype) if normalize else y


def hadamard_matrix(n: int) -> np.ndarray:
    """The n×n symmetric Hadamard matrix the fast transform applies (entries ±1).

    >>> H = hadamard_matrix(12)
    >>> bool(np.array_equal(H @ H.T, 12 * np.eye(12)) and np.array_equal(H, H.T))
    True
    """
    check_int(n, "n", maximum=4096)  # n² entries
    return hadamard_transform(np.eye(n), normalize=False).astype(np.int64)


@dataclass(frozen=True)
class RandomHadamard:
    """R = D·H/√n with seeded random signs D; ``apply`` is x ↦ x R, ``inverse`` is y ↦ y Rᵀ.

    >>> rot = RandomHadamard(64, seed=0)
    >>> x = np.random.default_rng(1).normal(size=(5, 64))
    >>> bool(np.allclose(rot.inverse(rot.apply(x)), x))
    True
    """

    n: int
    seed: int = 0
    signs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_int(self.n, "n (the rotated dimension)", maximum=2**20)
        check_int(self.seed, "seed", minimum=0)
        _split(self.n)  # validates n
        s = np.random.default_rng(self.seed).choice([-1.0, 1.0], size=self.n).astype(np.float32)
        object.__setattr__(self, "signs", s)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x R = (x ⊙ d) H / √n along the last axis."""
        return hadamard_transform(self._check(x) * self.signs)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = float_array(x, "x", dtype=np.asarray(x).dtype)
        if x.shape[-1] != self.n:
            raise ValueError(
                f"x has shape {x.shape} but the rotation is of order {self.n}; its last axis "
                f"must have {self.n} entries"
            )
        return x

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """y Rᵀ = (y H / √n) ⊙ d (H is symmetric)."""
        return hadamard_transform(self._check(y)) * self.signs

    def matrix(self) -> np.ndarray:
        """R (n, n) explicitly (for tests and small demos)."""
        return self.apply(np.eye(self.n))


def rotate_weight(W: np.ndarray, rot: RandomHadamard) -> np.ndarray:
    """W R: each row of W (O, I) rotated like the inputs will be, so (x R)(W R)ᵀ = x Wᵀ.

    >>> rot, W = RandomHadamard(8, 1), np.arange(16.0).reshape(2, 8)
    >>> x = np.ones((1, 8))
    >>> bool(np.allclose(rot.apply(x) @ rotate_weight(W, rot).T, x @ W.T))
    True
    """
    return rot.apply(np.asarray(W, np.float64)).astype(np.float32)  # (O, I) = W R


def rotate_hessian(H: np.ndarray, rot: RandomHadamard) -> np.ndarray:
    """Rᵀ H R: the GPTQ Hessian of the rotated inputs x R (H = 2XᵀX/N → 2(XR)ᵀ(XR)/N).

    >>> rot, H = RandomHadamard(4, 0), np.diag([1.0, 2.0, 3.0, 4.0])
    >>> R = rot.matrix()
    >>> bool(np.allclose(rotate_hessian(H, rot), R.T @ H @ R))
    True
    """
    return rot.apply(rot.apply(np.asarray(H, np.float64)).T)  # (H R)ᵀ R = Rᵀ H R
