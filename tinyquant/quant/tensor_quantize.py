"""Quantize any tensor into a QTensor: the one entry point for every kind of format.

    int       affine.py: min-max (scale, zero) per block, round half to even
    codebook  codebook.py: absmax per block, nearest code (nf4, fp4_bnb, dynamic8)
    float     floats.py: a per-block scale maps amax to the format's largest finite value

With ``scale_dtype="float16"`` the scale is rounded to float16 *before* the codes are chosen,
so codes and stored scale agree exactly (as GPTQ/AWQ checkpoints and llama.cpp store them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import affine
from .codebook import quantize_codebook
from .floats import quantize_scaled_float
from .formats import Format, get_format
from .granularity import check_block_size
from .pack import codes_per_unit, pack, to_unsigned
from .qtensor import SCALE_DTYPES, QTensor

__all__ = ["quantize_tensor"]


def quantize_tensor(
    x: np.ndarray,
    fmt: str | Format,
    block_size: Sequence[int],
    symmetric: bool = True,
    convention: str = "restricted",
    clip_ratio: float = 1.0,
    scale_dtype: str = "float32",
) -> QTensor:
    """Quantize ``x`` round-to-nearest with min-max parameters into a packed QTensor.

    Integer formats go through affine.py; nf4/fp4_bnb through codebook.py (absmax blocks);
    float formats (fp8_e4m3, fp8_e5m2, fp4_e2m1) are scaled so that amax maps to max_finite.

    >>> x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    >>> qt = quantize_tensor(x, "uint4", (1, 32), symmetric=False)
    >>> qt.codes.nbytes, qt.scale.nbytes, qt.zero.nbytes, qt.bits_per_weight
    (32, 8, 2, 5.25)
    >>> quantize_tensor(x, "int4", (1, 32), scale_dtype="float16").scale.dtype
    dtype('float16')
    """
    f = get_format(fmt)
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {list(SCALE_DTYPES)}, got {scale_dtype!r}")
    if f.kind == "codebook":
        return quantize_codebook(x, f, block_size=block_size)
    x = affine.as_float32(x)
    block = check_block_size(x.shape, block_size)
    unit = codes_per_unit(f.storage_bits)
    if x.ndim and x.shape[-1] % unit:
        raise ValueError(f"{f.name} packs {unit} codes per unit, so the last dimension of x "
                         f"(in_features) must be a multiple of {unit}, got {x.shape[-1]}; pad it "
                         f"to {x.shape[-1] + (-x.shape[-1]) % unit}")  # fmt: skip
    if f.kind == "float":
        bits, scale = quantize_scaled_float(x, f, block, clip_ratio=clip_ratio)
        scale = _store_scale(scale, scale_dtype)
        bits, scale = quantize_scaled_float(x, f, block, scale=scale.astype(np.float32))
        return QTensor(pack(bits, f.storage_bits), _store_scale(scale, scale_dtype), None, f,
                       block, x.shape)  # fmt: skip
    scale, zero = affine.choose_qparams(x, f, block, symmetric, convention, clip_ratio)
    scale = _store_scale(scale, scale_dtype)
    codes = affine.quantize(x, scale.astype(np.float32), zero, f, block)
    if f.signed:
        codes = to_unsigned(codes, f.storage_bits)
    keep_zero = (not symmetric) or convention == "gptq"
    zero_stored = zero.astype(affine.code_dtype(f)) if keep_zero else None
    return QTensor(pack(codes, f.storage_bits), scale, zero_stored, f, block, x.shape)


def _store_scale(scale: np.ndarray, scale_dtype: str) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        s = np.asarray(scale, dtype=np.float32).astype(SCALE_DTYPES[scale_dtype])
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(
            f"a scale does not fit in {scale_dtype} (range {scale.min():g}..{scale.max():g}); "
            "use scale_dtype='float32'"
        )
    return s
