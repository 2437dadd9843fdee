"""The uniform grid the weight algorithms quantize onto, in GPTQ's convention, one row at a time.

    code = clamp(round(w / scale) + zero, 0, maxq),   ŵ = scale · (code − zero),   maxq = 2^b − 1

Min-max (IST-DASLab/gptq ``quant.py``): the range [min(w, 0), max(w, 0)] always includes 0;
symmetric uses ±max|w| with zero = (maxq + 1)/2; an all-zero row gets the range [−1, 1].
MSE (the same file's ``mse=True``): shrink the range by p = 1 − i/100, i < 80, and keep the p
with the smallest Σ|w − ŵ|^2.4 per row. AWQ's asymmetric grid differs (its range is not forced
to include 0): ``minmax_qparams(..., include_zero=False)``.

These are the row-wise building blocks GPTQ and AWQ call inside their loops; whole-tensor
quantization with any block size is ``tinyquant.quant.affine`` (see ``rtn.py``).
Shapes: O rows (output channels), n elements per row (a group).
"""

from __future__ import annotations

import numpy as np

from tinyquant.quant.affine import qparams_from_range


def quantize_codes(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, maxq: int) -> np.ndarray:
    """Codes clamp(round(w/scale) + zero, 0, maxq) as uint8; broadcasting as numpy does.

    >>> quantize_codes(np.array([-1.0, 0.0, 1.0]), np.array(0.5), np.array(2.0), 3)
    array([0, 2, 3], dtype=uint8)
    """
    return np.clip(np.round(w / scale) + zero, 0, maxq).astype(np.uint8)


def _range(W: np.ndarray, symmetric: bool, include_zero: bool) -> tuple[np.ndarray, np.ndarray]:
    """The [xmin, xmax] per row that the grid must cover (never empty)."""
    xmin = W.min(axis=1)  # (O,)
    xmax = W.max(axis=1)  # (O,)
    if include_zero:
        xmin = np.minimum(xmin, 0)
        xmax = np.maximum(xmax, 0)
    if symmetric:
        xmax = np.maximum(np.abs(xmin), np.abs(xmax))
        xmin = np.where(xmin < 0, -xmax, xmin) if include_zero else -xmax
    flat = xmax == xmin
    return np.where(flat, xmin - 1, xmin), np.where(flat, xmax + 1, xmax)


def _qparams_from_range(
    xmin: np.ndarray, xmax: np.ndarray, maxq: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero covering [xmin, xmax]; a range containing 0 goes through the core."""
    if np.all(xmin <= 0) and np.all(xmax >= 0):
        bits = int(maxq).bit_length()
        s, z = qparams_from_range(xmin, xmax, f"uint{bits}", symmetric, convention="gptq")
        return s, z.astype(np.float32)
    scale = ((xmax - xmin) / maxq).astype(np.float32)  # AWQ's range, not forced to include 0
    return scale, np.clip(np.round(-xmin / scale), 0, maxq).astype(np.float32)


def minmax_qparams(
    W: np.ndarray, bits: int, symmetric: bool, include_zero: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) per row of W (O, n) from its min and max.

    >>> s, z = minmax_qparams(np.array([[-1.0, 3.0]]), 2, symmetric=False)
    >>> s.tolist(), z.tolist()
    ([1.3333333730697632], [1.0])
    """
    xmin, xmax = _range(np.asarray(W, np.float32), symmetric, include_zero)
    return _qparams_from_range(xmin, xmax, 2**bits - 1, symmetric)


def mse_qparams(
    W: np.ndarray,
    bits: int,
    symmetric: bool,
    grid: int = 100,
    maxshrink: float = 0.8,
    norm: float = 2.4,
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) per row minimising Σ|w − ŵ|^norm over ranges p·[min, max], p = 1 − i/grid.

    >>> W = np.array([[-0.1, 0.0, 0.1, 0.2, 5.0]])   # one outlier stretches min-max
    >>> float(mse_qparams(W, 2, False)[0][0]) < float(minmax_qparams(W, 2, False)[0][0])
    True
    """
    W = np.asarray(W, np.float32)
    maxq = 2**bits - 1
    xmin, xmax = _range(W, symmetric, include_zero=True)
    scale, zero = _qparams_from_range(xmin, xmax, maxq, symmetric)
    best = np.full(W.shape[0], np.inf)
    for i in range(int(maxshrink * grid)):
        p = 1 - i / grid
        s1, z1 = _qparams_from_range(p * xmin, p * xmax, maxq, symmetric)
        q = s1[:, None] * (quantize_codes(W, s1[:, None], z1[:, None], maxq) - z1[:, None])
        err = np.sum(np.abs(q - W) ** norm, axis=1)  # (O,)
        better = err < best
        best = np.where(better, err, best)
        scale = np.where(better, s1, scale)
        zero = np.where(better, z1, zero)
    return scale.astype(np.float32), zero.astype(np.float32)


def fake_quantize_rows(
    W: np.ndarray, bits: int, group_size: int | None, symmetric: bool, mse: bool = False
) -> np.ndarray:
    """Round-to-nearest of W (O, I) per row group on this grid, dequantized (GPTQ-convention RTN).

    >>> fake_quantize_rows(np.array([[0.0, 1.0, 2.0, 3.0]]), 2, None, False).tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    """
    W = np.asarray(W, np.float32)
    O, I = W.shape
    g = I if group_size is None else group_size
    if I % g:
        raise ValueError(f"group_size {g} does not divide in_features {I}; use a divisor")
    Wg = W.reshape(O * (I // g), g)  # (O·G, g)
    fit = mse_qparams if mse else minmax_qparams
    s, z = fit(Wg, bits, symmetric)
    c = quantize_codes(Wg, s[:, None], z[:, None], 2**bits - 1)
    return (s[:, None] * (c - z[:, None])).reshape(O, I).astype(np.float32)
