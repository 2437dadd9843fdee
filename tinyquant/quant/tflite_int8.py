"""TensorFlow Lite's int8 quantization spec, and its integer-only FULLY_CONNECTED, bit for bit.

    weights      int8 symmetric per output channel on [−127, 127], zero point 0:
                 s_w[o] = max|W[o]| / 127, q_w = clamp(round(W / s_w), −127, 127)
    activations  int8 asymmetric on [−128, 127]: x ≈ s_x · (q_x − z_x), 0 exactly representable
    bias         int32 at scale s_x · s_w[o], zero point 0
    FC           acc[t, o] = Σ_i (q_x[t, i] − z_x) · q_w[o, i] + b[o]                  (int32)
                 q_y = clamp(z_y + MultiplyByQuantizedMultiplier(acc, M₀[o], n[o]), −128, 127)

The real multiplier M = s_x · s_w[o] / s_y (computed in double) is stored as an int32
significand M₀ ∈ [2³⁰, 2³¹) and a power of two, M = M₀ · 2^(n − 31) (``quantize_multiplier``,
TFLite's ``QuantizeMultiplier``: frexp, then round half away from zero). Applying it is
gemmlowp's two roundings: ``SaturatingRoundingDoublingHighMul`` (the high 32 bits of 2·a·b,
rounded to nearest: a nudge of ±2³⁰ then C's truncating division, so a positive tie goes up
and a negative tie toward zero) then ``RoundingDivideByPOT`` (an arithmetic right shift that
rounds half away from zero), after a left shift when n > 0. That is TFLite's common.h as
written; LiteRT's shipped interpreter is built with TFLITE_SINGLE_ROUNDING, which rounds once:
(x·M₀ + 2^(30 − n)) >> (31 − n), ties upward. The two differ by one code on a few outputs per
thousand (near ties), so both are here: ``rounding="single"`` (default; equals LiteRT's
reference kernels bit for bit) and ``rounding="double"`` (gemmlowp). Everything here is
int64 NumPy emulating int32 C++ exactly.

Refs: TensorFlow Lite 8-bit quantization specification (tensorflow.org/lite/performance/
quantization_spec); tensorflow/lite/kernels/internal/common.h and quantization_util.cc
(MultiplyByQuantizedMultiplier, QuantizeMultiplier); gemmlowp fixedpoint.h; Jacob et al. 2018
§2.2 (the fixed-point multiplier) and eq. (7).
Shape legend: T tokens, I in features, O out features.
"""

from __future__ import annotations

import numpy as np

from .checks import as_float32

__all__ = [
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "weight_qparams",
    "activation_qparams",
    "quantize_weight",
    "quantize_input",
    "fc_requant_params",
    "fully_connected_int8",
]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M₀ int32, shift int32) with m = M₀ · 2^(shift − 31), M₀ ∈ [2³⁰, 2³¹) (0 for m = 0).

    >>> quantize_multiplier(np.array([0.5, 0.75, 3.0]))
    (array([1073741824, 1610612736, 1610612736], dtype=int32), array([0, 0, 2], dtype=int32))
    """
    m = np.asarray(m, dtype=np.float64)
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ValueError("a requantization multiplier must be finite and >= 0")
    q, shift = np.frexp(m)  # m = q · 2^shift, q ∈ [0.5, 1)
    q_fixed = np.sign(q) * np.floor(np.abs(q) * 2.0**31 + 0.5)  # std::round: ties away from 0
    carry = q_fixed == 2.0**31
    q_fixed, shift = np.where(carry, q_fixed / 2, q_fixed), np.where(carry, shift + 1, shift)
    tiny = shift < -31  # too small to represent: 0
    q_fixed, shift = np.where(tiny, 0, q_fixed), np.where(tiny | (m == 0), 0, shift)
    if np.any(shift > 30):
        raise ValueError("a requantization multiplier ≥ 2³⁰ cannot be stored; check the scales")
    return q_fixed.astype(np.int32), shift.astype(np.int32)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp: the int32 nearest to a·b / 2³¹; INT32_MIN² saturates to INT32_MAX.

    Ties: +1.5 → 2 but −1.5 → −1 (the nudge is 1 − 2³⁰ for a negative product, then the
    division truncates toward zero).

    >>> saturating_rounding_doubling_high_mul(np.array([3, -3]), np.array([2**30, 2**30]))
    array([ 2, -1])
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b  # exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    high = np.sign(num) * (np.abs(num) // (1 << 31))  # C++ division truncates toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp: x / 2^exponent rounded to nearest, ties away from zero.

    >>> rounding_divide_by_pot(np.array([5, -5, 6, -6]), 2)   # 1.25, −1.25, 1.5, −1.5
    array([ 1, -1,  2, -2])
    """
    x, e = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


ROUNDINGS = ("single", "double")


def multiply_by_quantized_multiplier(x, m0, shift, rounding: str = "single") -> np.ndarray:
    """TFLite common.h: round(x · M₀ · 2^(shift − 31)), once (LiteRT) or gemmlowp's twice.

    >>> m0, n = quantize_multiplier(np.array([0.25]))       # exact: M₀ = 2³⁰, shift −1
    >>> multiply_by_quantized_multiplier(np.array([4, 6, -6]), m0, n)   # 1, 1.5, −1.5
    array([ 1,  2, -1])
    >>> multiply_by_quantized_multiplier(np.array([4, 6, -6]), m0, n, "double")
    array([ 1,  2, -2])
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    x, shift = np.asarray(x, np.int64), np.asarray(shift, np.int64)
    if rounding == "single":  # TFLITE_SINGLE_ROUNDING: one rounding, ties toward +inf
        total = 31 - shift
        return (x * np.asarray(m0, np.int64) + (np.int64(1) << (total - 1))) >> total
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    x = x * (np.int64(1) << left)  # int32 in TFLite: callers keep |x| · 2^left < 2³¹
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m0), right)


def weight_qparams(w: np.ndarray) -> np.ndarray:
    """Per-output-channel scales s_w (O,) float32 of a weight (O, I): max|W[o]| / 127.

    An all-zero row gets scale 1 (its codes are 0 whatever the scale).

    >>> weight_qparams(np.array([[1.27, -2.54], [0.0, 0.0]]))
    array([0.02, 1.  ], dtype=float32)
    """
    w = as_float32(w, "w")
    s = (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32)
    return np.where(s > 0, s, np.float32(1)).astype(np.float32)


def activation_qparams(lo: float, hi: float) -> tuple[np.float32, int]:
    """(s_x, z_x) for an int8 activation range [lo, hi], widened to contain 0.

    s = (hi − lo) / 255 in float32; z = clamp(−128 − round(lo / s), −128, 127) — 0 is exact.

    >>> activation_qparams(-1.0, 1.55)
    (np.float32(0.01), -28)
    """
    lo32, hi32 = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    s = np.float32((hi32 - lo32) / np.float32(255))
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"activation range [{lo}, {hi}] must be finite and not all zero")
    z = int(np.clip(-128 - np.rint(lo32 / s), -128, 127))
    return s, z


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q_w int8 (O, I) on [−127, 127], s_w (O,)): TFLite's per-channel symmetric weights.

    >>> quantize_weight(np.array([[1.27, -2.54, 0.01]]))[0]
    array([[  64, -127,    0]], dtype=int8)
    """
    w = as_float32(w, "w")
    s = weight_qparams(w)
    return np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8), s


def quantize_input(x: np.ndarray, s: np.float32, z: int) -> np.ndarray:
    """q_x = clamp(round(x / s) + z, −128, 127) int8 (TFLite's QUANTIZE, half to even).

    >>> quantize_input(np.array([0.0, 1.0, -9.0]), np.float32(0.01), -28)
    array([ -28,   72, -128], dtype=int8)
    """
    x = as_float32(x)
    return np.clip(np.rint(x / s) + z, -128, 127).astype(np.int8)


def fc_requant_params(s_x, s_w, s_y) -> tuple[np.ndarray, np.ndarray]:
    """(M₀ (O,), shift (O,)) for M[o] = s_x · s_w[o] / s_y, the product taken in double."""
    m = np.float64(np.float32(s_x)) * np.asarray(s_w, np.float32).astype(np.float64)
    return quantize_multiplier(m / np.float64(np.float32(s_y)))


def fully_connected_int8(q_x, z_x, q_w, bias, s_x, s_w, s_y, z_y, rounding="single"):
    """TFLite's int8 FULLY_CONNECTED (per-channel), the integer reference: int8 (T, O).

    ``bias`` is int32 (O,) at scale s_x·s_w (or None). All arithmetic is integer except the
    one-off derivation of (M₀, shift) from the scales. ``rounding`` as in
    ``multiply_by_quantized_multiplier``.

    >>> q_w, s_w = quantize_weight(np.array([[0.5, -1.0], [1.0, 1.0]]))
    >>> fully_connected_int8(np.array([[10, -20]], np.int8), 0, q_w, None, 0.1, s_w, 0.05, 0)
    array([[ 50, -20]], dtype=int8)
    """
    q_x, q_w = np.asarray(q_x), np.asarray(q_w)
    if q_x.dtype != np.int8 or q_w.dtype != np.int8:
        raise ValueError(f"q_x and q_w must be int8, got {q_x.dtype} and {q_w.dtype}")
    if q_x.ndim != 2 or q_w.ndim != 2 or q_x.shape[1] != q_w.shape[1]:
        raise ValueError(f"q_x (T, I) and q_w (O, I) disagree: {q_x.shape} vs {q_w.shape}")
    acc = (q_x.astype(np.int64) - int(z_x)) @ q_w.astype(np.int64).T  # (T, O) exact
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)[None, :]
    if np.any(np.abs(acc) > INT32_MAX):
        raise ValueError("the int32 accumulator overflows; the layer is too wide for int8")
    m0, shift = fc_requant_params(s_x, s_w, s_y)
    y = multiply_by_quantized_multiplier(acc, m0[None, :], shift[None, :], rounding) + int(z_y)
    return np.clip(y, -128, 127).astype(np.int8)
