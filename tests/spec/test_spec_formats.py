"""Float casts and codebooks, against their oracles (ml_dtypes, brute-force nearest code)."""

import ml_dtypes
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyquant.quant import decode, encode, encode_codebook, get_format

ORACLE = {
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}
FLOATS = st.sampled_from(list(ORACLE))


def oracle_bits(x, name):
    with np.errstate(all="ignore"):
        y = x.astype(ORACLE[name])
    return y.view(np.uint16 if y.dtype.itemsize == 2 else np.uint8)


@given(hnp.arrays(np.uint32, st.integers(1, 64)), FLOATS)
def test_float_casts_equal_ml_dtypes_bit_for_bit_on_any_float32_bit_pattern(u, name):
    x = u.view(np.float32)
    np.testing.assert_array_equal(encode(x, name), oracle_bits(x, name))


@given(
    hnp.arrays(np.float32, st.integers(1, 64), elements=st.floats(width=32, allow_nan=True)), FLOATS
)
def test_float_casts_equal_ml_dtypes_bit_for_bit_on_hypothesis_floats(x, name):
    np.testing.assert_array_equal(encode(x, name), oracle_bits(x, name))


@given(st.data(), FLOATS)
def test_float_casts_equal_ml_dtypes_on_midpoints_between_neighbouring_codes(data, name):
    f = get_format(name)
    code = data.draw(st.integers(0, 2**f.bits - 2))
    a, b = decode(np.array([code, code + 1]), name).astype(np.float64)
    assume(np.isfinite(a) and np.isfinite(b) and np.sign(a) == np.sign(b))
    x = np.array([(a + b) / 2], np.float32)
    np.testing.assert_array_equal(encode(x, name), oracle_bits(x, name))


@given(hnp.arrays(np.uint16, st.integers(1, 64)), FLOATS)
def test_decode_then_encode_returns_every_non_nan_code(u, name):
    f = get_format(name)
    codes = (u.astype(np.int64) % (2**f.bits)).astype(np.uint16 if f.bits == 16 else np.uint8)
    vals = decode(codes, name)
    keep = ~np.isnan(vals)
    np.testing.assert_array_equal(encode(vals, name)[keep], codes[keep])


@given(
    hnp.arrays(np.float32, st.integers(1, 64), elements=st.floats(-1, 1, width=32)),
    st.sampled_from(["nf4", "fp4_bnb"]),
)
def test_nf4_and_fp4_pick_the_nearest_code(y, name):
    grid = np.array(get_format(name).grid, np.float64)
    chosen = grid[encode_codebook(y, name)]
    dist = np.abs(y.astype(np.float64)[:, None] - grid[None, :])
    # bitsandbytes compares against float32 midpoints: allow the float32 rounding of a midpoint
    assert np.all(np.abs(y - chosen) <= dist.min(axis=1) + 1e-7)


@given(st.integers(0, 14))
def test_an_exact_nf4_midpoint_goes_to_the_lower_code(i):
    grid = np.array(get_format("nf4").grid, np.float64)
    mid = np.float32((grid[i] + grid[i + 1]) / 2)
    assert encode_codebook(np.array([mid]), "nf4")[0] == i
    assert encode_codebook(np.array([np.nextafter(mid, np.float32(2))]), "nf4")[0] == i + 1
