"""Round-to-nearest (RTN): every weight to its nearest grid point, one (scale, zero) per block.

    Q(W) = scale · (clamp(round(W / scale) + zero, qmin, qmax) − zero),   blocks of (1, g)

The baseline every other algorithm is measured against: no calibration data, no error feedback.
It is a thin layer over the core (``tinyquant.quant``): the format, granularity and convention
choices all live there. Integer formats default to GPTQ's convention (unsigned codes, asymmetric
min-max with 0 in range) so that "RTN vs GPTQ" compares the same grid; codebook/float formats
(nf4, fp4, fp8) use their own scaling. Ref: Frantar et al. 2022 and Lin et al. 2023 use exactly
this RTN as their baseline ("RTN" rows of their tables).
Shapes: O out features, I in features, g group size.
"""

from __future__ import annotations

import numpy as np

from tinyquant.quant import QTensor, get_format, per_group, quantize_tensor
from tinyquant.quant.checks import float_array


def rtn_quantize(
    W: np.ndarray,
    fmt: str = "uint4",
    group_size: int | None = 128,
    symmetric: bool = False,
    convention: str = "gptq",
    clip_ratio: float = 1.0,
    scale_dtype: str = "float32",
) -> QTensor:
    """Round-to-nearest W (O, I) into a QTensor; ``group_size=None`` is per-channel.

    >>> W = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    >>> qt = rtn_quantize(W, "uint4", group_size=32)
    >>> qt.scale.shape, qt.bits_per_weight                  # 4 bits + (fp32 scale + u8 zero)/32
    ((4, 2), 5.25)
    >>> bool(np.abs(qt.dequantize() - W).max() <= qt.scale.max() / 2 + 1e-6)
    True
    """
    W = float_array(W, "W", ndim=2, what="(out_features, in_features)")
    g = W.shape[1] if group_size is None else per_group(W.shape, group_size)[1]
    f = get_format(fmt)
    if f.kind != "int":  # nf4, fp4, fp8: absmax/scaled formats have one convention of their own
        return quantize_tensor(W, f, (1, g), scale_dtype=scale_dtype)
    if symmetric and convention == "gptq" and f.signed:
        raise ValueError(f"convention 'gptq' needs an unsigned format; use 'u{f.name}'")
    return quantize_tensor(W, f, (1, g), symmetric=symmetric, convention=convention,
                           clip_ratio=clip_ratio, scale_dtype=scale_dtype)  # fmt: skip
