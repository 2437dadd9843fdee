"""The one-pass activation quantizer (kernels/act_int8.py) against quant.activations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyquant.kernels.act_int8 import quantize_rows
from tinyquant.quant.activations import quantize_activations

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 5), st.sampled_from([8, 16, 24])),
        elements=finite32 | st.sampled_from([0.0, -0.0, 0.5, -2.5, 1e-45, 127.0]),
    ),  # fmt: skip
    g=st.sampled_from([1, 4, 8]),
)
def test_one_pass_codes_scales_and_group_sums_equal_numpy_bit_for_bit(x, g):
    q_ref, s_ref = quantize_activations(x, "per_token")
    q, s, gsum = quantize_rows(np.ascontiguousarray(x), g)
    assert np.array_equal(q, q_ref) and np.array_equal(s.view(np.uint32), s_ref.view(np.uint32))
    T, I = x.shape
    assert np.array_equal(gsum, q_ref.reshape(T, I // g, g).sum(axis=2, dtype=np.int32))


def test_rounding_ties_go_to_even_as_in_numpy():
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -126.5]], np.float32)  # s_x = 1: exact ties
    q, _, _ = quantize_rows(x, 7)
    assert q.tolist() == [[127, 0, 2, 2, 0, -2, -126]]
    assert np.array_equal(q, quantize_activations(x, "per_token")[0])


def test_a_group_size_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="must divide the 6 features"):
        quantize_rows(np.zeros((1, 6), np.float32), 4)
