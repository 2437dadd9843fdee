"""Microscaling formats MXFP4, MXFP8 (OCP MX v1.0) and NVFP4: small floats sharing a block scale.

    x̂_i = X_b · P_i          P_i = round(x_i / X_b) in the element format (ties to even, saturate)

    name    element  block k  block scale X_b                                   bits per weight
    mxfp4   E2M1     32       E8M0 2^(⌊log2 amax_b⌋ − 2)   (E2M1 emax = 2)      4 + 8/32 = 4.25
    mxfp8   E4M3     32       E8M0 2^(⌊log2 amax_b⌋ − 8)   (E4M3 emax = 8)      8 + 8/32 = 8.25
    nvfp4   E2M1     16       E4M3(amax_b / (6·t)) · t,  t = amax / (6·448)     4 + 8/16 + 32/N

E8M0 (OCP §5.4) is a bare biased exponent: byte e ↦ 2^(e − 127), e = 0xFF is NaN; the shared
exponent ⌊log2 amax⌋ − emax_elem is clamped to [−127, 127] (an all-zero block gets 2^−127).
After scaling, |x/X| < 2^(emax_elem + 1): the top of the range (E2M1: 6…8) saturates to ±max.
NVFP4 (NVIDIA Blackwell) stores a positive E4M3 scale per 16 and one FP32 tensor scale t, the
recipe of NVIDIA's Transformer Engine / ModelOpt: the block scale maps amax_b to 6. Its range is
E4M3's: a block with amax_b ≤ 6·t·2^−10 gets scale 0 and decodes to zeros.

Element rounding is floats.py's ``encode`` (the one FP4/FP8 rounder). ``rounding="gguf"``
reproduces llama.cpp's MXFP4 quantizer (ggml-quants.c ``quantize_row_mxfp4_ref``, gguf-py
``MXFP4``) bit for bit; it differs from the OCP rule in two places:
  * exponent: floorf(log2f(amax)) in float32 — log2f rounds up to k for amax a few ulps below
    2^k (|k| ≥ 2), so gguf picks one exponent higher there than the exact ⌊log2 amax⌋;
  * element: ``best_index`` takes the first minimum of |kvalue·d − x|: a midpoint goes to the
    SMALLER magnitude (OCP: to even) and −0 is never chosen (+0 instead).
gguf casts a negative exponent (amax < 2^−125) to uint8 (undefined in C); there we clamp to 0
and claim no match.

Byte layout (a table, once):
    MXTensor  codes  (…, n/2) pack.py order: byte k = [ P[2k+1] : high nibble | P[2k] : low ]
              scale  (…, n/32) one E8M0 byte per block (NVFP4: E4M3 bits per 16)
    gguf      block of 17 bytes: [ e : E8M0 ][ byte j = P[j] : low nibble | P[j+16] : high ]
              (j = 0…15 — elements j and j + 16 share a byte, as in Q4_0; ``to_gguf_bytes``)
    E2M1 nibble = [ s | e1 e0 | m ]: 0…7 = 0, .5, 1, 1.5, 2, 3, 4, 6; 8…15 their negatives.

Refs: OCP Microscaling Formats (MX) v1.0 spec, §5.3 (E2M1), §5.4 (E8M0), §6.3 (conversion);
Rouhani et al. 2023 "Microscaling Data Formats for Deep Learning"; NVIDIA "Introducing NVFP4"
(2025); llama.cpp ggml-quants.c ``quantize_row_mxfp4_ref``, ggml-impl.h ``ggml_e8m0_to_fp32``.
Shape legend: x (…, n), k block size, n a multiple of k; blocks (…, n/k, k); scale (…, n/k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .affine import as_float32
from .floats import decode, encode
from .formats import get_format
from .pack import pack, unpack

__all__ = [
    "MX_FORMATS",
    "MXSpec",
    "MXTensor",
    "quantize_mx",
    "e8m0_exponent",
    "e8m0_to_float",
    "to_gguf_bytes",
    "from_gguf_bytes",
]

E8M0_BIAS = 127  # OCP §5.4: value 2^(e − 127); 0xFF is NaN
E8M0_NAN = 0xFF


@dataclass(frozen=True)
class MXSpec:
    """One block-scaled float format (a row of the docstring's table)."""

    name: str  # key in MX_FORMATS
    element: str  # element format in formats.FORMATS
    block: int  # elements sharing one block scale
    scale: str  # "e8m0" (power of two) or "fp8_e4m3" (NVFP4)
    emax: int  # exponent of the element's largest normal: E2M1 2 (6 = 1.5·2²), E4M3 8
    tensor_scale: bool = False  # one FP32 scale for the whole tensor (NVFP4)


MX_FORMATS: dict[str, MXSpec] = {
    s.name: s
    for s in [
        MXSpec("mxfp4", "fp4_e2m1", 32, "e8m0", 2),
        MXSpec("mxfp8", "fp8_e4m3", 32, "e8m0", 8),
        MXSpec("nvfp4", "fp4_e2m1", 16, "fp8_e4m3", 2, tensor_scale=True),
    ]
}


def _spec(fmt: str) -> MXSpec:
    if fmt not in MX_FORMATS:
        raise ValueError(f"unknown microscaling format {fmt!r}; choose one of {list(MX_FORMATS)}")
    return MX_FORMATS[fmt]


def e8m0_exponent(amax: np.ndarray, emax: int, rounding: str = "ocp") -> np.ndarray:
    """E8M0 byte of the shared scale 2^(⌊log2 amax⌋ − emax), clamped to [−127, 127] (OCP §6.3).

    "ocp" takes ⌊log2 amax⌋ exactly from the float's exponent (np.frexp); "gguf" as llama.cpp:
    floor(log2(amax)) in float32 (one higher a few ulps below a power of two).

    >>> e8m0_exponent(np.array([6.0, 1.0, 0.0, np.nextafter(np.float32(16), 0)]), 2).tolist()
    [127, 125, 0, 128]
    >>> e8m0_exponent(np.array([np.nextafter(np.float32(16), 0)]), 2, "gguf").tolist()
    [129]
    """
    a = np.asarray(amax, dtype=np.float32)
    if rounding == "ocp":
        mant, p = np.frexp(a)  # a = mant · 2^p, mant ∈ [0.5, 1): ⌊log2 a⌋ = p − 1, exact
        floor_log2 = np.where(a > 0, p - 1, -(2**10)).astype(np.int64)
    elif rounding == "gguf":
        with np.errstate(divide="ignore"):
            floor_log2 = np.where(a > 0, np.floor(np.log2(a)), -(2**10)).astype(np.int64)
    else:
        raise ValueError(f"rounding must be 'ocp' or 'gguf', got {rounding!r}")
    shared = np.clip(floor_log2 - emax, -E8M0_BIAS, E8M0_BIAS)  # E8M0 range 2^−127 … 2^127
    return (shared + E8M0_BIAS).astype(np.uint8)


def e8m0_to_float(e: np.ndarray) -> np.ndarray:
    """E8M0 bytes → float32 2^(e − 127) (2^−127 is a float32 subnormal, exact); 0xFF → NaN.

    >>> e8m0_to_float(np.array([127, 0, 254, 255], np.uint8)).tolist()
    [1.0, 5.877471754111438e-39, 1.7014118346046923e+38, nan]
    """
    e = np.asarray(e).astype(np.int64)
    with np.errstate(over="ignore"):  # e = 255 would be 2^128: it is NaN below
        v = np.ldexp(np.float32(1.0), (e - E8M0_BIAS).astype(np.int32)).astype(np.float32)
    return np.where(e == E8M0_NAN, np.float32(np.nan), v).astype(np.float32)


@dataclass(frozen=True, eq=False)
class MXTensor:
    """Element codes + block scales (+ NVFP4's FP32 tensor scale) of one tensor.

    >>> w = np.array([[0.5, -2.0, 6.0, 0.75] * 8], np.float32)                 # (1, 32)
    >>> mx = quantize_mx(w, "mxfp4")
    >>> mx.scale.tolist(), mx.dequantize()[0, :4].tolist(), mx.nbytes, mx.bits_per_weight
    ([[127]], [0.5, -2.0, 6.0, 1.0], 17, 4.25)
    """

    codes: np.ndarray  # uint8 (…, n·bits/8): element bit codes, packed with pack.py
    scale: np.ndarray  # uint8 (…, n/k): E8M0 exponents (MX) or E4M3 bits (NVFP4)
    fmt: str  # key in MX_FORMATS
    shape: tuple[int, ...]  # the original tensor's shape (…, n)
    tensor_scale: float | None = None  # NVFP4: the FP32 t (None for MX)

    def block_scale(self) -> np.ndarray:
        """The decoded scale X_b per block, float32 (…, n/k) (NVFP4: E4M3 value · t)."""
        s = _spec(self.fmt)
        if s.scale == "e8m0":
            return e8m0_to_float(self.scale)
        return decode(self.scale, s.scale) * np.float32(self.tensor_scale)

    def dequantize(self) -> np.ndarray:
        """x̂ = X_b · decode(P), float32 of the original shape."""
        s = _spec(self.fmt)
        f = get_format(s.element)
        n = self.shape[-1]
        P = (
            decode(unpack(self.codes, f.storage_bits, n), f)
            if f.bits == 4
            else decode(self.codes, f)
        )
        P = P.reshape(*self.shape[:-1], n // s.block, s.block)  # (…, n/k, k)
        return (P * self.block_scale()[..., None]).reshape(self.shape).astype(np.float32)

    @property
    def nbytes(self) -> int:
        """Exact bytes held: element codes + one scale byte per block (+ 4 for NVFP4's t)."""
        return int(
            self.codes.nbytes + self.scale.nbytes + (4 if self.tensor_scale is not None else 0)
        )

    @property
    def bits_per_weight(self) -> float:
        """All stored bits / elements: 4.25 (MXFP4), 8.25 (MXFP8), 4.5 + 32/N (NVFP4)."""
        return 8.0 * self.nbytes / int(np.prod(self.shape))


def _round_elements(y: np.ndarray, element: str, rounding: str) -> np.ndarray:
    """Element codes of y (already divided by the block scale): encode, ties to even, saturate.

    gguf's first-minimum rule differs only at exact midpoints (take the smaller magnitude) and
    at zero (always +0): both are fixed up here on top of the one rounder."""
    code = encode(y, element, overflow="saturate").astype(np.int64)  # RNE, ±max on overflow
    if rounding == "gguf":
        mag = code & 0x7  # E2M1: 3 magnitude bits under the sign bit 0x8
        up, down = decode(mag, element), decode(np.maximum(mag - 1, 0), element)
        a = np.abs(y).astype(np.float64)  # differences of float32 values are exact in float64
        tie = (mag > 0) & (a - down == up - a)
        mag = np.where(tie, mag - 1, mag)
        code = np.where(mag == 0, 0, (code & 0x8) | mag)
    return code.astype(np.uint8)


def quantize_mx(x: np.ndarray, fmt: str = "mxfp4", rounding: str = "ocp") -> MXTensor:
    """Quantize x (…, n) into a microscaling format, n a multiple of the block size.

    ``rounding="gguf"`` (MXFP4 only) reproduces llama.cpp's quantizer bit for bit (see the
    module docstring); the default follows the OCP MX v1.0 spec.

    >>> quantize_mx(np.zeros((2, 16), np.float32), "nvfp4").bits_per_weight   # 4.5 + 32/32
    5.5
    >>> quantize_mx(np.zeros((1, 24)), "mxfp8")
    Traceback (most recent call last):
    ...
    ValueError: mxfp8 needs the last dimension (24) to be a multiple of 32; pad it to 32
    """
    s = _spec(fmt)
    if rounding not in ("ocp", "gguf") or (rounding == "gguf" and fmt != "mxfp4"):
        raise ValueError(f"rounding {rounding!r} is not available for {fmt}; use 'ocp'")
    x = as_float32(x, f"{fmt} input")  # float, rank ≥ 1, no NaN/Inf (one-line ValueError)
    n = x.shape[-1]
    if n % s.block:
        raise ValueError(
            f"{fmt} needs the last dimension ({n}) to be a multiple of {s.block}; "
            f"pad it to {n + (-n) % s.block}"
        )
    f = get_format(s.element)
    blocks = x.reshape(*x.shape[:-1], x.shape[-1] // s.block, s.block)  # (…, n/k, k)
    amax = np.abs(blocks).max(axis=-1)  # (…, n/k)
    t = None
    # 1) block scale: E8M0 exponent (MX), or E4M3 of amax_b / (6·t) (NVFP4)
    if s.scale == "e8m0":
        scale = e8m0_exponent(amax, s.emax, rounding)  # (…, n/k) uint8
        X = e8m0_to_float(scale)
    else:
        top = np.float32(f.max_finite) * np.float32(get_format(s.scale).max_finite)  # 6 · 448
        t = float(np.float32(amax.max()) / top) if amax.size and amax.max() > 0 else 1.0
        scale = encode(amax / (np.float32(f.max_finite) * np.float32(t)), s.scale, "saturate")
        X = decode(scale, s.scale) * np.float32(t)  # (…, n/k) float32
    # 2) elements: round x / X_b into the element format (a zero scale keeps zero codes)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(X[..., None] > 0, blocks / X[..., None], np.float32(0.0))  # (…, n/k, k)
    P = _round_elements(y.astype(np.float32), s.element, rounding).reshape(x.shape)  # (…, n)
    codes = pack(P, f.storage_bits) if f.bits == 4 else P
    return MXTensor(codes, scale, fmt, x.shape, t)


def to_gguf_bytes(mx: MXTensor) -> np.ndarray:
    """MXFP4 in llama.cpp's block layout: (…, n/32, 17) uint8, [e][byte j = P[j] | P[j+16] << 4].

    >>> mx = quantize_mx(np.arange(32, dtype=np.float32).reshape(1, 32), "mxfp4")
    >>> to_gguf_bytes(mx)[0, 0, :4].tolist()   # e = 127 + ⌊log2 31⌋ − 2; X = 4
    [129, 96, 96, 97]

    (byte 3 = P[2] | P[18] << 4: 2/4 = 0.5 is code 1, 18/4 = 4.5 rounds to 4, code 6.)
    """
    if mx.fmt != "mxfp4":
        raise ValueError(f"gguf stores MXFP4 blocks; this tensor is {mx.fmt}")
    n = mx.shape[-1]
    P = unpack(mx.codes, 4, n).reshape(*mx.shape[:-1], n // 32, 2, 16)  # (…, n/32, 2, 16)
    qs = P[..., 0, :] | (P[..., 1, :] << 4)  # (…, n/32, 16): byte j = P[j] | P[j+16] << 4
    return np.concatenate([mx.scale[..., None], qs.astype(np.uint8)], axis=-1)


def from_gguf_bytes(blocks: np.ndarray, shape: tuple[int, ...]) -> MXTensor:
    """Inverse of ``to_gguf_bytes``: (…, n/32, 17) uint8 bytes → MXTensor of ``shape``."""
    b = np.asarray(blocks, dtype=np.uint8)
    want = tuple(shape[:-1]) + (shape[-1] // 32, 17)
    if shape[-1] % 32 or b.shape != want:
        raise ValueError(f"MXFP4 blocks for shape {tuple(shape)} must have shape {want}")
    qs = b[..., 1:]  # (…, n/32, 16)
    P = np.stack([qs & 0x0F, qs >> 4], axis=-2).reshape(shape)  # (…, n)
    return MXTensor(pack(P, 4), b[..., 0].copy(), "mxfp4", tuple(shape))
