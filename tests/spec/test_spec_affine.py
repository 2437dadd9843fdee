"""The affine quantizer's specification, one property per test, over generated tensors."""

import re

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from spec_strategies import INT_FORMATS, UINT_FORMATS, blocks, roundtrip_tolerance, tensors

from tinyquant.quant import (
    block_minmax,
    choose_qparams,
    dequantize,
    expand,
    fake_quantize,
    get_format,
    quantize,
)

SCHEMES = st.one_of(
    st.tuples(st.sampled_from(INT_FORMATS), st.just(True), st.sampled_from(["restricted", "full"])),
    st.tuples(
        st.sampled_from(UINT_FORMATS + ["int8", "int4"]), st.just(False), st.just("restricted")
    ),
    st.tuples(st.sampled_from(UINT_FORMATS), st.just(True), st.just("gptq")),
)
GRANULARITY = st.sampled_from(["per_group", "per_channel", "per_tensor"])


def qparams(x, g, scheme, gran):
    fmt, sym, conv = scheme
    block = blocks(x, g)[gran]
    scale, zero = choose_qparams(x, fmt, block, symmetric=sym, convention=conv)
    return fmt, block, scale, zero


@given(tensors(), SCHEMES, GRANULARITY)
def test_roundtrip_error_is_at_most_half_a_step_inside_the_clipping_range(xg, scheme, gran):
    x, g = xg
    fmt, block, scale, zero = qparams(x, g, scheme, gran)
    f = get_format(fmt)
    xq = dequantize(quantize(x, scale, zero, fmt, block), scale, zero, block)
    s, z = expand(scale, block, x.shape), expand(zero, block, x.shape)
    inside = (x >= (f.qmin - z) * s) & (x <= (f.qmax - z) * s)
    err = np.abs(x.astype(np.float64) - xq)
    assert np.all(err[inside] <= roundtrip_tolerance(x, s)[inside])


@given(tensors(), SCHEMES, GRANULARITY)
def test_minmax_ranges_lose_at_most_half_a_step_anywhere_except_gptqs_nonnegative_blocks(
    xg, scheme, gran
):
    x, g = xg
    fmt, block, scale, zero = qparams(x, g, scheme, gran)
    xq = dequantize(quantize(x, scale, zero, fmt, block), scale, zero, block)
    s = expand(scale, block, x.shape)
    ok = np.ones(x.shape, bool)
    if scheme[2] == "gptq" and scheme[1]:  # GPTQ keeps xmin = 0 for blocks without negatives
        lo = expand(
            x.reshape(-1).min() if gran == "per_tensor" else _block_min(x, block), block, x.shape
        )
        ok = lo < 0
    err = np.abs(x.astype(np.float64) - xq)
    assert np.all(err[ok] <= roundtrip_tolerance(x, s)[ok])


def _block_min(x, block):
    r, c = x.shape
    return x.reshape(r // block[0], block[0], c // block[1], block[1]).min(axis=(1, 3))


@given(
    tensors(), st.sampled_from(INT_FORMATS), st.sampled_from(["restricted", "full"]), GRANULARITY
)
def test_symmetric_quantization_maps_zero_to_the_zero_code(xg, fmt, conv, gran):
    x, g = xg
    x = x.copy()
    x[:, 0] = 0.0
    block = blocks(x, g)[gran]
    scale, zero = choose_qparams(x, fmt, block, convention=conv)
    assert np.all(zero == 0)
    q = quantize(x, scale, zero, fmt, block)
    assert np.all(q[:, 0] == 0)
    assert np.all(dequantize(q, scale, zero, block)[:, 0] == 0)


@given(tensors(), st.sampled_from(INT_FORMATS), GRANULARITY)
def test_restricted_symmetric_quantization_commutes_with_negation(xg, fmt, gran):
    x, g = xg
    block = blocks(x, g)[gran]
    s1, z1 = choose_qparams(x, fmt, block)
    s2, z2 = choose_qparams(-x, fmt, block)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(
        quantize(-x, s2, z2, fmt, block), -quantize(x, s1, z1, fmt, block).astype(np.int16)
    )


@given(tensors(), st.sampled_from(UINT_FORMATS + ["int8", "int4"]), GRANULARITY)
def test_the_asymmetric_range_always_contains_zero_exactly(xg, fmt, gran):
    x, g = xg
    x = x.copy()
    x[:, -1] = 0.0
    f = get_format(fmt)
    block = blocks(x, g)[gran]
    scale, zero = choose_qparams(x, fmt, block, symmetric=False)
    assert np.all((zero >= f.qmin) & (zero <= f.qmax))
    xq = fake_quantize(x, fmt, block, symmetric=False)
    assert np.all(xq[:, -1] == 0.0)


@given(tensors(), SCHEMES, GRANULARITY, st.floats(0.05, 1.0))
def test_codes_stay_within_qmin_and_qmax(xg, scheme, gran, clip):
    x, g = xg
    fmt, sym, conv = scheme
    block = blocks(x, g)[gran]
    scale, zero = choose_qparams(x, fmt, block, symmetric=sym, convention=conv, clip_ratio=clip)
    q = quantize(x, scale, zero, fmt, block)
    f = get_format(fmt)
    assert q.min() >= f.qmin and q.max() <= f.qmax


@given(tensors(), SCHEMES, GRANULARITY)
def test_fake_quantize_is_idempotent_with_the_same_parameters(xg, scheme, gran):
    x, g = xg
    fmt, block, scale, zero = qparams(x, g, scheme, gran)
    once = dequantize(quantize(x, scale, zero, fmt, block), scale, zero, block)
    twice = dequantize(quantize(once, scale, zero, fmt, block), scale, zero, block)
    np.testing.assert_array_equal(once, twice)


@given(tensors(), SCHEMES)
def test_quantization_is_monotone_within_a_block(xg, scheme):
    x, g = xg
    x = np.sort(x, axis=1)
    fmt, block, scale, zero = qparams(x, g, scheme, "per_channel")
    q = quantize(x, scale, zero, fmt, block).astype(np.int16)
    assert np.all(np.diff(q, axis=1) >= 0)


@given(tensors(allow_subnormal=False), SCHEMES, GRANULARITY, st.integers(-20, 20))
def test_scaling_x_by_a_power_of_two_scales_the_scale_and_keeps_the_codes(xg, scheme, gran, k):
    x, g = xg
    tiny = np.finfo(np.float32).tiny
    a = np.abs(x[x != 0])
    assume(a.size == 0 or (a.min() >= tiny * 2.0**30 and a.max() <= 2.0**90))
    y = (x * np.float32(2.0**k)).astype(np.float32)
    fmt, block, s1, z1 = qparams(x, g, scheme, gran)
    _, _, s2, z2 = qparams(y, g, scheme, gran)
    lo, hi = block_minmax(x, block)
    live = (lo != 0) | (hi != 0)  # all-zero blocks keep their conventional scale
    assume(s1[live].min(initial=1.0) >= tiny * 2.0**24)  # the scale floor (2^-126) is not active
    np.testing.assert_array_equal(s2[live], (s1 * np.float32(2.0**k))[live])
    np.testing.assert_array_equal(z2, z1)
    np.testing.assert_array_equal(quantize(y, s2, z2, fmt, block), quantize(x, s1, z1, fmt, block))


@given(
    tensors(), st.sampled_from([("int4", True), ("int8", True), ("uint4", False), ("uint2", False)])
)
def test_a_finer_granularitys_error_never_exceeds_a_coarser_ones_error_bound(xg, fs):
    x, g = xg
    fmt, sym = fs
    b = blocks(x, g)
    steps = {}
    for name, block in b.items():
        scale, _ = choose_qparams(x, fmt, block, symmetric=sym)
        steps[name] = expand(scale, block, x.shape)
    order = ["per_group", "per_channel", "per_tensor"]
    for fine, coarse in [(order[0], order[1]), (order[1], order[2])]:
        err = np.abs(x.astype(np.float64) - fake_quantize(x, fmt, b[fine], symmetric=sym))
        assert np.all(err <= roundtrip_tolerance(x, steps[coarse]))


@given(
    st.floats(-(2.0**100), 2.0**100, width=32),
    st.sampled_from(INT_FORMATS + UINT_FORMATS),
    st.booleans(),
)
def test_constant_blocks_get_a_valid_scale_and_reconstruct_exactly(c, fmt, sym):
    sym = sym and fmt not in UINT_FORMATS
    x = np.full((3, 8), c, np.float32)
    scale, zero = choose_qparams(x, fmt, (1, 8), symmetric=sym)
    assert np.all(np.isfinite(scale) & (scale > 0))
    np.testing.assert_array_equal(fake_quantize(x, fmt, (1, 8), symmetric=sym), x)


@given(tensors(), st.integers(1, 5), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_input_is_rejected_with_its_count_and_first_index(xg, n_bad, bad):
    x, _ = xg
    x = x.copy().reshape(-1)
    n_bad = min(n_bad, x.size)
    x[-n_bad:] = bad
    x = x.reshape(xg[0].shape)
    first = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
    with pytest.raises(ValueError, match=rf"has {n_bad} non-finite.*index {re.escape(str(first))}"):
        choose_qparams(x, "int8", (1, x.shape[1]))
