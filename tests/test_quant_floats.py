"""Float rounding from scratch agrees bit for bit with numpy float16 and ml_dtypes."""

import ml_dtypes
import numpy as np
import pytest

from tinyquant.quant import get_format
from tinyquant.quant.floats import FLOAT_FORMATS, decode, encode, round_to_format

ORACLE = {
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}


def oracle_bits(x, name):
    t = ORACLE[name]
    with np.errstate(all="ignore"):
        y = np.asarray(x, np.float32).astype(t)
    return y.view(np.uint16 if np.dtype(t).itemsize == 2 else np.uint8)


def all_codes(name):
    bits = get_format(name).bits
    return np.arange(2**bits, dtype=np.uint16 if bits == 16 else np.uint8)


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_decode_equals_the_oracle_on_every_code(name):
    codes = all_codes(name)
    ours = decode(codes, name)
    theirs = (
        codes.view(ORACLE[name]).astype(np.float32)
        if name != "fp4_e2m1"
        else (codes.astype(np.uint8).view(ORACLE[name]).astype(np.float32))
    )
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_encode_equals_the_oracle_on_every_midpoint_and_its_neighbours(name):
    vals = np.unique(decode(all_codes(name), name).astype(np.float64))
    vals = vals[np.isfinite(vals)]
    mid = ((vals[:-1] + vals[1:]) / 2).astype(np.float32)  # exact in float32 for these formats
    assert np.array_equal(mid.astype(np.float64), (vals[:-1] + vals[1:]) / 2)
    x = np.concatenate(
        [mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf), vals.astype(np.float32)]
    )
    np.testing.assert_array_equal(encode(x, name), oracle_bits(x, name))


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_encode_equals_the_oracle_on_random_float32_bit_patterns(name):
    rng = np.random.default_rng(7)
    u = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array(
        [
            0,
            0x80000000,
            1,
            0x807FFFFF,
            0x7F7FFFFF,
            0xFF7FFFFF,
            0x7F800000,
            0xFF800000,
            0x7FC00000,
            0xFFC00000,
            0x7F800001,
            0x7FA00000,
        ],
        dtype=np.uint32,
    )
    x = np.concatenate([u, special]).view(np.float32)
    np.testing.assert_array_equal(encode(x, name), oracle_bits(x, name))


def test_e4m3_saturate_mode_clamps_overflow_and_inf_to_448():
    x = np.array([500.0, -1e30, np.inf, -np.inf, np.nan], np.float32)
    out = decode(encode(x, "fp8_e4m3", overflow="saturate"), "fp8_e4m3")
    np.testing.assert_array_equal(out[:4], [448, -448, 448, -448])
    assert np.isnan(out[4])


def test_e4m3_nan_mode_turns_overflow_into_nan():
    assert np.isnan(round_to_format(np.array([480.0], np.float32), "fp8_e4m3")[0])


def test_a_value_that_overflows_fp16_is_finite_in_bf16():
    x = np.array([70000.0], np.float32)
    assert np.isinf(round_to_format(x, "fp16")[0])
    assert round_to_format(x, "bf16")[0] == 70144.0


def test_inf_overflow_mode_is_refused_for_formats_without_inf():
    with pytest.raises(ValueError, match="not available"):
        encode(np.ones(2, np.float32), "fp8_e4m3", overflow="inf")


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1"])
def test_float64_input_is_rounded_once_to_the_nearest_value(fmt):
    """Oracle: the nearest representable value, found by exact search over the format's
    values (float64 distances are exact here); ties go to the even code."""
    vals = decode(all_codes(fmt), fmt).astype(np.float64)
    vals = np.unique(vals[np.isfinite(vals)])  # sorted
    rng = np.random.default_rng(0)
    mids = rng.choice((vals[:-1] + vals[1:]) / 2, size=min(3000, vals.size - 1), replace=False)
    top = vals[-1]
    x = np.concatenate(
        [
            mids + np.abs(mids) * 2.0**-40,
            mids - np.abs(mids) * 2.0**-40,
            rng.uniform(-top, top, 2000),
        ]
    )  # just off the ties: float32 would tie
    x = x[np.abs(x) < top]
    got = round_to_format(x, fmt).astype(np.float64)
    i = np.clip(np.searchsorted(vals, x), 1, vals.size - 1)
    nearest = np.minimum(np.abs(vals[i] - x), np.abs(vals[i - 1] - x))
    assert np.array_equal(np.abs(got - x), nearest)
