"""Affine (uniform integer) quantization: x ≈ scale · (code − zero), one (scale, zero) per block.

    code = clamp(round_half_even(x / scale) + zero, qmin, qmax)          quantize
    x̂    = (code − zero) · scale                                          dequantize

``block_size`` (granularity.py) says which elements share one (scale, zero): the scale and zero
arrays have shape ``x.shape // block_size`` (per-tensor (1, 1), per-channel (O, 1), per-group
(O, I/g), per-token (T, 1)). Refs: Jacob et al. 2018 "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", eq. (1); torchao quant_primitives;
PyTorch observers; GPTQ quant.py.

How the reference implementations choose (scale, zero) — they disagree; we offer each:

  symmetric, convention="restricted" (default; ONNX Runtime, llama.cpp Q8_0):
      signed codes on [−qmax, qmax], scale = amax / qmax, zero = 0.
  symmetric, convention="full" (PyTorch's symmetric observers):
      signed codes on [qmin, qmax], scale = amax / ((qmax − qmin) / 2), zero = 0; +amax lands on
      qmax + ½ and is clipped to qmax.
  symmetric, convention="gptq" (GPTQ quant.py; unsigned format required):
      unsigned codes on [0, maxq], zero = (maxq + 1) / 2, scale = 2·amax / maxq. Faithful to
      GPTQ including its quirk: a block with no negative value keeps xmin = 0, so scale =
      amax / maxq (half the grid unused). An all-zero block gets the range [−1, 1].
  asymmetric, convention="awq" (llm-awq ``pseudo_quantize_tensor``):
      the range [min, max] is NOT widened to contain 0; scale = (hi − lo) / (qmax − qmin),
      zero = clamp(qmin − round(lo / scale), qmin, qmax). A group far from 0 on one side clamps
      its zero and loses its top codes (AWQ's own behaviour). Two deliberate differences: a
      constant block c is widened to contain 0, so that c is exact (the reference floors the
      range at 1e-5, a float16 guard, and turns c into 1e-5); and the scale is computed in
      float64 and rounded once to float32 (the reference's float16 arithmetic rounds twice).
  convention="torch" (torch.ao.quantization observers and fake_quantize_*, bit for bit):
      every step in float32 as torch does it: lo = min(lo, 0), hi = max(hi, 0);
      asymmetric scale = max((hi − lo) / float32(qmax − qmin), eps), zero = clamp(qmin −
      round(lo / scale)); symmetric scale = max(max(−lo, hi) / float32((qmax − qmin) / 2), eps),
      zero 0 (signed) or 128 (uint8; (qmin + qmax) // 2 for narrower unsigned ranges). eps is
      float32 eps (2⁻²³), so a constant or all-zero block gets no special case. Quantizing
      with this convention rounds x · float32(1 / scale) — torch's fake_quantize_per_tensor_
      affine / _per_channel_affine and quantize_per_tensor — not x / scale: at near-ties the
      codes differ (x = −3.253264, scale = 0.025515797: x / scale = −127.49999 → −127, x ·
      (1 / scale) = −127.5 → −128).
  asymmetric (the other conventions; GPTQ sym=False; PyTorch's formula rounded once):
      the range is widened to contain 0, lo = min(min x, 0), hi = max(max x, 0);
      scale = (hi − lo) / (qmax − qmin), zero = clamp(qmin − round(lo / scale), qmin, qmax),
      an integer, so that x = 0 is exactly representable (padding, ReLU zeros stay exact).

Where the other conventions deliberately differ from PyTorch (use "torch" to match it): the
scale is computed in float64 and rounded once (torch: float32 ops, which differ by 1 ulp in
~40% of random blocks); PyTorch clamps scale to float32 eps; we only replace
scales below the smallest normal float32 (2⁻¹²⁶) by it, so tiny tensors keep their resolution.
A *constant* block (all values c) gets scale |c| (1 for c = 0; no floor) and codes ±1 (or
zero), so that it reconstructs exactly — the general formula's amax/qmax·qmax can miss c by one
ulp. PyTorch computes x·(1/scale); we compute x/scale (IEEE division), which can differ at exact
ties.

Dtypes: x is cast to float32; scale is float32; zero is int32 (integer-valued; GPTQ's symmetric
zero (maxq+1)/2 is an integer too); codes are int8 for signed formats and uint8 for unsigned.

Shape legend: x (d0, d1, …); block (b0, b1, …); scale/zero (n0, n1, …) with nᵢ = dᵢ / bᵢ;
the blocked view of x is (n0, b0, n1, b1, …).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .checks import as_float32, check_finite, check_option, check_real
from .formats import Format, get_format
from .granularity import check_block_size, num_blocks

__all__ = [
    "CONVENTIONS",
    "as_float32",
    "check_finite",
    "block_minmax",
    "qparams_from_range",
    "choose_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "expand",
    "code_dtype",
]

CONVENTIONS = ("restricted", "full", "gptq", "awq", "torch")
TORCH_EPS = np.float32(np.finfo(np.float32).eps)  # torch observers' scale floor, 2^-23
SCALE_FLOOR = np.float32(np.finfo(np.float32).tiny)  # smallest normal float32, 2^-126


def _int_format(fmt: str | Format) -> Format:
    f = get_format(fmt)
    if f.kind != "int":
        raise ValueError(
            f"format {f.name!r} is a {f.kind} format; affine quantization needs an integer "
            "format (int8, uint8, int4, uint4, int3, uint3, int2, uint2, ternary). "
            "Use floats.py for float formats and codebook.py for nf4/fp4_bnb"
        )
    return f


def code_dtype(fmt: str | Format) -> np.dtype:
    """Smallest NumPy dtype holding the codes: int8 for signed formats, uint8 for unsigned.

    >>> code_dtype("int4"), code_dtype("uint4")
    (dtype('int8'), dtype('uint8'))
    """
    f = _int_format(fmt)
    return np.dtype(np.int8 if f.qmin < 0 else np.uint8)


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------
def _blocked_shape(shape: Sequence[int], block: Sequence[int]) -> tuple[int, ...]:
    out: list[int] = []
    for d, b in zip(shape, block, strict=True):
        out += [d // b, b]  # (n_i, b_i)
    return tuple(out)


def _per_block(a: np.ndarray, block: Sequence[int]) -> np.ndarray:
    """Reshape a (n0, n1, …) parameter array to (n0, 1, n1, 1, …) for the blocked view."""
    a = np.asarray(a)
    return a.reshape(_blocked_shape(a.shape, [1] * a.ndim))


def _check_params(x_shape, scale, block) -> tuple[int, ...]:
    block = check_block_size(x_shape, block)
    want = num_blocks(x_shape, block)
    if np.shape(scale) != want:
        raise ValueError(
            f"scale has shape {np.shape(scale)} but x of shape {tuple(x_shape)} with "
            f"block_size {block} needs {want} (= x.shape // block_size)"
        )
    return block


def expand(a: np.ndarray, block_size: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Repeat a per-block array (n0, n1, …) to the full tensor shape (d0, d1, …).

    >>> expand(np.array([[1.0, 2.0]]), (1, 2), (1, 4))
    array([[1., 1., 2., 2.]])
    """
    block = check_block_size(shape, block_size)
    a = np.asarray(a)
    full = np.broadcast_to(_per_block(a, block), _blocked_shape(shape, block))
    return full.reshape(tuple(shape))


def block_minmax(x: np.ndarray, block_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-block minimum and maximum, each of shape x.shape // block_size (float32).

    >>> lo, hi = block_minmax(np.array([[1.0, -2.0, 3.0, 4.0]]), (1, 2))
    >>> lo, hi
    (array([[-2.,  3.]], dtype=float32), array([[1., 4.]], dtype=float32))
    """
    x = as_float32(x)
    block = check_block_size(x.shape, block_size)
    xb = x.reshape(_blocked_shape(x.shape, block))  # (n0, b0, n1, b1, …)
    axes = tuple(range(1, 2 * x.ndim, 2))
    return xb.min(axis=axes), xb.max(axis=axes)


# ---------------------------------------------------------------------------------------------
# choosing (scale, zero)
# ---------------------------------------------------------------------------------------------
def qparams_from_range(
    lo: np.ndarray,
    hi: np.ndarray,
    fmt: str | Format,
    symmetric: bool = True,
    convention: str = "restricted",
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) for ranges [lo, hi] (arrays of any shape; observers call this).

    >>> s, z = qparams_from_range(np.array([-1.0]), np.array([2.54]), "int8")
    >>> s, z
    (array([0.02], dtype=float32), array([0], dtype=int32))
    >>> s, z = qparams_from_range(np.array([-0.2]), np.array([1.0]), "uint8", symmetric=False)
    >>> float(s[0]), int(z[0])  # 1.2 / 255; zero = −round(−0.2 / scale) = round(42.5…) = 43
    (0.004705882165580988, 43)
    """
    f = _int_format(fmt)
    check_option(convention, "convention", CONVENTIONS)
    lo = np.asarray(lo, dtype=np.float32)
    hi = np.asarray(hi, dtype=np.float32)
    if lo.shape != hi.shape:
        raise ValueError(f"lo {lo.shape} and hi {hi.shape} must have the same shape")
    check_finite(lo, "lo")
    check_finite(hi, "hi")
    if np.any(lo > hi):
        raise ValueError("lo > hi somewhere; pass lo = min, hi = max of each block")
    qmin, qmax = f.qmin, f.qmax
    lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)

    if convention == "torch":
        return _torch_qparams(lo, hi, f, symmetric)

    if symmetric and convention == "gptq":
        if qmin != 0:
            raise ValueError(
                f"convention 'gptq' uses unsigned codes [0, maxq]; got signed format "
                f"{f.name!r}; use 'u{f.name}' (e.g. uint4)"
            )
        # GPTQ quant.py find_params, sym=True, line by line
        xmin, xmax = np.minimum(lo64, 0.0), np.maximum(hi64, 0.0)
        xmax = np.maximum(-xmin, xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
        dead = (xmin == 0) & (xmax == 0)
        xmin, xmax = np.where(dead, -1.0, xmin), np.where(dead, 1.0, xmax)
        scale = ((xmax - xmin) / qmax).astype(np.float32)
        zero = np.full(lo.shape, (qmax + 1) // 2, dtype=np.int32)
        return _finite_scale(scale), zero

    if symmetric:
        if qmin == 0:
            raise ValueError(
                f"symmetric quantization with the unsigned format {f.name!r} needs "
                "convention='gptq' (zero = (maxq+1)/2); or use a signed format such as "
                f"'{f.name[1:]}', or symmetric=False"
            )
        amax = np.maximum(np.abs(lo64), np.abs(hi64))
        denom = qmax if convention == "restricted" else (qmax - qmin) / 2
        scale = (amax / denom).astype(np.float32)
        zero = np.zeros(lo.shape, dtype=np.int32)
        const = lo64 == hi64  # every value equal to c: scale |c|, code ±1
        scale = np.where(const, np.abs(lo), scale).astype(np.float32)
        scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
        return _finite_scale(scale, keep=const), zero

    if convention == "awq":  # AWQ: the range is the block's own, not widened to contain 0
        if symmetric:
            raise ValueError("convention 'awq' is asymmetric; pass symmetric=False")
        flat = lo64 == hi64  # a constant block c: widen to contain 0 so that c is exact
        lo_f, hi_f = (
            np.where(flat, np.minimum(lo64, 0), lo64),
            np.where(flat, np.maximum(hi64, 0), hi64),
        )
        scale = ((hi_f - lo_f) / (qmax - qmin)).astype(np.float32)  # rounded once, as below
        scale = _finite_scale(np.where(scale == 0, np.float32(1.0), scale))
        zero = qmin - np.rint(lo_f.astype(np.float32) / scale)  # float32, as below
        return scale, np.clip(zero, qmin, qmax).astype(np.int32)

    # asymmetric: widen to contain 0, integer zero-point (PyTorch observers, GPTQ sym=False)
    lo0, hi0 = np.minimum(lo, 0).astype(np.float32), np.maximum(hi, 0).astype(np.float32)
    scale = ((hi0.astype(np.float64) - lo0) / (qmax - qmin)).astype(np.float32)
    const = lo64 == hi64
    scale = np.where(const, np.abs(lo), scale).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
    scale = _finite_scale(scale, keep=const)
    zero = qmin - np.rint(lo0 / scale)  # float32: PyTorch's zero_point formula
    zero = np.where(const & (lo < 0), qmin + 1, zero)  # constant c < 0: code qmin = −1 step
    zero = np.where(const & (lo >= 0), qmin, zero)  # constant c ≥ 0: code qmin (+1)
    zero = np.clip(zero, qmin, qmax).astype(np.int32)
    return scale, zero


def _torch_qparams(lo: np.ndarray, hi: np.ndarray, f: Format, symmetric: bool):
    """torch.ao.quantization's ``_calculate_qparams``, in float32 step by step.

    >>> s, z = _torch_qparams(np.float32([-1.0]), np.float32([0.3]), get_format("uint8"), False)
    >>> float(s[0]), int(z[0])  # float32 1.3 / 255 (float64 would give 0.005098039284…)
    (0.0050980388186872005, 196)
    """
    qmin, qmax = f.qmin, f.qmax
    # 1) the range always contains 0
    lo0, hi0 = np.minimum(lo, np.float32(0)), np.maximum(hi, np.float32(0))  # float32
    with np.errstate(over="ignore"):
        if symmetric:  # 2a) amax / ((qmax − qmin) / 2), zero fixed
            amax = np.maximum(-lo0, hi0)
            scale = amax / np.float32((qmax - qmin) / 2)
            mid = 128 if (qmin, qmax) == (0, 255) else (qmin + qmax) // 2
            zero = np.full(lo.shape, 0 if qmin < 0 else mid, dtype=np.int32)
        else:  # 2b) (hi − lo) / (qmax − qmin), zero = qmin − round(lo / scale), clamped
            scale = (hi0 - lo0) / np.float32(qmax - qmin)
    # 3) the eps floor (torch.max(scale, eps)); an infinite scale cannot be stored
    scale = np.maximum(scale, TORCH_EPS).astype(np.float32)
    if not np.all(np.isfinite(scale)):
        raise ValueError(
            "the range is too large for a float32 scale (hi − lo overflows float32); rescale x"
        )
    if not symmetric:
        zero = np.clip(qmin - np.rint(lo0 / scale), qmin, qmax).astype(np.int32)
    return scale, zero


def _finite_scale(scale: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Reject inf scales; raise scales below 2^-126 to it (constant blocks, ``keep``, exempt)."""
    if not np.all(np.isfinite(scale)):
        raise ValueError(
            "the range is too large for a float32 scale (|x| near 3.4e38); rescale x first"
        )
    floored = np.maximum(scale, SCALE_FLOOR)
    if keep is not None:
        floored = np.where(keep, scale, floored)
    return np.asarray(floored, dtype=np.float32)


def choose_qparams(
    x: np.ndarray,
    fmt: str | Format,
    block_size: Sequence[int],
    symmetric: bool = True,
    convention: str = "restricted",
    clip_ratio: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Min-max (scale, zero) per block; both of shape x.shape // block_size.

    ``clip_ratio`` in (0, 1] shrinks the range (lo, hi) → clip_ratio·(lo, hi) before the
    parameters are derived (clipping search, AWQ's max shrink).

    Worked example (int8, one block, amax = 2.54):

    >>> x = np.array([[-1.0, 0.5, 2.54]], dtype=np.float32)
    >>> s, z = choose_qparams(x, "int8", (1, 3))                  # restricted: 2.54 / 127
    >>> s, quantize(x, s, z, "int8", (1, 3))
    (array([[0.02]], dtype=float32), array([[-50,  25, 127]], dtype=int8))
    >>> s, z = choose_qparams(x, "int8", (1, 3), convention="full")  # PyTorch: 2.54 / 127.5
    >>> quantize(x, s, z, "int8", (1, 3))                          # 127.5 → 128 → clipped
    array([[-50,  25, 127]], dtype=int8)
    >>> s, z = choose_qparams(x, "uint8", (1, 3), symmetric=False)  # range [-1, 2.54]
    >>> round(float(s[0, 0]), 6), int(z[0, 0]), quantize(x, s, z, "uint8", (1, 3))
    (0.013882, 72, array([[  0, 108, 255]], dtype=uint8))
    """
    x = as_float32(x)
    block = check_block_size(x.shape, block_size)
    clip_ratio = check_real(clip_ratio, "clip_ratio", 0.0, 1.0, open_lo=True)
    lo, hi = block_minmax(x, block)
    if clip_ratio != 1.0:
        lo, hi = lo * np.float32(clip_ratio), hi * np.float32(clip_ratio)
    return qparams_from_range(lo, hi, fmt, symmetric=symmetric, convention=convention)


# ---------------------------------------------------------------------------------------------
# quantize / dequantize
# ---------------------------------------------------------------------------------------------
def quantize(
    x: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    fmt: str | Format,
    block_size: Sequence[int] | None = None,
    convention: str | None = None,
) -> np.ndarray:
    """codes = clamp(round_half_even(x / scale) + zero, qmin, qmax), int8/uint8.

    ``convention="torch"`` rounds x · float32(1 / scale) instead, as torch's quantize and
    fake_quantize kernels do (the zero is added to the rounded float, then clamped).

    With ``block_size``, scale/zero have shape x.shape // block_size. With ``block_size=None``
    they are broadcast against x as-is (e.g. GPTQ's one column ``w[:, j]`` with scale (O,)).

    >>> quantize(np.array([0.5, 1.5, 2.5, 100.0]), np.float32(1.0), 0, "int4")
    array([0, 2, 2, 7], dtype=int8)
    """
    f = _int_format(fmt)
    if convention is not None:
        check_option(convention, "convention", CONVENTIONS)
    x = as_float32(x)
    scale, zero = _check_scale_zero(scale, zero)

    def scaled(v: np.ndarray, s: np.ndarray) -> np.ndarray:
        if convention == "torch":  # x · (1/s): inv_scale = 1.0f / scale, then a multiply
            with np.errstate(over="ignore"):
                return v * (np.float32(1.0) / s)
        return v / s

    with np.errstate(over="ignore", invalid="ignore"):
        if block_size is None:
            _check_broadcast(x.shape, scale, zero)
            q = np.rint(scaled(x, scale)) + zero
        else:
            block = _check_params(x.shape, scale, block_size)
            xb = x.reshape(_blocked_shape(x.shape, block))  # (n0, b0, n1, b1, …)
            zb = _per_block(np.broadcast_to(zero, scale.shape), block)
            q = (np.rint(scaled(xb, _per_block(scale, block))) + zb).reshape(x.shape)
    return np.clip(q, f.qmin, f.qmax).astype(code_dtype(f))


def _check_scale_zero(scale, zero) -> tuple[np.ndarray, np.ndarray]:
    """scale: positive finite float32; zero: finite and integer-valued (x = 0 must be exact)."""
    with np.errstate(over="ignore"):
        scale = np.asarray(scale, dtype=np.float32)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError("scale must be positive and finite; use choose_qparams to get one")
    zero = np.asarray(zero)
    if zero.dtype.kind not in "iuf" or (
        zero.dtype.kind == "f" and not np.all(np.isfinite(zero) & (zero == np.rint(zero)))
    ):
        raise ValueError(
            f"zero must be integer-valued and finite (dtype {zero.dtype}); use choose_qparams "
            "to get one, or np.rint(zero)"
        )
    return scale, zero


def _check_broadcast(x_shape, scale: np.ndarray, zero: np.ndarray) -> None:
    try:
        ok = np.broadcast_shapes(tuple(x_shape), scale.shape, zero.shape) == tuple(x_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"scale {scale.shape} and zero {zero.shape} do not broadcast against x "
            f"{tuple(x_shape)}; pass block_size, or per-row parameters of shape (O, 1)"
        )


def dequantize(
    codes: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    block_size: Sequence[int] | None = None,
) -> np.ndarray:
    """x̂ = (codes − zero) · scale in float32.

    >>> codes, scale = np.array([[-50, 25, 127]], dtype=np.int8), np.array([[0.02]], np.float32)
    >>> dequantize(codes, scale, 0, (1, 3))
    array([[-1.  ,  0.5 ,  2.54]], dtype=float32)
    """
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    scale, zero = _check_scale_zero(scale, zero)
    c = codes.astype(np.float32)
    if block_size is None:
        _check_broadcast(codes.shape, scale, zero)
        return ((c - zero.astype(np.float32)) * scale).astype(np.float32)
    block = _check_params(codes.shape, scale, block_size)
    cb = c.reshape(_blocked_shape(codes.shape, block))  # (n0, b0, n1, b1, …)
    zb = _per_block(np.broadcast_to(zero, scale.shape).astype(np.float32), block)
    return ((cb - zb) * _per_block(scale, block)).reshape(codes.shape).astype(np.float32)


def fake_quantize(
    x: np.ndarray,
    fmt: str | Format,
    block_size: Sequence[int],
    symmetric: bool = True,
    convention: str = "restricted",
    clip_ratio: float = 1.0,
) -> np.ndarray:
    """dequantize(quantize(x)) with min-max parameters: the float tensor the codes stand for.

    >>> fake_quantize(np.array([[0.1, -0.4, 0.7]]), "int2", (1, 3))
    array([[ 0. , -0.7,  0.7]], dtype=float32)
    """
    x = as_float32(x)
    scale, zero = choose_qparams(x, fmt, block_size, symmetric, convention, clip_ratio)
    codes = quantize(x, scale, zero, fmt, block_size, convention=convention)
    return dequantize(codes, scale, zero, block_size)
