"""The uniform grid the weight algorithms quantize onto, one row (or row group) at a time.

    code = clamp(round(w / scale) + zero, 0, maxq),   ŵ = scale · (code − zero),   maxq = 2^b − 1

These are the row-wise building blocks GPTQ and AWQ call inside their loops; the grid itself is
``tinyquant.quant.affine``'s (``qparams_from_range``), in one of two named conventions:

  "gptq"  IST-DASLab/gptq ``quant.py``: the range [min(w, 0), max(w, 0)] always includes 0;
          symmetric uses ±max|w| with zero = (maxq + 1)/2; an all-zero row gets [−1, 1].
  "awq"   mit-han-lab/llm-awq ``pseudo_quantize_tensor``: asymmetric over the row's own
          [min, max] (not widened to contain 0), range floored at 1e-5.

MSE (GPTQ ``quant.py``'s ``mse=True``): shrink the range by p = 1 − i/n_candidates for
i < max_shrink·n_candidates and keep, per row, the p with the smallest Σ|w − ŵ|^2.4.
Whole-tensor quantization with any block size is ``affine`` directly (see ``rtn.py``).
Every public function checks its arguments first (``quant.checks``): W a finite 2-D float
array, bits one of ``UINT_BITS`` = (2, 3, 4, 6, 8) — the unsigned formats of the table.
Shapes: O rows (output channels), n elements per row (a group), I in features, g group size.
"""

from __future__ import annotations

import numpy as np

from tinyquant.quant.affine import qparams_from_range
from tinyquant.quant.checks import check_bits, check_int, check_option, check_real, float_array
from tinyquant.quant.formats import FORMATS
from tinyquant.quant.granularity import per_group

# the widths with an unsigned format in the table: the grid's codes are uint{bits}
UINT_BITS = tuple(sorted(f.bits for f in FORMATS.values() if f.kind == "int" and f.qmin == 0))
ROWS = "(rows, elements per row)"


def check_rows(W, bits) -> tuple[np.ndarray, int]:
    """W as a finite non-empty float32 (O, n) array and bits among ``UINT_BITS``."""
    return float_array(W, "W", ndim=2, what=ROWS), check_bits(bits, allowed=UINT_BITS)


__all__ = ["quantize_codes", "minmax_qparams", "mse_qparams", "quantize_rows", "fake_quantize_rows"]


def quantize_codes(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, maxq: int) -> np.ndarray:
    """Codes clamp(round(w/scale) + zero, 0, maxq) as uint8; broadcasting as numpy does.

    >>> quantize_codes(np.array([-1.0, 0.0, 1.0]), np.array(0.5), np.array(2.0), 3)
    array([0, 2, 3], dtype=uint8)
    """
    return np.clip(np.round(w / scale) + zero, 0, maxq).astype(np.uint8)


def _row_range(W: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Per row [lo, hi]: widened to contain 0 (gptq; all-zero rows → [−1, 1]) or the row's own."""
    lo, hi = W.min(axis=1), W.max(axis=1)  # (O,)
    if convention == "awq":
        return lo, hi
    lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
    dead = (lo == 0) & (hi == 0)
    return np.where(dead, np.float32(-1), lo), np.where(dead, np.float32(1), hi)


def minmax_qparams(
    W: np.ndarray, bits: int, symmetric: bool, convention: str = "gptq"
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) float32 per row of W (O, n) from its min and max.

    >>> s, z = minmax_qparams(np.array([[-1.0, 3.0]]), 2, symmetric=False)
    >>> s.tolist(), z.tolist()
    ([1.3333333730697632], [1.0])
    >>> minmax_qparams(np.array([[1.0, 4.0]]), 2, False, convention="awq")[1].tolist()
    [0.0]
    """
    check_option(convention, "convention", ("gptq", "awq"))
    W, bits = check_rows(W, bits)
    lo, hi = _row_range(W, convention)
    s, z = qparams_from_range(lo, hi, f"uint{bits}", symmetric, convention=convention)
    return s, z.astype(np.float32)


def mse_qparams(
    W: np.ndarray,
    bits: int,
    symmetric: bool,
    n_candidates: int = 100,
    max_shrink: float = 0.8,
    norm: float = 2.4,
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) per row minimising Σ|w − ŵ|^norm over ranges p·[lo, hi] (GPTQ convention).

    >>> W = np.array([[-0.1, 0.0, 0.1, 0.2, 5.0]])   # one outlier stretches min-max
    >>> float(mse_qparams(W, 2, False)[0][0]) < float(minmax_qparams(W, 2, False)[0][0])
    True
    """
    W, bits = check_rows(W, bits)
    n_candidates = check_int(n_candidates, "n_candidates", 1, 10_000)
    max_shrink = check_real(max_shrink, "max_shrink", 0.0, 1.0)
    norm = check_real(norm, "norm", 0.0, open_lo=True)
    maxq = 2**bits - 1
    lo, hi = _row_range(W, "gptq")
    scale, zero = minmax_qparams(W, bits, symmetric)
    best = np.full(W.shape[0], np.inf)
    for i in range(int(max_shrink * n_candidates)):
        p = 1 - i / n_candidates
        s1, z1 = qparams_from_range(p * lo, p * hi, f"uint{bits}", symmetric, convention="gptq")
        z1 = z1.astype(np.float32)
        q = s1[:, None] * (quantize_codes(W, s1[:, None], z1[:, None], maxq) - z1[:, None])
        err = np.sum(np.abs(q - W) ** norm, axis=1)  # (O,)
        better = err < best
        best = np.where(better, err, best)
        scale = np.where(better, s1, scale)
        zero = np.where(better, z1, zero)
    return scale.astype(np.float32), zero.astype(np.float32)


def quantize_rows(
    W: np.ndarray,
    bits: int,
    group_size: int | None,
    symmetric: bool = False,
    convention: str = "gptq",
    mse: bool = False,
    scale_dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-to-nearest W (O, I) per row group: (codes uint8 (O, I), scale (O, G), zero (O, G)).

    With ``scale_dtype="float16"`` each scale is rounded to float16 before its codes are chosen
    (as stored by GPTQ/AWQ checkpoints), so the codes are the nearest for the stored scale.

    >>> c, s, z = quantize_rows(np.array([[0.0, 1.0, 2.0, 3.0]]), 2, None)
    >>> c.tolist(), s.tolist(), z.tolist()
    ([[0, 1, 2, 3]], [[1.0]], [[0.0]])
    """
    W, bits = check_rows(W, bits)
    check_option(scale_dtype, "scale_dtype", ("float32", "float16"))
    O, I = W.shape
    g = per_group((O, I), I if group_size is None else group_size)[1]
    Wg = W.reshape(O * (I // g), g)  # (O·G, g)
    if mse:
        s, z = mse_qparams(Wg, bits, symmetric)
    else:
        s, z = minmax_qparams(Wg, bits, symmetric, convention)
    with np.errstate(over="ignore", under="ignore"):
        s = s.astype(scale_dtype).astype(np.float32)
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(
            f"W: a scale does not fit in {scale_dtype} (|W| too large or too small for it); "
            "use scale_dtype='float32'"
        )
    c = quantize_codes(Wg, s[:, None], z[:, None], 2**bits - 1)  # (O·G, g)
    return c.reshape(O, I), s.reshape(O, I // g), z.reshape(O, I // g)


def fake_quantize_rows(
    W: np.ndarray,
    bits: int,
    group_size: int | None,
    symmetric: bool = False,
    convention: str = "gptq",
    mse: bool = False,
) -> np.ndarray:
    """``quantize_rows`` dequantized: ŵ = scale · (code − zero), float32 (O, I).

    >>> fake_quantize_rows(np.array([[1.0, 2.0, 3.0, 4.0]]), 2, None, convention="awq").tolist()
    [[1.0, 2.0, 3.0, 3.0]]
    """
    c, s, z = quantize_rows(W, bits, group_size, symmetric, convention, mse)
    O, I = c.shape
    G = s.shape[1]
    q = s[:, :, None] * (c.reshape(O, G, I // G) - z[:, :, None])  # (O, G, g)
    return q.reshape(O, I).astype(np.float32)
