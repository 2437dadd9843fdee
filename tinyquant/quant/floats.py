"""FP32 → FP16 / BF16 / FP8 (E4M3fn, E5M2) / FP4 (E2M1) by bit manipulation, round to nearest even.

A float with E exponent bits, M mantissa bits and bias B stores

    normal     (−1)^s · 2^(e − B) · (1 + m / 2^M)        1 ≤ e (≤ 2^E − 2 if the format has inf)
    subnormal  (−1)^s · 2^(1 − B) · (m / 2^M)            e = 0

Rounding (one formula for normals and subnormals): write |x| = sig · 2^(exp − 23) with the
24-bit FP32 significand sig; the target's quantum at x is 2^(max(exp, 1 − B) − M); drop the
``shift`` low bits of sig with round-half-to-even, giving q quanta; then the target's magnitude
bits are ((max(exp, 1 − B) + B − 1) << M) + q — a carry out of the mantissa increments the
exponent for free. Values beyond the largest finite become, per format (``overflow``):

  fp16, bf16, fp8_e5m2   "inf"      IEEE: ±inf (default); or "saturate" to ±max
  fp8_e4m3 (fn)          "nan"      no inf encoding: overflow and ±inf → NaN (S.1111.111), the
                                    ml_dtypes/OCP "fn" cast (default); or "saturate" to ±448
                                    (NVIDIA's satfinite conversion: ±inf → ±448 as well)
  fp4_e2m1               "saturate" no inf and no NaN: overflow and ±inf → ±6

NaN is preserved where the format has one, exactly as the oracles do it: numpy float16 keeps the
sign and the top 10 payload bits (a zero payload becomes 1); bfloat16 → ±0x7FC0; E4M3fn →
S.1111.111; E5M2 → S.11111.10. E2M1 has no NaN: ml_dtypes returns a zero with the sign bit
*inverted* (0x8 for +NaN); we reproduce that bit for bit — check for NaN first if it matters.

Refs: IEEE 754-2008 §4.3.1 (roundTiesToEven); Micikevicius et al. 2022 "FP8 Formats for Deep
Learning" (E4M3fn, E5M2); OCP Microscaling Formats spec v1.0 (E2M1); Kalamkar et al. 2019
(bfloat16). Tested bit for bit against numpy float16 and ml_dtypes.
Shape legend: any shape in, the same shape out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .affine import as_float32, block_minmax, expand
from .formats import Format, get_format

__all__ = [
    "FLOAT_FORMATS",
    "encode",
    "decode",
    "round_to_format",
    "split_fields",
    "quantize_scaled_float",
]

FLOAT_FORMATS = ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1")
_OVERFLOW_DEFAULT = {"fp16": "inf", "bf16": "inf", "fp8_e5m2": "inf", "fp8_e4m3": "nan"}


def _float_format(fmt: str | Format) -> Format:
    f = get_format(fmt)
    if f.name not in FLOAT_FORMATS:
        raise ValueError(f"{f.name!r} is not a small float format; choose one of {FLOAT_FORMATS}")
    return f


def _bits_dtype(f: Format) -> np.dtype:
    return np.dtype(np.uint16 if f.bits == 16 else np.uint8)


def _round_magnitude(a: np.ndarray, f: Format) -> np.ndarray:
    """|x| as FP32 magnitude bits (int64) → target magnitude bits, RNE, no overflow handling."""
    M, B = f.mantissa_bits, f.bias
    e32 = (a >> 23) & 0xFF  # FP32 biased exponent
    sig = (a & 0x7FFFFF) | ((e32 != 0).astype(np.int64) << 23)  # 24-bit significand
    expn = np.maximum(e32, 1) - 127  # unbiased exponent of sig's bit 23
    e_t = np.maximum(expn, 1 - B)  # target exponent (clamped to the subnormal range)
    shift = np.minimum(e_t - expn + 23 - M, 40)  # FP32 bits dropped, ≥ 23 − M ≥ 13
    q = sig >> shift  # whole target quanta
    rem = sig & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    q = q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))  # round half to even
    return ((e_t + B - 1) << M) + q  # carry into the exponent is automatic


def _float32_round_to_odd(x: np.ndarray) -> np.ndarray:
    """float64 → float32 rounded to odd: truncate toward 0, then set the last bit if inexact.

    Rounding to odd into a format with at least two more bits than the target, then to nearest
    even into the target, is the one correctly rounded result (Boldo & Melquiond 2008,
    "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd",
    Thm. 1); float32 has 24 bits and ≥ 13 more than every target here, down to its
    subnormals. Plain float64 → float32 → target rounds twice: 1 + 2⁻¹¹ + 2⁻³⁰ → float32 is
    the fp16 tie 1 + 2⁻¹¹ → 1.0, while the nearest fp16 is 1 + 2⁻¹⁰.

    >>> x = np.array([1 + 2.0**-11 + 2.0**-30])
    >>> bool(_float32_round_to_odd(x)[0] > 1 + 2.0**-11)
    True
    """
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        t = x64.astype(np.float32)  # nearest even (may round away from 0, or to ±inf)
        away = np.isfinite(x64) & (np.abs(t.astype(np.float64)) > np.abs(x64))
        t = np.where(away, np.nextafter(t, np.float32(0)), t).astype(np.float32)  # truncated
        inexact = np.isfinite(x64) & (t.astype(np.float64) != x64)
    return (t.view(np.uint32) | inexact.astype(np.uint32)).view(np.float32)


def encode(x: np.ndarray, fmt: str | Format, overflow: str | None = None) -> np.ndarray:
    """Round values to ``fmt`` and return the raw bit codes (uint16 or uint8).

    float64 input is rounded once, to the nearest value of ``fmt`` (through float32 rounded
    to odd, which keeps the information a plain float32 cast would lose).

    >>> encode(np.array([1.0, 448.0, 464.0, 500.0, -0.0]), "fp8_e4m3")   # 464 ties to 448
    array([ 56, 126, 126, 127, 128], dtype=uint8)
    >>> encode(np.array([500.0]), "fp8_e4m3", overflow="saturate")
    array([126], dtype=uint8)
    >>> hex(int(encode(np.array([65520.0]), "fp16")[0]))                   # rounds to +inf
    '0x7c00'
    """
    f = _float_format(fmt)
    mode = overflow or _OVERFLOW_DEFAULT.get(f.name, "saturate")
    allowed = {"saturate"} | ({"inf"} if f.has_inf else set()) | ({"nan"} if f.bits > 4 else set())
    if mode not in allowed:
        raise ValueError(f"overflow={mode!r} is not available for {f.name}; use one of {allowed}")
    E, M = f.exponent_bits, f.mantissa_bits
    x = np.asarray(x)
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:  # float64 / longdouble: round once
        x = _float32_round_to_odd(x)
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.int64)
    sign = (u >> 31) << (E + M)  # target sign bit
    a = u & 0x7FFFFFFF  # FP32 magnitude bits
    is_nan = a > 0x7F800000
    is_inf = a == 0x7F800000
    mag = _round_magnitude(np.where(is_nan | is_inf, 0, a), f)
    max_bits = np.array([np.float32(f.max_finite).view(np.uint32)], dtype=np.int64)
    max_code = int(_round_magnitude(max_bits, f)[0])
    inf_code = ((1 << E) - 1) << M
    nan_code = {
        "fp16": inf_code | np.where((a & 0x7FFFFF) >> 13 == 0, 1, (a & 0x7FFFFF) >> 13),
        "bf16": 0x7FC0,
        "fp8_e4m3": 0x7F,
        "fp8_e5m2": 0x7E,
        "fp4_e2m1": 0x8 ^ sign,  # no NaN in E2M1: ml_dtypes' zero with inverted sign
    }[f.name]
    over = (mag > max_code) | is_inf
    over_code = {"inf": inf_code, "nan": nan_code, "saturate": max_code}[mode]
    mag = np.where(over, over_code, mag)
    out = np.where(is_nan, nan_code if f.name == "fp4_e2m1" else sign | nan_code, sign | mag)
    return out.astype(_bits_dtype(f))


def decode(bits: np.ndarray, fmt: str | Format) -> np.ndarray:
    """Bit codes of ``fmt`` → float32 values (exact: every value is representable in FP32).

    NaN codes of fp16/bf16 keep their payload (m << (23 − M)), as numpy and ml_dtypes do;
    FP8 NaN codes decode to the canonical float32 NaN (ml_dtypes does the same).

    >>> decode(np.array([56, 126, 127, 1], dtype=np.uint8), "fp8_e4m3").tolist()
    [1.0, 448.0, nan, 0.001953125]
    """
    f = _float_format(fmt)
    E, M, B = f.exponent_bits, f.mantissa_bits, f.bias
    b = np.asarray(bits).astype(np.int64)
    if b.size and (b.min() < 0 or b.max() >= (1 << f.bits)):
        raise ValueError(f"bit codes for {f.name} must be in [0, 2^{f.bits})")
    s = (b >> (E + M)) & 1
    e = (b >> M) & ((1 << E) - 1)
    m = b & ((1 << M) - 1)
    mag = np.where(
        e == 0, m * 2.0 ** (1 - B - M), (m + (1 << M)) * np.exp2((e - B - M).astype(np.float64))
    )
    top = e == (1 << E) - 1
    if f.has_inf:
        mag = np.where(top & (m == 0), np.inf, np.where(top & (m != 0), np.nan, mag))
    elif f.name == "fp8_e4m3":
        mag = np.where(top & (m == (1 << M) - 1), np.nan, mag)
    out = np.where(s == 1, -mag, mag).astype(np.float32)
    if f.bits == 16:  # fp16/bf16 NaN keeps its payload, as numpy and ml_dtypes widen it
        nan = top & (m != 0)
        u = out.view(np.uint32)
        u[nan] = ((s << 31) | 0x7F800000 | (m << (23 - M)))[nan].astype(np.uint32)
    return out


def round_to_format(x: np.ndarray, fmt: str | Format, overflow: str | None = None) -> np.ndarray:
    """The float32 value nearest to x in ``fmt`` (ties to even): decode(encode(x)).

    A float64 x is rounded once (see ``encode``), so the result is nearest to x itself.

    >>> round_to_format(np.array([0.1, 3.3, 1e5]), "bf16").tolist()
    [0.10009765625, 3.296875, 99840.0]
    >>> round_to_format(np.array([0.1, 3.3, 7.0]), "fp4_e2m1").tolist()   # 7 saturates
    [0.0, 3.0, 6.0]
    """
    f = _float_format(fmt)
    return decode(encode(x, f, overflow), f)


def split_fields(bits: np.ndarray, fmt: str | Format) -> tuple[np.ndarray, ...]:
    """(sign, exponent field, mantissa field) of bit codes; fp32 is accepted too.

    >>> split_fields(np.array([0x3C00], dtype=np.uint16), "fp16")
    (array([0]), array([15]), array([0]))
    """
    f = get_format(fmt)
    b = np.asarray(bits).astype(np.int64)
    E, M = f.exponent_bits, f.mantissa_bits
    return (b >> (E + M)) & 1, (b >> M) & ((1 << E) - 1), b & ((1 << M) - 1)


def quantize_scaled_float(
    x: np.ndarray,
    fmt: str | Format,
    block_size: Sequence[int],
    scale: np.ndarray | None = None,
    clip_ratio: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled low-precision floats (FP8/FP4 with a per-block scale): (bit codes, scale).

    scale = clip_ratio · amax / max_finite per block (1 for an all-zero block), codes =
    encode(x / scale) with saturation — the usual "scaled FP8" recipe (e.g. per-tensor FP8 on
    Hopper, MX formats). Pass ``scale`` to reuse given scales.

    >>> bits, s = quantize_scaled_float(np.array([[0.5, -2.0, 1.0, 4.0]]), "fp4_e2m1", (1, 4))
    >>> s.tolist(), (decode(bits, "fp4_e2m1") * s).tolist()   # 4 / 6; 0.5 / s = 0.75 → 1
    ([[0.6666666865348816]], [[0.6666666865348816, -2.0, 1.0, 4.0]])
    """

    f = _float_format(fmt)
    x = as_float32(x)
    if scale is None:
        lo, hi = block_minmax(x, block_size)
        amax = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64) * clip_ratio
        scale = (amax / f.max_finite).astype(np.float32)
        scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        scale = np.maximum(scale, np.float32(np.finfo(np.float32).tiny))
    scale = np.asarray(scale, dtype=np.float32)
    y = x / expand(scale, block_size, x.shape)
    return encode(y, f, overflow="saturate"), scale
