"""Codebook formats (NF4, bitsandbytes FP4): absmax blocks, nearest code, double quantization.

    absmax_b = max |x| over block b (64 elements by default)
    code     = nearest(x · (1 / absmax_b), grid)        (an exact midpoint goes to the LOWER code)
    x̂        = grid[code] · absmax_b

Double quantization (QLoRA §3): the absmax values (one float32 per 64 weights = 0.5 bits per
weight) are themselves quantized: c = absmax − mean(absmax), 8-bit codes of bitsandbytes'
signed dynamic map in blocks of 256, plus one float32 absmax per 256 and one float32 mean —
8/64 + 32/(64·256) ≈ 0.127 bits per weight of overhead instead of 0.5.

Bit-exact with bitsandbytes' kernels (kQuantizeBlockwise): y = x · (1/absmax) in float32; NF4
and FP4 use bitsandbytes' hard-coded comparison trees (``x > threshold`` → upper code, so a
value equal to a threshold gets the lower code); the thresholds are the float32 midpoints
between neighbouring code values (FP4: the decimal literals of dQuantizeFP4). The 8-bit map
(formats.py, equal to ``create_dynamic_map(signed=True)`` entry for entry) is searched as
bitsandbytes' dQuantize<0> does, final pivot and code 255 included, so double-quantized absmax
codes equal bitsandbytes'. Block order: bitsandbytes blocks the
flattened tensor; our blocks are (1, …, 1, 64) along the last axis — the same blocks whenever
the last dimension is a multiple of 64. An all-zero block gets 1/absmax := 0 (bitsandbytes
would divide by zero) and decodes to exact zeros. The mean for double quantization is numpy's
float32 mean (summation order may differ from torch's in the last ulp).

Packing: ours (pack.py) puts element 2k in the LOW nibble; bitsandbytes puts element 2i in the
HIGH nibble. ``to_bnb_bytes`` / ``from_bnb_bytes`` swap nibbles to convert.

Refs: Dettmers et al. 2023 "QLoRA" (NF4, double quantization); bitsandbytes csrc/kernels.cu
(dQuantizeNF4, dQuantizeFP4, dQuantize), functional.py (create_dynamic_map, quantize_4bit).
Shape legend: x (…, I); block (1, …, 1, g); absmax (…, I/g); codes (…, I) uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .affine import block_minmax, expand
from .checks import as_float32, check_int
from .formats import NF4_CODE, Format, get_format
from .granularity import check_block_size, per_group
from .pack import pack
from .qtensor import QTensor

__all__ = [
    "CODEBOOK_FORMATS",
    "encode_codebook",
    "quantize_codebook",
    "absmax_per_block",
    "to_bnb_bytes",
    "from_bnb_bytes",
    "NF4_THRESHOLDS",
    "FP4_BNB_THRESHOLDS",
]

CODEBOOK_FORMATS = ("nf4", "fp4_bnb", "dynamic8")

# dQuantizeNF4: compare against the float32 midpoints of the NF4 code (bitsandbytes' literals)
NF4_THRESHOLDS = (
    (np.array(NF4_CODE[:-1], np.float64) + np.array(NF4_CODE[1:], np.float64)) / 2
).astype(np.float32)  # (15,)
# dQuantizeFP4: magnitudes in increasing order, their 3-bit codes, the literal pivots
_FP4_MAG_ORDER = np.array([0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011], np.uint8)
FP4_BNB_THRESHOLDS = np.array(
    [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333], np.float32
)


def _codebook_format(fmt: str | Format) -> Format:
    f = get_format(fmt)
    if f.name not in CODEBOOK_FORMATS:
        raise ValueError(f"{f.name!r} is not a codebook format; choose one of {CODEBOOK_FORMATS}")
    return f


def _dynamic_search(y: np.ndarray, code: np.ndarray) -> np.ndarray:
    """bitsandbytes dQuantize<0>: 7-step binary search over the sorted 256-entry code.

    1) walk from pivot 127 by ±64, ±32, …, ±1 (``y > code[pivot]`` goes right), tracking the
       last pivot passed on each side (lower_pivot, upper_pivot; 0 and 255 until moved);
    2) compare y with the FINAL pivot's value and the bracket on y's side: above it, the upper
       bracket wins when y > (upper + val)·½; below it, the lower bracket wins when
       y < (lower + val)·½; otherwise the final pivot. Code 255 (= 1.0) is reachable.
    The midpoints are float32 ``(a + b) * 0.5f`` as in the kernel.
    """
    half = np.float32(0.5)
    pivot = np.full(y.shape, 127, dtype=np.int64)
    upper_pivot = np.full(y.shape, 255, dtype=np.int64)
    lower_pivot = np.zeros(y.shape, dtype=np.int64)
    val = code[pivot]
    for i in (64, 32, 16, 8, 4, 2, 1):  # 1) the walk
        right = y > val
        lower_pivot = np.where(right, pivot, lower_pivot)
        upper_pivot = np.where(right, upper_pivot, pivot)
        pivot = np.where(right, pivot + i, pivot - i)
        val = code[pivot]
    upper, lower = code[upper_pivot], code[lower_pivot]  # 2) the final comparison
    above = y > val
    up = np.where(y > (upper + val) * half, upper_pivot, pivot)
    down = np.where(y < (lower + val) * half, lower_pivot, pivot)
    return np.where(above, up, down).astype(np.uint8)


def encode_codebook(y: np.ndarray, fmt: str | Format) -> np.ndarray:
    """Codes (uint8) of normalised values y ∈ [−1, 1], exactly as bitsandbytes chooses them.

    >>> encode_codebook(np.array([-1.0, 0.0, 0.03979015, 0.04, 1.0], np.float32), "nf4")
    array([ 0,  7,  7,  8, 15], dtype=uint8)
    >>> encode_codebook(np.array([1.0, -0.5, 0.0], np.float32), "fp4_bnb")
    array([ 3, 13,  0], dtype=uint8)
    """
    f = _codebook_format(fmt)
    y = np.asarray(y, dtype=np.float32)
    if f.name == "nf4":
        return np.searchsorted(NF4_THRESHOLDS, y, side="left").astype(np.uint8)
    if f.name == "fp4_bnb":
        mag = _FP4_MAG_ORDER[np.searchsorted(FP4_BNB_THRESHOLDS, np.abs(y), side="left")]
        return (mag + np.where(y < 0, 8, 0)).astype(np.uint8)
    return _dynamic_search(y, np.array(f.grid, dtype=np.float32))


def absmax_per_block(x: np.ndarray, block_size: Sequence[int]) -> np.ndarray:
    """max |x| per block, float32, shape x.shape // block_size.

    >>> absmax_per_block(np.array([[1.0, -3.0, 2.0, 0.5]]), (1, 2))
    array([[3., 2.]], dtype=float32)
    """
    lo, hi = block_minmax(x, block_size)
    return np.maximum(np.abs(lo), np.abs(hi)).astype(np.float32)


def quantize_codebook(
    x: np.ndarray,
    fmt: str | Format = "nf4",
    block_size: Sequence[int] | None = None,
    double_quant: bool = False,
    dq_block: int = 256,
) -> QTensor:
    """Absmax-blockwise codebook quantization (bitsandbytes quantize_4bit / quantize_blockwise).

    ``block_size`` defaults to blocks of 64 along the last axis. With ``double_quant`` the
    absmax array is stored as a nested 8-bit QTensor (``dynamic8``, blocks of ``dq_block``,
    zero-padded to a multiple of it — padding does not change any block's absmax) plus the
    float32 mean in ``scale_offset``.

    >>> w = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    >>> qt = quantize_codebook(w, "nf4")
    >>> qt.bits_per_weight                        # 4 + 32/64
    4.5
    >>> round(quantize_codebook(w, "nf4", double_quant=True).bits_per_weight, 3)  # 4 + 8/64 + …
    4.127
    """
    f = _codebook_format(fmt)
    x = as_float32(x, nonempty=True)
    dq_block = check_int(dq_block, "dq_block")
    if block_size is None:
        default = 256 if f.name == "dynamic8" else 64
        block_size = per_group(x.shape, min(default, x.shape[-1]))
    block = check_block_size(x.shape, block_size)
    absmax = absmax_per_block(x, block)  # (…, I/g)
    inv = np.where(absmax > 0, np.float32(1.0) / np.where(absmax > 0, absmax, 1), 0)
    y = x * expand(inv.astype(np.float32), block, x.shape)  # float32, like the kernel
    codes = pack(encode_codebook(y, f), f.storage_bits)
    if not double_quant:
        return QTensor(codes, absmax, None, f, block, x.shape)
    # double quantization (QLoRA §3): c2 = absmax − mean, 8-bit dynamic map, blocks of 256
    with np.errstate(over="ignore"):
        offset = np.float32(absmax.mean(dtype=np.float32))  # bitsandbytes' float32 mean
    if not np.isfinite(offset):  # the float32 sum overflowed (absmax near 3.4e38): float64
        offset = np.float32(absmax.mean(dtype=np.float64))
    c2 = (absmax.reshape(-1) - offset).astype(np.float32)  # (n,)
    c2 = np.concatenate([c2, np.zeros((-c2.size) % dq_block, np.float32)])  # (n_pad,)
    nested = quantize_codebook(c2, "dynamic8", block_size=(min(dq_block, c2.size),))
    return QTensor(codes, nested, None, f, block, x.shape, scale_offset=float(offset))


def to_bnb_bytes(qt: QTensor) -> np.ndarray:
    """Our 4-bit packing (element 2k low nibble) → bitsandbytes' (element 2i high nibble), flat.

    >>> qt = quantize_codebook(np.tile(np.float32([0.0, 1.0]), 32)[None], "nf4")  # codes 7, 15
    >>> hex(int(qt.codes[0, 0])), hex(int(to_bnb_bytes(qt)[0]))
    ('0xf7', '0x7f')
    """
    b = qt.codes.reshape(-1)
    return ((b & 0x0F) << 4 | (b >> 4)).astype(np.uint8)


def from_bnb_bytes(packed: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """bitsandbytes' flat 4-bit bytes → our packed layout of shape (…, I/2).

    >>> from_bnb_bytes(np.array([0x7F], np.uint8), (1, 2))
    array([[247]], dtype=uint8)
    """
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    shape = tuple(shape)
    return ((p & 0x0F) << 4 | (p >> 4)).astype(np.uint8).reshape(shape[:-1] + (shape[-1] // 2,))
