"""Bad input gets a one-line ValueError/TypeError naming the argument — never a hang, a silent
wrong answer or numpy's message (issue 10, outside the kernels). One property per test."""

import time

import numpy as np
import pytest

from tinyquant.algos import (
    RandomHadamard,
    awq_fake_quantize,
    awq_quantize_tensor,
    fake_quantize_rows,
    gptq_quantize,
    hadamard_transform,
    minmax_qparams,
    search_clip,
    search_scale,
    smooth_scales,
    static_act_scale,
)
from tinyquant.quant import (
    KLObserver,
    MinMaxObserver,
    MSEObserver,
    QTensor,
    check_block_size,
    dequantize_gguf,
    get_format,
    per_group,
    quantize,
    quantize_codebook,
    quantize_gguf,
    to_signed,
)
from tinyquant.quant.checks import check_int, divisors_near


def one_line_error(fn, *args, match=None, **kwargs):
    """Call fn; require a ValueError/TypeError with a one-line message (matching ``match``)."""
    with pytest.raises((ValueError, TypeError)) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    if match is not None:
        assert match in msg, msg
    return msg


# -- hangs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda: per_group((4, 10**10), 3),
        lambda: per_group((4, 10**30), 7),
        lambda: check_block_size((4, 10**10), (1, 3)),
        lambda: QTensor(
            np.zeros((4, 1), np.uint8),
            np.ones((4, 1), np.float32),
            None,
            get_format("int8"),
            (1, 3),
            (4, 10**10),
        ),  # fmt: skip
        lambda: KLObserver(bins=200_000),
        lambda: MSEObserver(steps=10**9),
        lambda: RandomHadamard(2**40),
    ],
)
def test_size_arguments_are_refused_within_a_second_however_large(call):
    t0 = time.perf_counter()
    one_line_error(call)
    assert time.perf_counter() - t0 < 1.0


def test_divisor_hints_are_the_divisors_nearest_the_request():
    assert divisors_near(96, 64) == [32, 48, 96]
    n = 2**5 * 3**3 * 7
    brute = sorted(
        sorted([d for d in range(1, n + 1) if n % d == 0], key=lambda d: (abs(d - 50), -d))[:3]
    )
    assert divisors_near(n, 50) == brute


# -- sizes are integers, never truncated -----------------------------------------------------
@pytest.mark.parametrize("bad", [32.9, 32.0, True, "32", None, 0, -32])
def test_group_sizes_that_are_not_positive_integers_are_refused_not_truncated(bad):
    one_line_error(per_group, (4, 64), bad, match="group_size")


def test_check_int_accepts_numpy_integers_and_refuses_bools():
    assert check_int(np.int32(7), "n") == 7
    one_line_error(check_int, np.bool_(True), "n", match="n must be an integer")


# -- affine / pack ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scale,zero",
    [(np.inf, 0), (np.nan, 0), (0.0, 0), (-1.0, 0), (1.0, np.nan), (1.0, 0.5), (1.0, np.inf)],
)
def test_quantize_refuses_infinite_scales_and_nan_or_fractional_zeros(scale, zero):
    one_line_error(quantize, np.ones(4, np.float32), np.float32(scale), zero, "int8")


def test_quantize_without_block_size_refuses_parameters_that_do_not_broadcast():
    one_line_error(quantize, np.ones((2, 4)), np.ones(3, np.float32), 0, "int8", match="broadcast")


def test_to_signed_refuses_codes_outside_the_unsigned_range():
    one_line_error(to_signed, np.array([200]), 4, match="[0, 15]")
    assert to_signed(np.array([0, 15], np.uint8), 4).tolist() == [-8, 7]


def test_packing_bits_must_be_an_integer_width():
    one_line_error(to_signed, np.array([1]), 4.0, match="bits")


# -- codebook / GGUF --------------------------------------------------------------------------
def test_double_quantized_nf4_never_flips_the_sign_of_a_small_block():
    x = np.ones((3, 64), np.float32)
    x[-1], x[0] = 3.0, 0.003  # the 8-bit code of absmax − mean overshoots below 0 for row 0
    deq = quantize_codebook(x, "nf4", double_quant=True).dequantize()
    assert np.all(deq >= 0)


def test_double_quantized_nf4_of_finite_values_near_float32_max_is_finite():
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    x[:, 0] = np.float32([3e38, 1e38, 2e38, 3.3e38])
    deq = quantize_codebook(x, "nf4", double_quant=True).dequantize()
    assert np.isfinite(deq).all()
    assert np.abs(deq[:, 0] - x[:, 0]).max() / 3e38 < 0.05


@pytest.mark.parametrize("kind", ["q8_0", "q4_0", "q4_1"])
def test_gguf_blocks_whose_fp16_scale_overflows_are_refused(kind):
    one_line_error(quantize_gguf, np.full((1, 32), 1e7, np.float32), kind, match="fp16")


def test_gguf_blocks_whose_fp16_scale_underflows_warn_that_they_decode_to_zero():
    x = np.full((1, 32), 1e-9, np.float32)
    with pytest.warns(RuntimeWarning, match="decode to zeros"):
        b = quantize_gguf(x, "q8_0")
    assert np.all(dequantize_gguf(b, "q8_0", 32) == 0)


@pytest.mark.parametrize("call", [
    lambda e: quantize_gguf(e, "q8_0"),
    lambda e: MinMaxObserver().observe(e),
    lambda e: KLObserver().observe(e),
    lambda e: hadamard_transform(e),
    lambda e: smooth_scales(e[:, 0], [np.ones((2, 0))]),
    lambda e: search_scale(e[:, 0], [np.ones((2, 0))], lambda w: w[0], lambda w: w),
])  # fmt: skip
def test_empty_arrays_are_named_not_numpys_zero_size_message(call):
    msg = one_line_error(call, np.zeros((0, 32), np.float32))
    assert "zero-size" not in msg and "empty" in msg


# -- observers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,name",
    [(lambda: MSEObserver(steps=0), "steps"), (lambda: KLObserver(bins=0), "bins"),
     (lambda: KLObserver(bins=64.0), "bins"), (lambda: MinMaxObserver(convention="x"),
     "convention"), (lambda: MinMaxObserver(axis=0), "axis")],
)  # fmt: skip
def test_observer_options_are_checked_when_it_is_built(make, name):
    one_line_error(make, match=name)


# -- GPTQ / AWQ / qgrid -----------------------------------------------------------------------
W16 = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
H16 = np.eye(16)


def _with(a, i, v):
    a = a.copy()
    a.flat[i] = v
    return a


@pytest.mark.parametrize("W,H,name", [(_with(W16, 5, np.nan), H16, "W"),
                                       (W16, _with(H16, 17, np.inf), "H"),
                                       (W16[0], H16, "W"), (W16, H16[:8, :8], "H")])  # fmt: skip
def test_gptq_refuses_non_finite_or_misshapen_w_and_h(W, H, name):
    one_line_error(gptq_quantize, W, H, match=name)


@pytest.mark.parametrize("bits", [1, 5, 7, 9, 3.5, True])
def test_gptq_and_awq_bits_are_widths_of_the_unsigned_formats(bits):
    one_line_error(gptq_quantize, W16, H16, bits=bits, match="bits")
    one_line_error(awq_fake_quantize, W16, bits, None, match="bits")
    one_line_error(minmax_qparams, W16, bits, False, match="bits")


def test_gptq_refuses_an_unknown_group_params_from():
    one_line_error(gptq_quantize, W16, H16, group_params_from="bogus", match="group_params_from")


@pytest.mark.parametrize("g", [0, -4, 3, 4.0])
def test_group_sizes_in_the_algorithms_are_checked_divisors(g):
    one_line_error(gptq_quantize, W16, H16, group_size=g, match="group_size")
    one_line_error(fake_quantize_rows, W16, 4, g, match="group_size")
    one_line_error(awq_quantize_tensor, W16, 4, g, match="group_size")


def test_awq_and_qgrid_refuse_nan_weights():
    one_line_error(awq_fake_quantize, _with(W16, 3, np.nan), 4, None, match="W")
    one_line_error(search_clip, W16, np.full((8, 16), np.nan), 4, None, match="x")


def test_awq_keeps_a_small_constant_group_exact():
    out = awq_fake_quantize(np.full((1, 32), 0.003), 4, None)
    assert np.array_equal(out, np.full((1, 32), np.float32(0.003)))


# -- SmoothQuant / rotation -------------------------------------------------------------------
def test_smoothquant_refuses_nan_activations_and_weights():
    one_line_error(smooth_scales, np.array([1.0, np.nan]), [np.ones((2, 2))], match="act_max")
    one_line_error(smooth_scales, np.ones(2), [np.full((2, 2), np.inf)], match="weights[0]")
    one_line_error(smooth_scales, np.ones(3), [np.ones((2, 2))], match="weights[0]")
    one_line_error(static_act_scale, np.inf, match="act_max_tensor")


@pytest.mark.parametrize("n", [0, 4.0, "64", 20])
def test_random_hadamard_needs_an_integer_order_with_a_hadamard_matrix(n):
    one_line_error(RandomHadamard, n, match="n" if n != 20 else "Hadamard")


def test_hadamard_transform_refuses_nan_and_inf():
    one_line_error(hadamard_transform, np.array([1.0, np.nan, 0.0, 0.0]), match="x")


def test_hadamard_transform_near_float32_max_matches_float64():
    x = (np.random.default_rng(0).standard_normal((3, 64)) * 1e37).astype(np.float32)
    y = hadamard_transform(x)
    ref = hadamard_transform(x.astype(np.float64))
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_hadamard_transform_that_truly_overflows_is_refused():
    one_line_error(hadamard_transform, np.full((1, 64), 3e38, np.float32), match="range")


def test_rotation_refuses_inputs_of_the_wrong_width():
    one_line_error(RandomHadamard(64).apply, np.ones((2, 32)), match="64")


# -- generate ---------------------------------------------------------------------------------
def test_a_tiny_temperature_samples_greedily_instead_of_nan():
    from tinyquant.llm.generate import generate
    from tinyquant.llm.model import Config, init_params

    cfg = Config.tiny()
    p = init_params(cfg, seed=1)
    assert generate(p, cfg, "ab", 8, temperature=1e-320) == generate(p, cfg, "ab", 8, 1e-9)
    for bad in (np.inf, np.nan, 0.0):
        one_line_error(generate, p, cfg, "ab", 4, temperature=bad, match="temperature")
    one_line_error(generate, p, cfg, "ab", 2.5, match="n must be an integer")
