"""LLM.int8(): vector-wise int8 matmul with the outlier feature dimensions kept in float.

    O = { j : max_t |X_tj| ≥ threshold }                      outlier input features (per call)
    Y = X_O · Ŵ_Oᵀ  +  s_x ⊙ s_w · (q(X_Ō) q(W_Ō)ᵀ)            float part + int8 part (int32 acc)

Vector-wise: one absmax scale per row of X (token) and per output channel of W (absmax/127).
Only a handful of columns (the emergent outlier features of large LLMs) take the float path;
everything else runs on the int8 GEMM. As in bitsandbytes' inference path (int8 weights only,
``has_fp16_weights=False``), the outlier columns use the int8 weight dequantized — only the
activations of those columns stay in float — so the weight is stored once, in int8.

Refs: Dettmers et al. 2022 "LLM.int8()", §3.1 (vector-wise), §3.2 eq. (6) (decomposition,
threshold α = 6.0); bitsandbytes ``MatMul8bitLt``. The int8 product runs on
``tinyquant.kernels.int8_matmul`` (Numba; exact, so equal to the NumPy reference).
Shapes: T tokens (leading axes flattened), I in features, O out features, K = |O| outliers.
"""

from __future__ import annotations

import numpy as np

from tinyquant.kernels import int8_matmul
from tinyquant.kernels.reference import quantize_per_token


def quantize_weight_rows(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: (codes int8 (O, I), scale float32 (O,) = absmax/127).

    >>> c, s = quantize_weight_rows(np.array([[1.27, -0.5]], np.float32))
    >>> c.tolist(), s.tolist()
    ([[127, -50]], [0.009999999776482582])
    """
    return quantize_per_token(np.asarray(W, np.float32))  # rows of W are W's "tokens"


class Int8OutlierLinear:
    """A Linear y = x Wᵀ run as LLM.int8(): int8 vector-wise with float outlier columns.

    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(8, 16)).astype(np.float32)
    >>> lin = Int8OutlierLinear(W)
    >>> x = rng.normal(size=(3, 16)).astype(np.float32); x[:, 2] = 20.0   # an outlier feature
    >>> y = lin.forward(x)
    >>> lin.last_outliers.tolist(), bool(np.abs(y - x @ W.T).max() < 0.2), lin.nbytes
    ([2], True, 160)
    """

    def __init__(self, W: np.ndarray, threshold: float = 6.0, kernels: str | None = None):
        W = np.asarray(W, np.float32)
        if W.ndim != 2:
            raise ValueError(f"W must be 2-D (out, in), got shape {W.shape}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0 (LLM.int8() uses 6.0), got {threshold}")
        self.codes, self.scale = quantize_weight_rows(W)  # (O, I) int8, (O,) float32
        self.out_features, self.in_features = W.shape
        self.threshold = float(threshold)
        self.kernels = kernels
        self.last_outliers = np.zeros(0, np.int64)  # the outlier columns of the latest call

    @property
    def nbytes(self) -> int:
        """int8 codes + float32 per-channel scales (no float copy of W is kept)."""
        return int(self.codes.nbytes + self.scale.nbytes)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """y (..., O) = float part over the outlier columns + int8 part over the rest."""
        x = np.asarray(x, np.float32)
        lead = x.shape[:-1]
        X = x.reshape(-1, self.in_features)  # (T, I)
        is_out = np.abs(X).max(axis=0, initial=0.0) >= self.threshold  # (I,)
        self.last_outliers = np.flatnonzero(is_out)
        keep = ~is_out
        y = np.zeros((X.shape[0], self.out_features), np.float32)  # (T, O)
        if keep.any():
            Xk = np.ascontiguousarray(X[:, keep])  # (T, I − K)
            qx, sx = quantize_per_token(Xk)  # per-token absmax over the regular columns
            qw = np.ascontiguousarray(self.codes[:, keep])  # (O, I − K)
            acc = int8_matmul(qx, qw, self.kernels)  # (T, O) int32, exact
            y += acc.astype(np.float32) * sx[:, None] * self.scale[None, :]
        if is_out.any():  # X_O (T, K) @ Ŵ_Oᵀ (K, O) in float
            W_out = self.codes[:, is_out].astype(np.float32) * self.scale[:, None]  # (O, K)
            y += X[:, is_out] @ W_out.T
        return y.reshape(*lead, self.out_features)
