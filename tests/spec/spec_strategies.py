"""Hypothesis strategies shared by the spec: tensors with outliers, constants, tiny and huge values."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

INT_FORMATS = ["int8", "int4", "int3", "int2", "ternary"]
UINT_FORMATS = ["uint8", "uint4", "uint3", "uint2"]
EPS32 = float(np.finfo(np.float32).eps)
TINY = float(np.finfo(np.float32).smallest_subnormal)


@st.composite
def tensors(draw, max_rows=4, group_sizes=(1, 2, 4, 8, 16), max_groups=4, allow_subnormal=True):
    """(x, group_size): a float32 (rows, groups·g) tensor of one of several characters."""
    rows = draw(st.integers(1, max_rows))
    g = draw(st.sampled_from(group_sizes))
    cols = g * draw(st.integers(1, max_groups))
    kind = draw(st.sampled_from(["gaussian", "any", "constant", "outlier", "skewed", "sparse"]))
    magnitude = np.float32(2.0 ** draw(st.integers(-100, 100)))
    if kind == "constant":
        c = draw(st.floats(-1, 1, width=32, allow_subnormal=False))
        x = np.full((rows, cols), np.float32(c) * magnitude, np.float32)
    elif kind == "any":  # hypothesis' own float32 values: subnormals, huge, ±0
        elements = st.floats(-(2.0**100), 2.0**100, width=32, allow_subnormal=allow_subnormal)
        x = draw(hnp.arrays(np.float32, (rows, cols), elements=elements))
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        if kind == "outlier":
            x.flat[rng.integers(x.size)] *= np.float32(rng.choice([30.0, 1000.0]))
        elif kind == "skewed":  # post-SwiGLU-like: mostly small, a long positive tail
            x = (x * (1 / (1 + np.exp(-x)))).astype(np.float32)
        elif kind == "sparse":
            x[rng.random(x.shape) < 0.7] = 0
        with np.errstate(under="ignore", over="ignore"):
            x = (x * magnitude).astype(np.float32)
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, posinf=1e30, neginf=-1e30).astype(np.float32)
    return x, g


def blocks(x, g):
    """The three granularities of a (rows, cols) tensor, finest first."""
    return {"per_group": (1, g), "per_channel": (1, x.shape[1]), "per_tensor": x.shape}


def roundtrip_tolerance(x, step):
    """Half a step plus float32 rounding in x / scale and in (code − zero) · scale."""
    return step / 2 * (1 + 4 * EPS32) + 4 * EPS32 * np.abs(x) + TINY
