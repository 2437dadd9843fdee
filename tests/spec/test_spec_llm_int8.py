"""LLM.int8()'s specification: without outliers it is vector-wise int8; outliers run in float."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyquant.kernels.reference import w8a8_linear
from tinyquant.linears import Int8OutlierLinear


def problem(seed, outliers=(3, 40)):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(24, 64)).astype(np.float32) * 0.1
    x = rng.normal(size=(2, 7, 64)).astype(np.float32)
    for j in outliers:
        x[..., j] *= 30.0
    return W, x


@settings(max_examples=30)
@given(st.integers(0, 2**16), st.sampled_from([1.0001, 2.0, np.inf]))
def test_with_no_outliers_the_decomposition_equals_vector_wise_int8(seed, above):
    W, x = problem(seed)
    lin = Int8OutlierLinear.from_weight(
        W, threshold=float(np.abs(x).max()) * above
    )  # nothing reaches it
    ref = w8a8_linear(x.reshape(-1, 64), lin.codes, lin.scale).reshape(2, 7, 24)
    np.testing.assert_array_equal(lin.forward(x), ref)
    assert lin.last_outliers.size == 0


@settings(max_examples=30)
@given(st.integers(0, 2**16), st.floats(0.5, 100.0))
def test_outlier_columns_are_those_with_any_value_at_or_above_the_threshold(seed, threshold):
    W, x = problem(seed)
    lin = Int8OutlierLinear.from_weight(W, threshold=threshold)
    lin.forward(x)
    expected = np.flatnonzero(np.abs(x.reshape(-1, 64)).max(0) >= threshold)
    np.testing.assert_array_equal(lin.last_outliers, expected)


@settings(max_examples=20)
@given(st.integers(0, 2**16))
def test_the_decomposition_beats_plain_int8_when_activations_have_outliers(seed):
    W, x = problem(seed)
    exact = x.astype(np.float64) @ W.T.astype(np.float64)
    err_dec = np.abs(Int8OutlierLinear.from_weight(W, 6.0).forward(x) - exact).mean()
    err_int8 = np.abs(Int8OutlierLinear.from_weight(W, np.inf).forward(x) - exact).mean()
    assert err_dec < 0.5 * err_int8


@settings(max_examples=20)
@given(st.integers(0, 2**16))
def test_when_every_column_is_an_outlier_the_result_is_a_float_matmul_with_the_int8_weight(seed):
    W, x = problem(seed)
    lin = Int8OutlierLinear.from_weight(W, threshold=1e-9)
    What = (lin.codes.astype(np.float32) * lin.scale[:, None]).astype(np.float64)  # (O, I)
    exact = x.astype(np.float64) @ What.T
    bound = 64 * np.finfo(np.float32).eps * (np.abs(x).astype(np.float64) @ np.abs(What).T)
    assert np.all(np.abs(lin.forward(x) - exact) <= bound)  # float32 summation error only


@settings(max_examples=20)
@given(st.integers(0, 2**16), st.sampled_from([2.0, 6.0, np.inf]))
def test_the_integer_path_equals_the_fake_path_to_the_bit(seed, threshold):
    W, x = problem(seed)
    lin = Int8OutlierLinear.from_weight(W, threshold)
    np.testing.assert_array_equal(lin.with_path("int").forward(x), lin.forward(x))
