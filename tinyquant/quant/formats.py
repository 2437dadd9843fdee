"""The one table of number formats: what each stores, in how many bits, over which values.

A format is either
  * ``int``      — integer codes q in [qmin, qmax]; value = scale · (q − zero)   (affine.py)
  * ``float``    — a sign/exponent/mantissa float; value = (−1)^s · 2^(e − bias) · (1.m)
                   (floats.py rounds FP32 into it bit by bit)
  * ``codebook`` — a 4/8-bit index into a table of values scaled by a block absmax (codebook.py)

Every other module asks this table (``FORMATS`` / ``get_format``) for bits and ranges; nothing
else hard-codes them. Refs: IEEE 754-2008 (binary16); Micikevicius et al. 2022 "FP8 Formats for
Deep Learning" (E4M3fn, E5M2); OCP Microscaling spec v1.0 (E2M1); Dettmers et al. 2023 "QLoRA"
(NF4; bitsandbytes' FP4 code); Ma et al. 2024 "BitNet b1.58" (ternary).

Conventions:
  * signed b-bit integers cover [−2^(b−1), 2^(b−1) − 1]; unsigned [0, 2^b − 1];
  * INT6 exists for llama.cpp-like mixes (Q6_K's 6-bit codes), in pack.py's 24-bit words;
  * ``ternary`` is {−1, 0, 1} stored in 2 bits (log2 3 ≈ 1.58 bits of information);
  * ``storage_bits`` is what one code costs in memory (scales and zeros are counted by QTensor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Format", "FORMATS", "get_format", "NF4_CODE", "FP4_BNB_CODE", "DYNAMIC8_CODE"]


@dataclass(frozen=True)
class Format:
    """One number format.

    >>> f = get_format("int4")
    >>> (f.bits, f.kind, f.signed, f.qmin, f.qmax, f.levels)
    (4, 'int', True, -8, 7, 16)
    >>> get_format("fp8_e4m3").max_finite
    448.0
    """

    name: str  # key in FORMATS
    bits: int  # bits of information per code (ternary: 2, the storage cost)
    kind: str  # "int" | "float" | "codebook"
    signed: bool  # codes/values can be negative
    qmin: int | None = None  # smallest integer code (int formats only)
    qmax: int | None = None  # largest integer code (int formats only)
    grid: tuple[float, ...] | None = None  # sorted representable values (float ≤ 8 bits, codebook)
    exponent_bits: int | None = None  # float formats: width of the exponent field
    mantissa_bits: int | None = None  # float formats: width of the stored mantissa
    bias: int | None = None  # float formats: exponent bias
    max_finite: float | None = None  # largest finite magnitude (float, codebook: 1.0)
    has_inf: bool = False  # float formats: an infinity encoding exists
    storage_bits: int = 0  # bits one code occupies in memory
    description: str = ""  # one line for tables and error messages

    @property
    def levels(self) -> int:
        """Number of distinct codes: 2**bits for int/float/codebook (ternary: 3)."""
        if self.kind == "int":
            return int(self.qmax - self.qmin + 1)
        return 2**self.bits


def _float_grid(exponent_bits: int, mantissa_bits: int, bias: int, max_finite: float) -> tuple:
    """All finite values of a small float format, sorted, −0 folded into 0."""
    vals = []
    for e in range(2**exponent_bits):
        for m in range(2**mantissa_bits):
            if e == 0:  # subnormal: 2^(1 − bias) · (m / 2^M)
                v = 2.0 ** (1 - bias) * (m / 2**mantissa_bits)
            else:  # normal: 2^(e − bias) · (1 + m / 2^M)
                v = 2.0 ** (e - bias) * (1 + m / 2**mantissa_bits)
            if v <= max_finite:
                vals += [v, -v]
    return tuple(float(v) for v in np.unique(np.array(vals)))


# NF4: quantiles of N(0, 1) normalised to [−1, 1], with an exact 0 (QLoRA, Appendix E;
# bitsandbytes functional.py). Index i is the stored 4-bit code.
NF4_CODE = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)

# bitsandbytes' FP4 in *bit-pattern order*: code i -> value (an E2M1 variant with a different
# subnormal and bias, normalised by 12 so that max = 1). Index i is the stored 4-bit code.
FP4_BNB_CODE = tuple(
    float(np.float32(v) / np.float32(12.0))
    for v in (0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3)
)


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(start, end, steps, dtype=float32) on CPU, value for value.

    ATen's kernel: step = (end − start)/(steps − 1) in float32; the first steps//2 values are
    start + step·idx, the rest end − step·(steps − 1 − idx), each multiply-add fused into one
    rounding (the shipped x86 builds contract it to an FMA). numpy's linspace computes
    start + idx·step with two roundings, which misses 22 of the 256 dynamic-map entries by up
    to 2 ulp. The fused operation is exact in float64 here (a 24-bit step times idx < 2⁷ plus
    a float32 of similar magnitude fits in 53 bits), so one cast to float32 is the FMA.

    >>> _torch_linspace_f32(0.1, 1.0, 3).tolist()
    [0.10000000149011612, 0.550000011920929, 1.0]
    """
    s, e = np.float32(start), np.float32(end)
    step = np.float64((e - s) / np.float32(steps - 1))  # float32 division, held exactly
    idx = np.arange(steps, dtype=np.float64)
    head = np.float64(s) + step * idx  # idx < steps // 2
    tail = np.float64(e) - step * (steps - 1 - idx)  # the rest, counted back from the end
    return np.where(idx < steps // 2, head, tail).astype(np.float32)


def _dynamic_map(max_exponent_bits: int = 7, total_bits: int = 8) -> tuple[float, ...]:
    """bitsandbytes' signed "dynamic tree" 8-bit map (create_dynamic_map), used for double quant.

    Each decade 10^(i − 6) gets 2^i + 1 linearly spaced boundaries in [0.1, 1] (torch's float32
    linspace, reproduced exactly); the code values are the float32 midpoints between them times
    float32(10^(i − 6)), for both signs, plus 0 and 1, sorted.
    """
    data: list[float] = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        boundaries = _torch_linspace_f32(0.1, 1.0, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
        mag = np.float32(10.0 ** (-(max_exponent_bits - 1) + i)) * means
        data += mag.tolist() + (-mag).tolist()
    if additional_items > 0:  # pragma: no cover - not reached for 7 exponent bits of 8
        raise ValueError("only max_exponent_bits = total_bits - 1 is supported")
    data += [0.0, 1.0]
    data += [0.0] * (2**total_bits - len(data))
    return tuple(float(np.float32(v)) for v in sorted(data))


DYNAMIC8_CODE = _dynamic_map()


def _int(name: str, bits: int, signed: bool) -> Format:
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    word = "signed" if signed else "unsigned"
    return Format(
        name,
        bits,
        "int",
        signed,
        qmin=qmin,
        qmax=qmax,
        storage_bits=bits,
        description=f"{word} {bits}-bit integer codes in [{qmin}, {qmax}]",
    )


def _float(name: str, e: int, m: int, bias: int, max_finite: float, has_inf: bool) -> Format:
    bits = 1 + e + m
    grid = _float_grid(e, m, bias, max_finite) if bits <= 8 else None
    return Format(
        name,
        bits,
        "float",
        True,
        grid=grid,
        exponent_bits=e,
        mantissa_bits=m,
        bias=bias,
        max_finite=max_finite,
        has_inf=has_inf,
        storage_bits=bits,
        description=f"1 sign, {e} exponent, {m} mantissa bits; max {max_finite:g}",
    )


def _codebook(name: str, bits: int, code: tuple[float, ...], description: str) -> Format:
    return Format(
        name,
        bits,
        "codebook",
        True,
        grid=tuple(code),
        max_finite=1.0,
        storage_bits=bits,
        description=description,
    )


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        _int("int8", 8, True),
        _int("uint8", 8, False),
        _int("int6", 6, True),
        _int("uint6", 6, False),
        _int("int4", 4, True),
        _int("uint4", 4, False),
        _int("int3", 3, True),
        _int("uint3", 3, False),
        _int("int2", 2, True),
        _int("uint2", 2, False),
        Format(
            "ternary",
            2,
            "int",
            True,
            qmin=-1,
            qmax=1,
            storage_bits=2,
            description="{-1, 0, 1} (BitNet b1.58), stored in 2 bits",
        ),
        _float("fp32", 8, 23, 127, float(np.finfo(np.float32).max), True),
        _float("fp16", 5, 10, 15, 65504.0, True),
        _float("bf16", 8, 7, 127, float(np.float32(3.3895313892515355e38)), True),
        _float("fp8_e4m3", 4, 3, 7, 448.0, False),
        _float("fp8_e5m2", 5, 2, 15, 57344.0, True),
        _float("fp4_e2m1", 2, 1, 1, 6.0, False),
        _codebook("nf4", 4, NF4_CODE, "NormalFloat4: N(0,1) quantiles in [-1, 1] (QLoRA)"),
        _codebook("fp4_bnb", 4, FP4_BNB_CODE, "bitsandbytes' FP4 code in [-1, 1]"),
        _codebook("dynamic8", 8, DYNAMIC8_CODE, "bitsandbytes' signed dynamic 8-bit map"),
    ]
}


def get_format(fmt: str | Format) -> Format:
    """Look a format up by name (a Format passes through unchanged).

    >>> get_format("uint4").qmax
    15
    >>> get_format("int5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown format 'int5'; valid formats are: int8, uint8, int6, uint6, int4, ...
    """
    if isinstance(fmt, Format):
        return fmt
    if isinstance(fmt, str) and fmt in FORMATS:
        return FORMATS[fmt]
    raise ValueError(f"unknown format {fmt!r}; valid formats are: {', '.join(FORMATS)}")
