"""Input validation for the kernels, in Python, before anything enters Numba.

A compiled kernel trusts its inputs: a wrong dtype would be silently reinterpreted, a wrong
shape would read out of bounds, a NaN would flow into the integer path as garbage. Every public
kernel (reference and fast) therefore calls one of these checks first and raises a
``ValueError`` that says what was wrong and what to do. Packed weights (``PackedWeightOnly``,
``PackedW8A8``) check their size fields against their buffers' actual shapes with
``check_buffer``, when built and again before each kernel call.

Shape legend: T tokens, I in features, O out features, g group size, G = I / g, M, N, K GEMM.
"""

from __future__ import annotations

import numpy as np

from tinyquant.quant.pack import packed_length

__all__ = [
    "MAX_K",
    "check_array",
    "check_size",
    "check_bits",
    "check_buffer",
    "check_activations",
    "check_k",
    "check_int8_operands",
    "check_w8a8",
    "check_weight_only",
    "MAX_W4A8_GROUP",
    "check_w4a8",
]

# int32 accumulation is exact while K · 255 · 128 < 2³¹ (the u8 × s8 VNNI form is the tightest).
MAX_K = 65536
# W4A8 accumulates one group at a time: exact in int32 while g · 15 · 127 < 2³¹ (4-bit codes
# ≤ 15, |q_x| ≤ 127), i.e. g ≤ 1 127 288 (a multiple of 8 already).
MAX_W4A8_GROUP = (2**31 - 1) // (15 * 127) // 8 * 8


def check_array(a, name: str, dtype, ndim: int) -> np.ndarray:
    """Require a C-contiguous ndarray of the given dtype and number of axes; return it.

    >>> check_array(np.zeros((2, 3), np.int8), "a", np.int8, 2).shape
    (2, 3)
    >>> check_array(np.zeros((2, 3), np.int8).T, "a", np.int8, 2)
    Traceback (most recent call last):
    ...
    ValueError: a is not C-contiguous (strides (1, 3)); pass np.ascontiguousarray(a)
    """
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise ValueError(
            f"{name} has dtype {a.dtype}, expected {np.dtype(dtype)}; convert it with "
            f"{name}.astype(np.{np.dtype(dtype).name})"
        )
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(
            f"{name} is not C-contiguous (strides {a.strides}); pass np.ascontiguousarray({name})"
        )
    return a


def check_size(v, name: str, minimum: int = 1) -> int:
    """A whole number ≥ ``minimum`` (bools and floats rejected); returned as an int.

    >>> check_size(32.0, "group_size")
    Traceback (most recent call last):
    ...
    ValueError: group_size must be an integer ≥ 1, got 32.0
    """
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {v!r}")
    return int(v)


def check_bits(bits) -> int:
    """A code width the kernels run: 8, 4, 3 or 2 (an int, not 4.0).

    >>> check_bits(5)
    Traceback (most recent call last):
    ...
    ValueError: bits must be 8, 4, 3 or 2, got 5
    """
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits not in (8, 4, 3, 2):
        raise ValueError(f"bits must be 8, 4, 3 or 2, got {bits!r}")
    return int(bits)


def check_buffer(a, name: str, dtype, shape: tuple[int, ...], what: str) -> None:
    """A packed object's buffer: a C-contiguous ``dtype`` array of exactly ``shape``, which
    ``what`` (the object's own size fields) implies — so a kernel never reads past its end.

    >>> check_buffer(np.zeros((1, 64, 32), np.uint8), "pw.w", np.uint8, (1, 128, 32),
    ...              "64 × 128 codes of 4 bits")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: pw.w has shape (1, 64, 32) but 64 × 128 codes of 4 bits need (1, 128, 32); ...
    """
    check_array(a, name, dtype, len(shape))
    if a.shape != tuple(shape):
        raise ValueError(
            f"{name} has shape {a.shape} but {what} need {tuple(shape)}; make the packed weight "
            "with its prepack function instead of editing its fields"
        )


def check_activations(x, name: str = "x") -> np.ndarray:
    """Activations: float32 (T, I), C-contiguous, non-empty, all finite.

    >>> check_activations(np.array([[1.0, np.inf]], np.float32))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: x has 1 non-finite value(s) (NaN or Inf), the first at (0, 1); ...
    """
    check_array(x, name, np.float32, 2)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); pass at least one token and feature")
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (NaN or Inf), the first at {first}; "
            "a quantized kernel cannot represent them — check the layer feeding this one"
        )
    return x


def check_k(k: int) -> None:
    """A reduction length the int32 accumulators hold exactly: K ≤ MAX_K."""
    if k > MAX_K:
        raise ValueError(
            f"reduction length {k} exceeds {MAX_K}: the int32 accumulator could overflow; "
            "split the matmul along K"
        )


def check_int8_operands(a, b) -> None:
    """int8 GEMM operands: A (M, K) and B (N, K), both int8, C-contiguous, same K ≤ MAX_K.

    >>> check_int8_operands(np.zeros((2, 3), np.int8), np.zeros((4, 5), np.int8))
    Traceback (most recent call last):
    ...
    ValueError: a has K = 3 columns but b has 5; C = A Bᵀ needs a (M, K) and b (N, K)
    """
    check_array(a, "a", np.int8, 2)
    check_array(b, "b", np.int8, 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a has K = {a.shape[1]} columns but b has {b.shape[1]}; "
            "C = A Bᵀ needs a (M, K) and b (N, K)"
        )
    check_k(a.shape[1])


def _check_scale(s, name: str, shape: tuple[int, ...]) -> None:
    check_array(s, name, np.float32, len(shape))
    if s.shape != shape:
        raise ValueError(f"{name} has shape {s.shape}, expected {shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or Inf; re-quantize the weight")


def check_w8a8(x, w_codes, w_scale) -> None:
    """W8A8 inputs: x float32 (T, I); int8 codes (O, I); float32 per-channel scale (O,).

    >>> check_w8a8(np.ones((1, 4), np.float32), np.ones((2, 3), np.int8), np.ones(2, np.float32))
    Traceback (most recent call last):
    ...
    ValueError: x has 4 features but w_codes expects 3 (w_codes is (out, in) = (2, 3))
    """
    check_activations(x)
    check_array(w_codes, "w_codes", np.int8, 2)
    if x.shape[1] != w_codes.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but w_codes expects {w_codes.shape[1]} "
            f"(w_codes is (out, in) = {w_codes.shape})"
        )
    check_k(x.shape[1])
    _check_scale(w_scale, "w_scale", (w_codes.shape[0],))


def check_weight_only(x, packed, scale, zero, group_size: int, bits: int) -> None:
    """Weight-only inputs: x float32 (T, I); packed uint8 (O, I·bits/8); scale and zero float32
    (O, I / group_size) — the group size must match both I and the scale's columns.

    >>> x = np.ones((1, 8), np.float32); p = np.zeros((2, 4), np.uint8)
    >>> s = np.ones((2, 2), np.float32)
    >>> check_weight_only(x, p, s, s, 2, 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: scale has 2 groups per row but in_features 8 / group_size 2 = 4; pass the ...
    """
    check_activations(x)
    check_bits(bits)
    check_array(packed, "packed", np.uint8, 2)
    in_features = x.shape[1]
    check_size(group_size, "group_size")
    if in_features % group_size:
        raise ValueError(
            f"group_size {group_size} does not divide in_features {in_features}; "
            "use the group size the weight was quantized with"
        )
    want_bytes = packed_length(in_features, bits)
    if packed.shape[1] != want_bytes:
        raise ValueError(
            f"packed has {packed.shape[1]} bytes per row but {in_features} codes of {bits} bits "
            f"need {want_bytes}; check bits and that x matches the weight's in_features"
        )
    groups = in_features // group_size
    check_array(scale, "scale", np.float32, 2)
    if scale.shape[1] != groups:
        raise ValueError(
            f"scale has {scale.shape[1]} groups per row but in_features {in_features} / "
            f"group_size {group_size} = {groups}; pass the group_size the weight was quantized "
            f"with ({in_features} / {scale.shape[1]} = {in_features / scale.shape[1]:g})"
        )
    _check_scale(scale, "scale", (packed.shape[0], groups))
    _check_scale(zero, "zero", (packed.shape[0], groups))


def check_w4a8(x, packed, scale, zero, group_size: int, bits: int) -> None:
    """W4A8 inputs: the weight-only checks, plus 4-bit (or 3-bit, stored in 4-bit fields) codes
    and a group size that is a multiple of 8 (one kernel step covers 8 inputs) and small enough
    for exact int32 group sums (≤ ``MAX_W4A8_GROUP``).

    >>> x = np.ones((1, 24), np.float32); p = np.zeros((2, 12), np.uint8)
    >>> s = np.ones((2, 2), np.float32)
    >>> check_w4a8(x, p, s, s, 12, 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: group_size 12 is not a multiple of 8; the W4A8 kernel consumes 8 inputs ...
    """
    check_bits(bits)
    if bits not in (4, 3):
        raise ValueError(
            f"bits must be 4 or 3 for W4A8 (codes in 4-bit fields), got {bits}; use the "
            "weight-only kernels (packed_linear) or W8A8 for other widths"
        )
    check_size(group_size, "group_size")
    if group_size % 8:
        raise ValueError(
            f"group_size {group_size} is not a multiple of 8; the W4A8 kernel consumes 8 inputs "
            "per step — quantize with a group size such as 32, 64 or 128"
        )
    if group_size > MAX_W4A8_GROUP:
        raise ValueError(
            f"group_size {group_size} exceeds {MAX_W4A8_GROUP}: the int32 group sums "
            "g · 15 · 127 could overflow; use smaller groups"
        )
    check_weight_only(x, packed, scale, zero, group_size, bits)


def scale_term_bound(name: str, scale: np.ndarray, scale_zero: np.ndarray, qmax: int) -> float:
    """max over rows and groups of qmax·|s| + |s·z| (float64) of a packed weight's per-group
    ``scale`` and ``scale_zero``: a bound on every term a weight-only kernel adds. Refuses NaN,
    Inf, and a bound at or beyond float32's max (a term could overflow before any sum).

    >>> s, sz = np.full((1, 1, 64), 0.5, np.float32), np.zeros((1, 1, 64), np.float32)
    >>> scale_term_bound("pw", s, sz, 15)
    7.5
    """
    for field_name, a in (("scale", scale), ("scale_zero", scale_zero)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}.{field_name} contains NaN or Inf; re-quantize")
    terms = qmax * np.abs(scale, dtype=np.float64) + np.abs(scale_zero)
    bound = float(terms.max()) if terms.size else 0.0
    f32_max = float(np.finfo(np.float32).max)
    if not bound < f32_max:
        raise ValueError(f"{name} scales reach q·s + |s·z| = {bound:.3g}, beyond float32's "
                         f"{f32_max:.3g}; re-quantize with smaller scales")  # fmt: skip
    return bound
