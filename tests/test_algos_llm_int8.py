"""LLM.int8(): threshold ∞ is plain vector-wise int8; outliers are exact on the float path."""

import numpy as np
import pytest

from tinyquant.algos.llm_int8 import Int8OutlierLinear
from tinyquant.kernels.reference import w8a8_linear
from tinyquant.llm.model import Config, forward, init_params


def problem(seed, outliers=(3, 40)):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(24, 64)).astype(np.float32) * 0.1
    x = rng.normal(size=(2, 7, 64)).astype(np.float32)
    for j in outliers:
        x[..., j] *= 30.0
    return W, x


def test_infinite_threshold_equals_plain_vector_wise_int8():
    W, x = problem(0)
    lin = Int8OutlierLinear(W, threshold=np.inf)
    ref = w8a8_linear(x.reshape(-1, 64), lin.codes, lin.scale).reshape(2, 7, 24)
    np.testing.assert_array_equal(lin.forward(x), ref)
    assert lin.last_outliers.size == 0


def test_outlier_columns_are_those_with_any_value_at_or_above_the_threshold():
    W, x = problem(1)
    lin = Int8OutlierLinear(W, threshold=6.0)
    lin.forward(x)
    expected = np.flatnonzero(np.abs(x.reshape(-1, 64)).max(0) >= 6.0)
    np.testing.assert_array_equal(lin.last_outliers, expected)
    assert {3, 40} <= set(expected.tolist())


def test_decomposition_beats_plain_int8_when_activations_have_outliers():
    W, x = problem(2)
    exact = x @ W.T
    err_dec = np.abs(Int8OutlierLinear(W, 6.0).forward(x) - exact).mean()
    err_int8 = np.abs(Int8OutlierLinear(W, np.inf).forward(x) - exact).mean()
    assert err_dec < 0.5 * err_int8


def test_the_float_part_equals_a_float_matmul_with_the_dequantized_weight_columns():
    W, x = problem(3)
    lin = Int8OutlierLinear(W, threshold=1e-9)  # every column is an outlier
    What = lin.codes.astype(np.float32) * lin.scale[:, None]
    np.testing.assert_allclose(lin.forward(x), x @ What.T, rtol=1e-5, atol=1e-6)


def test_the_model_runs_with_int8_outlier_linears_in_its_params():
    cfg = Config(d_model=64, n_layers=2, n_heads=2, d_ff=128, context=32)
    params = init_params(cfg, seed=0)
    q = {
        k: Int8OutlierLinear(v) if k.startswith("blk.") and v.ndim == 2 else v
        for k, v in params.items()
    }
    toks = np.random.default_rng(0).integers(0, 256, size=(1, 16))
    np.testing.assert_allclose(forward(q, toks, cfg), forward(params, toks, cfg), atol=2e-2)


def test_nonpositive_threshold_is_a_clear_error():
    with pytest.raises(ValueError, match="threshold"):
        Int8OutlierLinear(np.ones((2, 2), np.float32), threshold=0.0)
