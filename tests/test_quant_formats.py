"""The format table and the granularity helpers agree with their definitions and references."""

import ml_dtypes
import numpy as np
import pytest

from tinyquant.quant import (
    FORMATS,
    get_format,
    num_blocks,
    per_channel,
    per_group,
    per_tensor,
    per_token,
)
from tinyquant.quant.formats import DYNAMIC8_CODE

REQUIRED = ["int8", "uint8", "int4", "uint4", "int3", "uint3", "int2", "uint2", "ternary",
            "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "nf4"]  # fmt: skip


def test_every_required_format_is_in_the_table():
    assert set(REQUIRED) <= set(FORMATS)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_integer_ranges_are_twos_complement_and_unsigned(bits):
    s, u = get_format(f"int{bits}"), get_format(f"uint{bits}")
    assert (s.qmin, s.qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert (u.qmin, u.qmax) == (0, 2**bits - 1)
    assert s.storage_bits == u.storage_bits == bits


def test_ternary_is_minus_one_zero_one_in_two_bits():
    t = get_format("ternary")
    assert (t.qmin, t.qmax, t.storage_bits, t.levels) == (-1, 1, 2, 3)


@pytest.mark.parametrize(
    "name,dtype",
    [
        ("fp8_e4m3", ml_dtypes.float8_e4m3fn),
        ("fp8_e5m2", ml_dtypes.float8_e5m2),
        ("fp4_e2m1", ml_dtypes.float4_e2m1fn),
    ],
)
def test_small_float_grids_equal_every_finite_value_of_ml_dtypes(name, dtype):
    bits = get_format(name).bits
    vals = np.arange(2**bits, dtype=np.uint8).view(dtype).astype(np.float64)
    expected = np.unique(vals[np.isfinite(vals)])
    np.testing.assert_array_equal(np.array(get_format(name).grid), expected)
    assert get_format(name).max_finite == float(ml_dtypes.finfo(dtype).max)


def test_fp16_and_bf16_max_finite_match_their_dtypes():
    assert get_format("fp16").max_finite == float(np.finfo(np.float16).max)
    assert get_format("bf16").max_finite == float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)


def test_nf4_code_is_sorted_symmetric_in_its_ends_and_contains_zero():
    code = np.array(get_format("nf4").grid)
    assert np.all(np.diff(code) > 0) and code[0] == -1 and code[-1] == 1 and code[7] == 0


def test_dynamic_map_has_256_sorted_entries_in_minus_one_to_one():
    code = np.array(DYNAMIC8_CODE)
    assert code.size == 256 and np.all(np.diff(code) >= 0) and code.max() == 1 and code.min() > -1


def test_format_is_frozen():
    with pytest.raises(AttributeError):
        get_format("int8").bits = 4


def test_granularity_helpers_return_the_documented_blocks():
    shape = (8, 128)
    assert per_tensor(shape) == (8, 128)
    assert per_channel(shape) == (1, 128)
    assert per_group(shape, 32) == (1, 32)
    assert per_token((5, 64)) == (1, 64)
    assert num_blocks(shape, per_group(shape, 32)) == (8, 4)


def test_group_size_must_be_positive():
    with pytest.raises(ValueError, match=">= 1"):
        per_group((4, 8), 0)
