"""The 2-bit table-lookup kernel (kernels/lut2.py) against the weight-only reference."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyquant.kernels import reference
from tinyquant.kernels.lut2 import USE_LUT, lut2_fits, lut2_linear_checked, prepack_lut2
from tinyquant.linears import QuantLinear

pytestmark = pytest.mark.skipif(not USE_LUT, reason="the lookup kernel needs AVX-512")


def _tolerance(x, packed, scale, zero, g):
    """FLOAT_RTOL · (|x| |W|ᵀ + |x| |s·z|ᵀ), as for the other weight-only kernels."""
    from tinyquant.quant.pack import unpack

    codes = unpack(packed, 2, x.shape[1]).astype(np.float32)
    s = np.repeat(scale, g, axis=1)
    mag = np.abs(x) @ (np.abs(codes * s) + np.abs(np.repeat(zero, g, axis=1) * s)).T
    return reference.FLOAT_RTOL * mag


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 16),  # the kernel takes any T; QuantLinear sends it T ≤ MAX_TOKENS
    O=st.integers(1, 140),
    groups=st.integers(1, 3),
    g=st.sampled_from([16, 32, 64, 128]),
    seed=st.integers(0, 2**16),
)
def test_table_lookup_matches_the_reference_within_the_stated_tolerance(T, O, groups, g, seed):
    rng = np.random.default_rng(seed)
    I = groups * g
    packed = rng.integers(0, 256, (O, I // 4), dtype=np.uint8)
    scale = (rng.random((O, groups)) * 0.1 + 0.01).astype(np.float32)
    zero = rng.integers(0, 4, (O, groups)).astype(np.float32)
    x = rng.standard_normal((T, I), dtype=np.float32) * 10
    y = lut2_linear_checked(x, prepack_lut2(packed, scale, zero, g))
    y_ref = reference.weight_only_linear(x, packed, scale, zero, g, 2)
    assert y.shape == (T, O) and np.all(np.abs(y - y_ref) <= _tolerance(x, packed, scale, zero, g))


def test_every_code_pair_indexes_its_own_table_entry():
    # one row whose 16 columns hold all 16 pairs (a, b); x = (1, 16, 1, 16, …) makes each
    # pair's partial dot product a + 16 b distinct, so a swapped nibble changes the sum
    a, b = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    codes = np.stack([a.ravel(), b.ravel()], 1).ravel().astype(np.uint8)  # 32 codes, pairs (a, b)
    codes = np.concatenate([codes, np.zeros(0, np.uint8)])
    from tinyquant.quant.pack import pack

    packed = pack(codes[None, :], 2)
    x = np.tile(np.array([1.0, 16.0], np.float32), 16)[None, :]
    one = np.ones((1, 1), np.float32)
    y = lut2_linear_checked(x, prepack_lut2(packed, one, 0 * one, 32))
    assert y[0, 0] == float(np.sum(codes * x[0]))


def test_quantlinear_uses_tables_for_decode_and_the_weight_only_layout_for_prefill():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((96, 128)).astype(np.float32)
    ql = QuantLinear.from_weight(w, "int2", 64).with_path("int")
    fake = QuantLinear.from_weight(w, "int2", 64)
    for T in (1, 3, 4, 16, 17, 40):
        x = rng.standard_normal((T, 128)).astype(np.float32)
        assert np.allclose(ql.forward(x), fake.forward(x), rtol=1e-4, atol=1e-4)
    assert type(ql._packed).__name__ == "PackedLut2" and ql._packed_std is not None
    assert not lut2_fits(128, 8) and lut2_fits(128, 64)


def test_inconsistent_packed_tables_are_refused():
    one = np.ones((2, 1), np.float32)
    p = prepack_lut2(np.zeros((2, 8), np.uint8), one, 0 * one, 32)
    with pytest.raises(ValueError, match="PackedLut2.w has shape"):
        dataclasses.replace(p, in_features=64)
    with pytest.raises(ValueError, match="multiples of 16"):
        prepack_lut2(np.zeros((2, 2), np.uint8), one, 0 * one, 8)
