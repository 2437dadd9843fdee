"""The Linears built around a weight: int activations in front, a rotation around, outliers beside.

    ActQuantLinear     y = Q_a(x) · Ŵᵀ              Q_a per token / per tensor, dynamic or static
    RotatedLinear      y = (x R) · Ŵ'ᵀ              Ŵ' = Q(W R), R = D·H/√n (randomized Hadamard)
    Int8OutlierLinear  y = X_O Ŵ_Oᵀ + s_x s_wᵀ ⊙ (q(X_Ō) q(W_Ō)ᵀ)    LLM.int8()'s decomposition

Each satisfies the Linear protocol (protocol.py). Refs: Xiao et al. 2022 "SmoothQuant" §4
(O1–O3); Tseng et al. 2024 "QuIP#" §3; Dettmers et al. 2022 "LLM.int8()" §3.2 eq. (6) and
bitsandbytes ``MatMul8bitLt`` (int8 weights only: the outlier columns use the int8 weight
dequantized, only their activations stay float).
Shape legend: T tokens (leading axes flattened), I in features, O out features, K outliers.
"""

from __future__ import annotations

import numpy as np

from tinyquant.algos.rotate import RandomHadamard
from tinyquant.kernels import int8_matmul
from tinyquant.quant import MXTensor, fake_quantize_activations, quantize_activations

from .protocol import (
    QLinear,
    check_input,
    check_path,
    exact_int_matmul,
    linear_from_state,
    register,
)

__all__ = ["ActQuantLinear", "RotatedLinear", "Int8OutlierLinear", "MXLinear"]


@register
class ActQuantLinear:
    """Int8 activations in front of a weight-quantized Linear (SmoothQuant's O1/O2/O3).

    x̂ = s · clamp(round(x / s), −127, 127), s = amax / 127 with amax taken per token of this
    batch (O1), over the whole batch (O2), or frozen from calibration (``static_amax``, O3).

    >>> from tinyquant.linears.quant_linear import QuantLinear
    >>> inner = QuantLinear.from_weight(np.eye(4, dtype=np.float32), "int8", None)
    >>> lin = ActQuantLinear(inner, "per_tensor", static_amax=127.0)   # s = 1: x rounds to ints
    >>> lin.forward(np.float32([[0.4, 2.6, 0, 0]]))
    array([[0., 3., 0., 0.]], dtype=float32)
    """

    def __init__(self, inner: QLinear, granularity: str, static_amax: float | None = None):
        if static_amax is not None and not (np.isfinite(static_amax) and static_amax > 0):
            raise ValueError(f"a static activation amax must be finite and > 0, got {static_amax}")
        self.inner, self.granularity, self.static_amax = inner, granularity, static_amax
        self.in_features, self.out_features = inner.in_features, inner.out_features

    @property
    def nbytes(self) -> int:
        return int(self.inner.nbytes + (4 if self.static_amax is not None else 0))

    @property
    def path(self) -> str:
        return "fake"

    @property
    def has_int_kernel(self) -> bool:
        return False  # only the per-token W8A8 case has a kernel, and QuantLinear runs it

    def with_path(self, path: str) -> ActQuantLinear:
        check_path(path, False, "per-tensor int8 activations")
        return self

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.in_features)
        x_hat = fake_quantize_activations(x, self.granularity, amax=self.static_amax)  # (…, I)
        return self.inner.forward(x_hat)

    def to_state(self, prefix: str = "") -> tuple[dict, dict]:
        arrays, inner = self.inner.to_state(prefix + "inner.")
        meta = {"type": "ActQuantLinear", "granularity": self.granularity,
                "static_amax": self.static_amax, "inner": inner}  # fmt: skip
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict, meta: dict, prefix: str = "") -> ActQuantLinear:
        inner = linear_from_state(arrays, meta["inner"], prefix + "inner.")
        return cls(inner, meta["granularity"], meta["static_amax"])


@register
class RotatedLinear:
    """y = linear(x R, W') with W' the quantized W R: a Linear quantized in rotated space.

    >>> from tinyquant.algos.rotate import rotate_weight
    >>> rot = RandomHadamard(16, 0)
    >>> W = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    >>> lin = RotatedLinear(rot, rotate_weight(W, rot))
    >>> x = np.ones((2, 16), np.float32)
    >>> bool(np.allclose(lin.forward(x), x @ W.T, atol=1e-5)), lin.in_features, lin.out_features
    (True, 16, 4)
    """

    def __init__(self, rot: RandomHadamard, inner) -> None:
        self.rot, self.inner = rot, inner
        shape = inner.shape if isinstance(inner, np.ndarray) else (inner.out_features,
                                                                   inner.in_features)  # fmt: skip
        self.out_features, self.in_features = int(shape[0]), int(shape[1])
        if self.in_features != rot.n:
            raise ValueError(f"rotation of size {rot.n} != in_features {self.in_features}")

    @property
    def nbytes(self) -> int:
        """The inner weight's bytes plus one sign bit per rotated dimension."""
        return int(self.inner.nbytes + (self.rot.n + 7) // 8)

    @property
    def path(self) -> str:
        return "fake" if isinstance(self.inner, np.ndarray) else self.inner.path

    @property
    def has_int_kernel(self) -> bool:
        return not isinstance(self.inner, np.ndarray) and self.inner.has_int_kernel

    def with_path(self, path: str) -> RotatedLinear:
        check_path(path, self.has_int_kernel, "this rotated weight")
        inner = self.inner if isinstance(self.inner, np.ndarray) else self.inner.with_path(path)
        return RotatedLinear(self.rot, inner)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.in_features)
        xr = self.rot.apply(x).astype(np.float32)  # (…, I) x R
        y = xr @ self.inner.T if isinstance(self.inner, np.ndarray) else self.inner.forward(xr)
        return y.astype(np.float32)

    def to_state(self, prefix: str = "") -> tuple[dict, dict]:
        arrays, inner = self.inner.to_state(prefix + "inner.")
        return arrays, {"type": "RotatedLinear", "n": self.rot.n, "seed": self.rot.seed,
                        "inner": inner}  # fmt: skip

    @classmethod
    def from_state(cls, arrays: dict, meta: dict, prefix: str = "") -> RotatedLinear:
        inner = linear_from_state(arrays, meta["inner"], prefix + "inner.")
        return cls(RandomHadamard(int(meta["n"]), int(meta["seed"])), inner)


@register
class Int8OutlierLinear:
    """A Linear y = x Wᵀ run as LLM.int8(): int8 vector-wise with float outlier columns.

    O = { j : max_t |X_tj| ≥ threshold } is found per call; only those columns' activations stay
    float (against the int8 weight dequantized); the rest run the int8 matmul (int32 sums,
    exact — so the fake path's float sum and the int path's kernel agree to the bit).

    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(8, 16)).astype(np.float32)
    >>> lin = Int8OutlierLinear.from_weight(W)
    >>> x = rng.normal(size=(3, 16)).astype(np.float32); x[:, 2] = 20.0   # an outlier feature
    >>> y = lin.forward(x)
    >>> lin.last_outliers.tolist(), bool(np.abs(y - x @ W.T).max() < 0.2), lin.nbytes
    ([2], True, 160)
    """

    def __init__(self, codes: np.ndarray, scale: np.ndarray, threshold: float = 6.0,
                 path: str = "fake", kernels: str | None = None) -> None:  # fmt: skip
        codes, scale = np.asarray(codes), np.asarray(scale)
        if codes.dtype != np.int8 or codes.ndim != 2:
            raise ValueError(f"codes must be int8 (O, I), got {codes.dtype} {codes.shape}")
        if scale.dtype != np.float32 or scale.shape != codes.shape[:1]:
            raise ValueError(f"scale must be float32 ({codes.shape[0]},), got {scale.shape}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0 (LLM.int8() uses 6.0), got {threshold}")
        self.codes, self.scale = codes, scale  # (O, I) int8, (O,) float32
        self.out_features, self.in_features = codes.shape
        self.threshold, self.kernels = float(threshold), kernels
        self._path = check_path(path, True, "int8 weights")
        self.last_outliers = np.zeros(0, np.int64)  # the outlier columns of the latest call

    @classmethod
    def from_weight(cls, W: np.ndarray, threshold: float = 6.0) -> Int8OutlierLinear:
        """Symmetric int8 per output channel (absmax/127): W's rows quantized like tokens."""
        W = np.asarray(W, np.float32)
        if W.ndim != 2:
            raise ValueError(f"W must be 2-D (out, in), got shape {W.shape}")
        codes, scale = quantize_activations(W, "per_token")
        return cls(codes, scale, threshold)

    @property
    def nbytes(self) -> int:
        """int8 codes + float32 per-channel scales (no float copy of W is kept)."""
        return int(self.codes.nbytes + self.scale.nbytes)

    @property
    def path(self) -> str:
        return self._path

    @property
    def has_int_kernel(self) -> bool:
        return True

    def with_path(self, path: str) -> Int8OutlierLinear:
        return Int8OutlierLinear(self.codes, self.scale, self.threshold, path, self.kernels)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """y (..., O) = float part over the outlier columns + int8 part over the rest."""
        x = check_input(x, self.in_features)
        lead = x.shape[:-1]
        X = x.reshape(-1, self.in_features)  # (T, I)
        is_out = np.abs(X).max(axis=0, initial=0.0) >= self.threshold  # (I,)
        self.last_outliers = np.flatnonzero(is_out)
        keep = ~is_out
        y = np.zeros((X.shape[0], self.out_features), np.float32)  # (T, O)
        if keep.any():
            qx, sx = quantize_activations(np.ascontiguousarray(X[:, keep]), "per_token")
            qw = np.ascontiguousarray(self.codes[:, keep])  # (O, I − K)
            if self.path == "int":
                acc = int8_matmul(qx, qw, self.kernels).astype(np.float32)  # (T, O) exact
            else:  # the integer-valued sum, exact in floats
                acc = exact_int_matmul(qx, qw)
            y += acc * sx[:, None] * self.scale[None, :]
        if is_out.any():  # X_O (T, K) @ Ŵ_Oᵀ (K, O) in float
            W_out = self.codes[:, is_out].astype(np.float32) * self.scale[:, None]  # (O, K)
            y += X[:, is_out] @ W_out.T
        return y.reshape(*lead, self.out_features)

    def to_state(self, prefix: str = "") -> tuple[dict, dict]:
        return ({prefix + "codes": self.codes, prefix + "scale": self.scale},
                {"type": "Int8OutlierLinear", "threshold": self.threshold})  # fmt: skip

    @classmethod
    def from_state(cls, arrays: dict, meta: dict, prefix: str = "") -> Int8OutlierLinear:
        return cls(arrays[prefix + "codes"], arrays[prefix + "scale"], meta["threshold"])


@register
class MXLinear:
    """A Linear whose weight is a microscaling tensor (MXFP4, MXFP8, NVFP4): y = x Ŵᵀ, Ŵ decoded
    once (fake path only — this CPU has no FP4 arithmetic).

    >>> from tinyquant.quant import quantize_mx
    >>> W = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    >>> lin = MXLinear(quantize_mx(W, "mxfp4"))
    >>> lin.nbytes, lin.forward(np.ones((1, 64), np.float32)).shape   # 8·64/2 + 8·2 scales
    (272, (1, 8))
    """

    def __init__(self, mx: MXTensor) -> None:
        if len(mx.shape) != 2:
            raise ValueError(f"a Linear weight is 2-D (out, in), got shape {mx.shape}")
        self.mx = mx
        self.out_features, self.in_features = mx.shape
        self._w = mx.dequantize()  # (O, I) float32

    nbytes = property(lambda self: int(self.mx.nbytes))
    path = property(lambda self: "fake")
    has_int_kernel = property(lambda self: False)

    def with_path(self, path: str) -> MXLinear:
        check_path(path, False, f"{self.mx.fmt} weights")
        return self

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.in_features)
        return (x @ self._w.T).astype(np.float32)

    def to_state(self, prefix: str = "") -> tuple[dict, dict]:
        meta = {"type": "MXLinear", "fmt": self.mx.fmt, "shape": list(self.mx.shape),
                "tensor_scale": self.mx.tensor_scale}  # fmt: skip
        return {prefix + "codes": self.mx.codes, prefix + "scale": self.mx.scale}, meta

    @classmethod
    def from_state(cls, arrays: dict, meta: dict, prefix: str = "") -> MXLinear:
        mx = MXTensor(np.asarray(arrays[prefix + "codes"]), np.asarray(arrays[prefix + "scale"]),
                      meta["fmt"], tuple(meta["shape"]), meta["tensor_scale"])  # fmt: skip
        return cls(mx)
