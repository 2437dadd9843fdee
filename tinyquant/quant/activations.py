"""Activation quantization: symmetric integer codes for x, scaled per token or per tensor.

    s = amax / qmax            amax = max |x| over the block (a token's row, or the tensor)
    q = clamp(round(x / s), −qmax, qmax)            x̂ = s · q

``qmax`` comes from the format table (int8: 127 — the restricted range [−127, 127] of ONNX
Runtime and the W8A8 kernels, so that −q never overflows). Computed in float32 (s = amax / qmax
rounds once); a block whose amax is 0 gets s = 1 and codes 0. ``amax`` may be given: a *static*
scale frozen from calibration (SmoothQuant O3) instead of measured on this batch (dynamic).

This is the one activation quantizer: the kernels' reference, the W8A8 fake path, SmoothQuant's
search and LLM.int8()'s vector-wise rows all call it, so their codes agree to the bit.
Refs: Xiao et al. 2022 "SmoothQuant" §2 (per-token and per-tensor, dynamic and static);
Dettmers et al. 2022 "LLM.int8()" eq. (1) (vector-wise absmax).
Shape legend: x (…, I); per token: s (…,); per tensor: s ().
"""

from __future__ import annotations

import numpy as np

from .affine import as_float32
from .formats import Format, get_format

__all__ = ["GRANULARITIES", "quantize_activations", "fake_quantize_activations"]

GRANULARITIES = ("per_token", "per_tensor")


def _symmetric_int(fmt: str | Format) -> Format:
    f = get_format(fmt)
    if f.kind != "int" or not f.signed or f.name == "ternary":
        raise ValueError(
            f"activations are quantized to a signed integer format (int8, int4, …); got {f.name!r}"
        )
    return f


def quantize_activations(
    x: np.ndarray,
    granularity: str = "per_token",
    fmt: str | Format = "int8",
    amax: float | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 (…, I), scale float32) of x; scale (…,) per token or () per tensor.

    >>> q, s = quantize_activations(np.array([[0.5, -1.27, 0.0], [0.0, 0.0, 0.0]], np.float32))
    >>> q, s
    (array([[  50, -127,    0],
           [   0,    0,    0]], dtype=int8), array([0.01, 1.  ], dtype=float32))
    >>> quantize_activations(np.array([[2.0, 1.0]], np.float32), "per_tensor", amax=127.0)[0]
    array([[2, 1]], dtype=int8)
    """
    f = _symmetric_int(fmt)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    x = as_float32(x)
    qmax = np.float32(f.qmax)
    if amax is None:
        axis = -1 if granularity == "per_token" else None
        amax = np.abs(x).max(axis=axis)  # (…,) or ()
    else:
        amax = np.asarray(amax, np.float32)
        if not np.all(np.isfinite(amax) & (amax >= 0)):
            raise ValueError(f"amax must be finite and >= 0, got {amax}")
    s = (np.asarray(amax, np.float32) / qmax).astype(np.float32)
    s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
    s_b = s[..., None] if granularity == "per_token" else s
    q = np.clip(np.rint(x / s_b), -qmax, qmax).astype(np.int8)  # (…, I)
    return q, s


def fake_quantize_activations(
    x: np.ndarray,
    granularity: str = "per_token",
    fmt: str | Format = "int8",
    amax: float | np.ndarray | None = None,
) -> np.ndarray:
    """x̂ = s · q in float32: what a layer sees when its input is quantized.

    >>> fake_quantize_activations(np.array([[1.0, -2.0]], np.float32)).tolist()
    [[1.0078740119934082, -2.0]]
    """
    q, s = quantize_activations(x, granularity, fmt, amax)
    s_b = s[..., None] if granularity == "per_token" else s
    return (q.astype(np.float32) * s_b).astype(np.float32)
