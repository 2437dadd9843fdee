"""Fake quantization with gradients: the straight-through estimator, LSQ, ternary, int8 activations.

Forward (the core's one affine quantizer, ``affine.quantize`` then ``affine.dequantize``):

    v = w / s,   c = clamp(round(v) + z, qmin, qmax),   ŵ = s · (c − z)

round has derivative 0 almost everywhere, so training needs a stand-in (dŵ is the incoming
gradient, "inside" means qmin ≤ round(v) + z ≤ qmax):

    STE          ∂ŵ/∂w = 1                                      Bengio et al. 2013
    clipped STE  ∂ŵ/∂w = 1[inside]                              Jacob et al. 2018 §3
    LSQ          ∂ŵ/∂s = round(v) − v          inside           Esser et al. 2020, eq. 3
                       = qmin − z  or  qmax − z   outside (below / above)
                 step gradient scaled by g = 1/√(n · Qp), n weights per step, Qp = qmax − z
                 (eq. 4-5; the "Qp" of an asymmetric grid is its positive code count)
                 ∂ŵ/∂z = 0 inside, −s outside (round on z passed straight through; LSQ+)
    ternary      s = mean |w| per block, ŵ = s · clamp(round(w / s), −1, 1),  ∂ŵ/∂w = 1
                 (BitNet b1.58, Ma et al. 2024, eq. 1-3: absmean, then the STE)
    activations  x̂ = s_t · clamp(round(x / s_t), −127, 127),  s_t = max|x_t| / 127 per token;
                 ∂x̂/∂x = 1 (the absmax scale never clips, so the STE is exact up to rounding)

Each op is a micrograd-style pair ``<op>_fwd(...) -> (out, cache)`` / ``<op>_bwd(dout, cache)``.
Scales may be stored as float16 (``scale_dtype``): the forward then uses the float16-rounded
scale, so that the codes a converted checkpoint stores reproduce this forward bit for bit; the
gradient passes through that rounding unchanged.
Shape legend: w (O, I); block (b0, b1); s, z (O/b0, I/b1); the blocked view (O/b0, b0, I/b1, b1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .activations import fake_quantize_activations
from .affine import SCALE_FLOOR, dequantize, quantize
from .formats import Format, get_format
from .granularity import check_block_size, num_blocks

__all__ = [
    "stored_scale",
    "fake_quant_fwd",
    "ste_bwd",
    "clipped_ste_bwd",
    "lsq_bwd",
    "lsq_grad_scale",
    "absmean_scale",
    "ternary_fwd",
    "ternary_bwd",
    "act_quant_fwd",
    "act_quant_bwd",
]


def _blocked(a: np.ndarray, block: Sequence[int]) -> np.ndarray:
    """(O, I) → (O/b0, b0, I/b1, b1)."""
    (O, I), (b0, b1) = a.shape, block
    return a.reshape(O // b0, b0, I // b1, b1)


def _per_block(p: np.ndarray) -> np.ndarray:
    """(n0, n1) → (n0, 1, n1, 1), to broadcast against the blocked view."""
    return p[:, None, :, None]


def _block_sum(a: np.ndarray, block: Sequence[int]) -> np.ndarray:
    """Sum of an (O, I) array over each block → (O/b0, I/b1)."""
    return _blocked(a, block).sum(axis=(1, 3))


def stored_scale(s: np.ndarray, scale_dtype: str = "float32") -> np.ndarray:
    """The scale as the checkpoint will store it: positive (floored at 2⁻¹²⁶), float16-rounded
    when ``scale_dtype="float16"``, returned as float32.

    >>> stored_scale(np.array([0.1, -1.0]), "float16").tolist()   # fp16's smallest: 2⁻²⁴
    [0.0999755859375, 5.960464477539063e-08]
    """
    s = np.maximum(np.asarray(s, np.float32), SCALE_FLOOR)
    if scale_dtype == "float16":
        s = np.maximum(s.astype(np.float16).astype(np.float32), np.float32(2.0**-24))
    elif scale_dtype != "float32":
        raise ValueError(f"scale_dtype must be 'float32' or 'float16', got {scale_dtype!r}")
    return s.astype(np.float32)


def fake_quant_fwd(
    w: np.ndarray,
    s: np.ndarray,
    z: np.ndarray | None,
    fmt: str | Format,
    block_size: Sequence[int],
    scale_dtype: str = "float32",
) -> tuple[np.ndarray, tuple]:
    """ŵ = s · (clamp(round(w/s) + z, qmin, qmax) − z) on the format's grid, per block.

    ``s`` and ``z`` (float, learnable) have shape w.shape // block_size; z is rounded to an
    integer (it is stored as one) and ``None`` means a symmetric grid (z = 0).

    >>> w = np.array([[0.3, -0.9, 2.0, 0.1]], np.float32)
    >>> wq, _ = fake_quant_fwd(w, np.array([[0.5]]), None, "int2", (1, 4))
    >>> wq.tolist()                     # codes [1, -2, 1, 0] on int2's grid [-2, 1]
    [[0.5, -1.0, 0.5, 0.0]]
    """
    f = get_format(fmt)
    if f.kind != "int":
        raise ValueError(
            f"format {f.name!r} has no trainable uniform grid; QAT fake-quantizes integer "
            "formats (uint4, uint3, uint2, int8, ternary, …)"
        )
    w = np.asarray(w, np.float32)
    block = check_block_size(w.shape, block_size)
    if np.shape(s) != num_blocks(w.shape, block):
        raise ValueError(f"s has shape {np.shape(s)}, w {w.shape} with block {block} needs "
                         f"{num_blocks(w.shape, block)}")  # fmt: skip
    s_used = stored_scale(s, scale_dtype)  # (n0, n1)
    z_int = np.zeros(s_used.shape, np.int32) if z is None else np.rint(z).astype(np.int32)
    codes = quantize(w, s_used, z_int, f, block)  # (O, I) the core's rounding
    wq = dequantize(codes, s_used, z_int, block)  # (O, I) float32
    v = _blocked(w, block) / _per_block(s_used)  # (n0, b0, n1, b1) w / s
    r = np.rint(v) + _per_block(z_int)  # the unclamped code
    below, above = r < f.qmin, r > f.qmax
    return wq, (v, below, above, s_used, z_int, f, block, w.shape)


def ste_bwd(dwq: np.ndarray, cache: tuple) -> np.ndarray:
    """Plain STE: ∂ŵ/∂w = 1 everywhere, so dw = dŵ.

    >>> _, c = fake_quant_fwd(np.array([[5.0, 0.2]]), np.array([[0.5]]), None, "int2", (1, 2))
    >>> ste_bwd(np.ones((1, 2)), c).tolist()
    [[1.0, 1.0]]
    """
    return np.asarray(dwq, np.float32).copy()


def clipped_ste_bwd(dwq: np.ndarray, cache: tuple) -> np.ndarray:
    """Clipped STE: dw = dŵ inside the grid, 0 where the code was clamped.

    >>> _, c = fake_quant_fwd(np.array([[5.0, 0.2]]), np.array([[0.5]]), None, "int2", (1, 2))
    >>> clipped_ste_bwd(np.ones((1, 2)), c).tolist()   # 5.0 / 0.5 = 10 > qmax = 1
    [[0.0, 1.0]]
    """
    v, below, above, *_, shape = cache
    inside = ~(below | above)  # (n0, b0, n1, b1)
    return (np.asarray(dwq, np.float32) * inside.reshape(shape)).astype(np.float32)


def lsq_grad_scale(n: int, qp: float) -> float:
    """LSQ's gradient scale g = 1/√(n · Qp) (Esser et al. 2020, §2.2).

    >>> lsq_grad_scale(64, 1.0)
    0.125
    """
    return 1.0 / float(np.sqrt(n * max(qp, 1.0)))


def lsq_bwd(
    dwq: np.ndarray, cache: tuple, grad_scale: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dw, ds, dz) of LSQ: clipped STE for w, eq. 3 for the step s, STE through round for z.

    ``grad_scale`` multiplies ds and dz by g = 1/√(n·Qp), n = elements per block.

    >>> w = np.array([[0.3, 2.0]], np.float32)
    >>> _, c = fake_quant_fwd(w, np.array([[0.5]]), None, "int2", (1, 2))
    >>> dw, ds, dz = lsq_bwd(np.ones((1, 2)), c, grad_scale=False)
    >>> dw.tolist(), round(float(ds[0, 0]), 4)   # (round(0.6) − 0.6) + (qmax − 0) = 0.4 + 1
    ([[1.0, 0.0]], 1.4)
    """
    v, below, above, s_used, z_int, f, block, shape = cache
    d = _blocked(np.asarray(dwq, np.float32), block)  # (n0, b0, n1, b1)
    zb = _per_block(z_int).astype(np.float32)
    inside = ~(below | above)
    dq_ds = np.where(inside, np.rint(v) - v, np.where(below, f.qmin - zb, f.qmax - zb))
    ds = (d * dq_ds).sum(axis=(1, 3))  # (n0, n1)
    dz = (d * np.where(inside, 0.0, -_per_block(s_used))).sum(axis=(1, 3))  # (n0, n1)
    if grad_scale:
        n = block[0] * block[1]
        qp = np.maximum(f.qmax - z_int.astype(np.float64), 1.0)  # (n0, n1) positive codes
        g = 1.0 / np.sqrt(n * qp)
        ds, dz = ds * g, dz * g
    dw = (d * inside).reshape(shape)
    return dw.astype(np.float32), ds.astype(np.float32), dz.astype(np.float32)


def absmean_scale(w: np.ndarray, block_size: Sequence[int], eps: float = 1e-8) -> np.ndarray:
    """BitNet b1.58's scale: γ = mean |w| over each block (+ ε), shape w.shape // block_size.

    >>> absmean_scale(np.array([[1.0, -3.0, 0.0, 0.0]]), (1, 4)).tolist()
    [[1.0]]
    """
    w = np.asarray(w, np.float32)
    block = check_block_size(w.shape, block_size)
    return (np.abs(_blocked(w, block)).mean(axis=(1, 3)) + np.float32(eps)).astype(np.float32)


def ternary_fwd(
    w: np.ndarray, block_size: Sequence[int], scale_dtype: str = "float32"
) -> tuple[np.ndarray, tuple]:
    """ŵ = γ · clamp(round(w/γ), −1, 1), γ = absmean per block (BitNet b1.58, eq. 1-3).

    >>> wq, _ = ternary_fwd(np.array([[0.9, -2.0, 0.1, 1.0]]), (1, 4))   # γ = 1.0
    >>> wq.tolist()
    [[1.0, -1.0, 0.0, 1.0]]
    """
    gamma = absmean_scale(w, block_size)
    return fake_quant_fwd(w, gamma, None, "ternary", block_size, scale_dtype)


def ternary_bwd(dwq: np.ndarray, cache: tuple) -> np.ndarray:
    """BitNet's STE: ``w + (ŵ − w).detach()``, i.e. dw = dŵ (γ is not differentiated).

    >>> ternary_bwd(np.array([[2.0, 3.0]]), ternary_fwd(np.ones((1, 2)), (1, 2))[1]).tolist()
    [[2.0, 3.0]]
    """
    return ste_bwd(dwq, cache)


def act_quant_fwd(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Per-token int8 fake quantization of activations x (…, I) (the core's one quantizer).

    >>> act_quant_fwd(np.array([[1.0, -2.0]]))[0].tolist()
    [[1.0078740119934082, -2.0]]
    """
    return fake_quantize_activations(x, "per_token", "int8"), ()


def act_quant_bwd(dxq: np.ndarray, cache: tuple) -> np.ndarray:
    """STE for per-token absmax activations: dx = dx̂ (nothing is clipped).

    >>> act_quant_bwd(np.ones((1, 2)), ()).tolist()
    [[1.0, 1.0]]
    """
    return np.asarray(dxq, np.float32).copy()
