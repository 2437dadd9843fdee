"""Affine quantization: conventions of the reference implementations, bad input, granularity."""

import numpy as np
import pytest

from tinyquant.quant import (
    choose_qparams,
    dequantize,
    expand,
    fake_quantize,
    per_channel,
    per_group,
    per_tensor,
    quantize,
)

RNG = np.random.default_rng(0)


def test_restricted_symmetric_int8_uses_amax_over_127_like_onnx():
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    s, z = choose_qparams(x, "int8", per_channel(x.shape))
    amax = np.abs(x).max(axis=1, keepdims=True)
    np.testing.assert_array_equal(s, (amax / np.float32(127)).astype(np.float32))
    assert np.all(z == 0)
    q = quantize(x, s, z, "int8", per_channel(x.shape))
    assert q.min() >= -127 and q.max() <= 127


def test_full_symmetric_int8_uses_amax_over_127_5_like_pytorch():
    x = RNG.standard_normal((1, 64)).astype(np.float32)
    s, _ = choose_qparams(x, "int8", per_tensor(x.shape), convention="full")
    amax = np.abs(x).max()
    assert s[0, 0] == np.float32(np.float64(amax) / 127.5)


def test_asymmetric_zero_point_matches_pytorch_formula():
    x = np.array([[-0.3, 0.1, 2.0, 1.0]], dtype=np.float32)
    s, z = choose_qparams(x, "uint8", per_tensor(x.shape), symmetric=False)
    expect_s = np.float32((np.float64(np.float32(2.0)) - np.float32(-0.3)) / 255)
    assert s[0, 0] == expect_s
    assert z[0, 0] == 0 - np.rint(np.float32(-0.3) / expect_s)


def test_gptq_symmetric_convention_puts_zero_at_half_range():
    x = np.array([[-1.0, 0.25, 0.5, 0.75]], dtype=np.float32)
    s, z = choose_qparams(x, "uint4", (1, 4), convention="gptq")
    assert z[0, 0] == 8 and s[0, 0] == np.float32(2.0 / 15)
    q = quantize(x, s, z, "uint4", (1, 4))
    # GPTQ quant.py: q = clamp(round(x / scale) + zero, 0, maxq)
    np.testing.assert_array_equal(q, np.clip(np.rint(x / s) + 8, 0, 15))


def test_gptq_convention_keeps_xmin_zero_for_nonnegative_rows_like_the_reference():
    x = np.array([[0.0, 0.5, 1.0, 1.5]], dtype=np.float32)
    s, z = choose_qparams(x, "uint4", (1, 4), convention="gptq")
    assert s[0, 0] == np.float32(1.5 / 15)


def test_per_group_scales_have_one_entry_per_group():
    x = RNG.standard_normal((3, 128)).astype(np.float32)
    s, z = choose_qparams(x, "int4", per_group(x.shape, 32))
    assert s.shape == (3, 4) and z.shape == (3, 4)
    np.testing.assert_array_equal(
        s[:, 1], (np.abs(x[:, 32:64]).max(axis=1) / np.float32(7)).astype(np.float32)
    )


def test_blockwise_and_broadcast_quantize_agree_via_expand():
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    block = per_group(x.shape, 16)
    s, z = choose_qparams(x, "uint4", block, symmetric=False)
    q1 = quantize(x, s, z, "uint4", block)
    q2 = quantize(x, expand(s, block, x.shape), expand(z, block, x.shape), "uint4")
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(
        dequantize(q1, s, z, block),
        dequantize(q2, expand(s, block, x.shape), expand(z, block, x.shape)),
    )


def test_quantize_rounds_half_to_even():
    q = quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5]), np.float32(1), 0, "int8")
    np.testing.assert_array_equal(q, [0, 2, 2, 0, -2])


@pytest.mark.parametrize("c", [0.0, 1.0, -3.7, 1e-30, 6.1e4, 0.1])
@pytest.mark.parametrize(
    "sym,fmt",
    [(True, "int8"), (True, "int4"), (False, "uint4"), (False, "uint8"), (True, "ternary")],
)
def test_constant_blocks_reconstruct_exactly(c, sym, fmt):
    x = np.full((2, 8), c, dtype=np.float32)
    np.testing.assert_array_equal(fake_quantize(x, fmt, (1, 8), symmetric=sym), x)


def test_nan_is_rejected_with_count_and_first_index():
    x = np.zeros((3, 4), dtype=np.float32)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 non-finite values \(1 NaN, 1 Inf\).*\(1, 2\)"):
        choose_qparams(x, "int8", (1, 4))


def test_integer_input_is_rejected():
    with pytest.raises(ValueError, match="dtype int64"):
        choose_qparams(np.arange(8), "int8", (8,))


def test_block_of_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match="one block length per axis"):
        choose_qparams(np.zeros((2, 8), np.float32), "int8", (8,))


def test_unknown_format_lists_valid_names():
    with pytest.raises(ValueError, match="valid formats are: int8"):
        choose_qparams(np.zeros((2, 8), np.float32), "int5", (1, 8))


def test_unsigned_symmetric_without_gptq_convention_is_rejected():
    with pytest.raises(ValueError, match="convention='gptq'"):
        choose_qparams(np.ones((2, 8), np.float32), "uint4", (1, 8))


def test_float_format_is_rejected_by_the_affine_quantizer():
    with pytest.raises(ValueError, match="integer format"):
        choose_qparams(np.ones((2, 8), np.float32), "nf4", (1, 8))


def test_group_that_does_not_divide_suggests_divisors():
    with pytest.raises(ValueError, match="use a divisor such as"):
        per_group((4, 100), 32)


def test_scale_shape_mismatch_is_rejected():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="needs"):
        quantize(x, np.ones((2, 2), np.float32), 0, "int8", (1, 8))


def test_float64_values_beyond_float32_range_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="beyond the float32 range"):
        choose_qparams(np.array([[1e39, 1.0]]), "int8", (1, 2))
