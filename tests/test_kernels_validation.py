"""Bad inputs raise ValueError before entering Numba — never a crash or a silent wrong answer."""

import dataclasses
from functools import partial

import numpy as np
import pytest

from tinyquant.kernels import numba_int, reference, weight_only
from tinyquant.kernels.checks import MAX_K
from tinyquant.quant.pack import unpack

GEMMS = [reference.int8_matmul, numba_int.int8_matmul]
W8A8 = [reference.w8a8_linear, numba_int.w8a8_linear]
W4 = [
    partial(reference.weight_only_linear, bits=4),
    partial(weight_only.weight_only_linear, bits=4),
]


def _w4(T=2, O=8, I=64, g=32):
    x = np.ones((T, I), np.float32)
    return (
        x,
        np.zeros((O, I // 2), np.uint8),
        np.ones((O, I // g), np.float32),
        np.zeros((O, I // g), np.float32),
        g,
    )


@pytest.mark.parametrize("fn", GEMMS)
@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((2, 4), np.int16), np.zeros((3, 4), np.int8), "dtype"),
        (np.zeros((2, 4), np.int8), np.zeros((3, 5), np.int8), "columns"),
        (np.zeros((4, 2), np.int8).T, np.zeros((3, 4), np.int8), "contiguous"),
        (np.zeros(4, np.int8), np.zeros((3, 4), np.int8), "axes"),
        (np.zeros((1, MAX_K + 1), np.int8), np.zeros((1, MAX_K + 1), np.int8), "overflow"),
    ],
)
def test_bad_gemm_operands_raise_value_error(fn, a, b, match):
    with pytest.raises(ValueError, match=match):
        fn(a, b)


@pytest.mark.parametrize("fn", W8A8)
def test_w8a8_rejects_nan_wrong_dtype_and_mismatched_shapes(fn):
    w, s = np.ones((3, 4), np.int8), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        fn(np.array([[1, np.nan, 0, 0]], np.float32), w, s)
    with pytest.raises(ValueError, match="dtype"):
        fn(np.ones((1, 4), np.float64), w, s)
    with pytest.raises(ValueError, match="features"):
        fn(np.ones((1, 5), np.float32), w, s)
    with pytest.raises(ValueError, match="w_scale"):
        fn(np.ones((1, 4), np.float32), w, np.ones(2, np.float32))


@pytest.mark.parametrize("fn", W4)
def test_weight_only_rejects_infinite_activations(fn):
    x, p, s, z, g = _w4()
    x[1, 3] = np.inf
    with pytest.raises(ValueError, match=r"non-finite.*\(1, 3\)"):
        fn(x, p, s, z, g)


@pytest.mark.parametrize("fn", W4)
def test_weight_only_rejects_a_group_size_that_does_not_match_the_scales(fn):
    x, p, s, z, _ = _w4()
    with pytest.raises(ValueError, match="group"):
        fn(x, p, s, z, 16)  # scales were made for group 32
    with pytest.raises(ValueError, match="does not divide"):
        fn(x, p, s, z, 48)


@pytest.mark.parametrize("fn", W4)
def test_weight_only_rejects_packed_data_of_the_wrong_width(fn):
    x, p, s, z, g = _w4()
    with pytest.raises(ValueError, match="bytes per row"):
        fn(x, p[:, :-1].copy(), s, z, g)
    with pytest.raises(ValueError, match="bytes per row"):
        fn(np.ones((2, 32), np.float32), p, s[:, :1].copy(), z[:, :1].copy(), 32)


@pytest.mark.parametrize("fn", W4)
def test_weight_only_rejects_non_contiguous_activations_and_wrong_dtypes(fn):
    x, p, s, z, g = _w4(I=64)
    wide = np.ones((2, 128), np.float32)
    with pytest.raises(ValueError, match="contiguous"):
        fn(wide[:, ::2], p, s, z, g)
    with pytest.raises(ValueError, match="dtype"):
        fn(x, p.astype(np.int8), s, z, g)
    with pytest.raises(ValueError, match="dtype"):
        fn(x, p, s.astype(np.float16), z, g)
    with pytest.raises(ValueError, match="zero"):
        fn(x, p, s, z[:3].copy(), g)


def test_packed_linear_rejects_inputs_of_the_wrong_width():
    x, p, s, z, g = _w4()
    pw = weight_only.prepack(p, s, z, g, 4)
    with pytest.raises(ValueError, match="features"):
        weight_only.packed_linear(np.ones((1, 32), np.float32), pw)
    with pytest.raises(ValueError, match="prepack"):
        weight_only.packed_linear(x, p)


def _big_problem(rng, T, bits, x_scale):
    O, I, g = 70, 128, 64
    p = rng.integers(0, 256, (O, I * bits // 8), dtype=np.uint8)
    s = (rng.random((O, I // g)) * 0.01 + 0.001).astype(np.float32)
    z = np.full((O, I // g), 1, np.float32)
    x = (rng.standard_normal((T, I)) * x_scale).astype(np.float32)
    return x, p, s, z, g


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("T", [1, weight_only.DEQUANT_MIN_TOKENS + 4])
def test_weight_only_kernel_is_finite_where_the_reference_is_for_activations_near_float32_max(
    bits, T
):
    rng = np.random.default_rng(bits + T)
    # Σ q·x over one group alone exceeds 3.4e38; x W_refᵀ does not
    x, p, s, z, g = _big_problem(rng, T, bits, {8: 1e36, 4: 1e37, 2: 4e37}[bits])
    y_ref = reference.weight_only_linear(x, p, s, z, g, bits)
    assert np.all(np.isfinite(y_ref))
    y = weight_only.weight_only_linear(x, p, s, z, g, bits)
    # FLOAT_RTOL · |x| (|W| + |s·z|)ᵀ, in float64 so that the bound itself cannot overflow
    w = reference.dequantize_groups(unpack(p, bits, x.shape[1]), s, z, g).astype(np.float64)
    sz = np.repeat(s * z, g, axis=1).astype(np.float64)
    tol = reference.FLOAT_RTOL * (np.abs(x.astype(np.float64)) @ (np.abs(w) + sz).T)
    assert np.all(np.abs(y.astype(np.float64) - y_ref) <= tol)


@pytest.mark.parametrize("T", [1, weight_only.DEQUANT_MIN_TOKENS + 4])
def test_scaling_x_by_a_power_of_two_scales_y_exactly_even_across_the_overflow_guard(T):
    rng = np.random.default_rng(T)
    x, p, s, z, g = _big_problem(rng, T, 4, 1.0)
    pw = weight_only.prepack(p, s, z, g, 4)
    k = 123  # x · 2¹²³ ≈ 1e37: the kernel must shift it down internally
    y_big = weight_only.packed_linear(np.ldexp(x, k), pw)
    assert np.array_equal(y_big, np.ldexp(weight_only.packed_linear(x, pw), k))


def test_prepack_refuses_scales_whose_kernel_terms_overflow_float32():
    _, p, s, z, g = _w4()
    s[3, 1] = 1e38  # 15 · s overflows float32 although s itself is finite
    with pytest.raises(ValueError, match=r"scale and zero at row 3, group 1"):
        weight_only.prepack(p, s, z, g, 4)


@pytest.mark.parametrize("fn", W8A8 + [partial(numba_int.w8a8_linear, kernels="portable")])
def test_w8a8_output_is_finite_whenever_the_product_fits_float32(fn):
    x = np.array([[3e38, -1e38]], np.float32)
    w = np.array([[127, 0], [0, 127], [127, 127]], np.int8)
    s_w = np.full(3, 1 / 127, np.float32)
    y = fn(x, w, s_w)
    exact = x.astype(np.float64) @ (w.astype(np.float64) / 127).T  # (1, 3): 3e38, −1e38, 2e38
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, exact, rtol=1e-2)  # activation rounding: ½ step of 127


def test_packed_weights_with_non_finite_scales_cannot_be_built():
    x, p, s, z, g = _w4()
    pw = weight_only.prepack(p, s, z, g, 4)
    bad = pw.scale.copy()
    bad[0, 0, 5] = np.nan
    with pytest.raises(ValueError, match="PackedWeightOnly.scale contains NaN"):
        dataclasses.replace(pw, scale=bad)
    p8 = numba_int.prepack_w8a8(np.ones((3, 4), np.int8), np.ones(3, np.float32), "portable")
    with pytest.raises(ValueError, match="PackedW8A8.scale contains NaN"):
        dataclasses.replace(p8, scale=np.array([1, np.inf, 1], np.float32))


@pytest.mark.parametrize("fn", W4)
def test_fractional_or_boolean_sizes_are_refused_not_truncated(fn):
    x, p, s, z, _ = _w4(I=64, g=64)
    with pytest.raises(ValueError, match="group_size must be an integer"):
        fn(x, p, s, z, 64.0)
    with pytest.raises(ValueError, match="bits must be 8, 4, 3 or 2, got 4.0"):
        fn.func(x, p, s, z, 64, 4.0)
    with pytest.raises(ValueError, match="group_size must be an integer"):
        fn(x[:, :1].copy(), p[:, :1].copy(), s, z, True)
