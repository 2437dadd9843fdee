"""GPTQ: errors, warnings and storage. The algorithm's properties are in tests/spec/test_spec_gptq.py."""

import warnings

import numpy as np
import pytest

from tinyquant.algos.gptq import gptq_quantize, to_qtensor
from tinyquant.algos.gptq_reference import gptq_reference


def correlated_problem(seed: int, O: int = 32, I: int = 64, N: int = 512):
    rng = np.random.default_rng(seed)
    X = rng.standard_t(4, size=(N, I)) @ (rng.normal(size=(I, I)) / np.sqrt(I) + np.eye(I))
    return rng.normal(size=(O, I)).astype(np.float32), 2 * X.T @ X / N


def test_failed_cholesky_retries_with_more_damping_and_warns():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(4, 16))  # rank 4 < 16
    H = 2 * X.T @ X / 4
    H[0, 1] = H[1, 0] = 50.0  # indefinite
    W = rng.normal(size=(4, 16)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        r = gptq_quantize(W, H, bits=4, damp=0.01)
    assert r.damp > 0.01
    assert np.all(np.isfinite(r.weight))


def test_positive_definite_h_does_not_warn():
    W, H = correlated_problem(11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gptq_quantize(W, H, bits=4).damp == 0.01


@pytest.mark.parametrize("quantize", [gptq_quantize, gptq_reference])
def test_bad_group_size_is_a_clear_value_error(quantize):
    W, H = correlated_problem(13)
    with pytest.raises(ValueError, match="does not divide"):
        quantize(W, H, group_size=48)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"bits": 9}, "bits must be one of 2, 3, 4, 6, 8"), ({"scale_dtype": "bf16"}, "scale_dtype")],
)
def test_bad_options_are_clear_value_errors(kwargs, match):
    W, H = correlated_problem(13)
    with pytest.raises(ValueError, match=match):
        gptq_quantize(W, H, **kwargs)
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        gptq_quantize(W, np.eye(3))


def test_float16_scales_are_used_for_the_codes_so_the_stored_tensor_is_exact():
    W, H = correlated_problem(14)
    r = gptq_quantize(W, H, bits=2, group_size=16, scale_dtype="float16")
    np.testing.assert_array_equal(r.scale, r.scale.astype(np.float16).astype(np.float32))
    qt = to_qtensor(r)
    assert qt.scale.dtype == np.float16
    np.testing.assert_array_equal(qt.dequantize(), r.weight)


def test_act_order_groups_that_are_not_contiguous_refuse_to_become_a_qtensor():
    W, H = correlated_problem(15)
    r = gptq_quantize(W, H, bits=3, group_size=16, act_order=True)
    with pytest.raises(ValueError, match="static_groups=True"):
        to_qtensor(r)


def test_dead_params_from_original_fits_the_grid_before_the_dead_columns_are_zeroed():
    """The reference's order (find_params(W), then W[:, dead] = 0); with a diagonal H GPTQ is
    exactly RTN, so the live columns' codes are RTN on the un-zeroed W's per-row grid."""
    from tinyquant.algos.qgrid import minmax_qparams, quantize_codes

    rng = np.random.default_rng(4)
    W = rng.normal(size=(8, 32)).astype(np.float32)
    W[:, 5] = 6.0 * np.sign(rng.normal(size=8))  # a dead column that would widen every grid
    H = np.diag(rng.uniform(0.5, 2.0, 32))
    H[5, 5] = 0.0
    ref = gptq_quantize(W, H, bits=4, dead_params_from="original")
    ours = gptq_quantize(W, H, bits=4)
    s, z = minmax_qparams(W, 4, symmetric=False)  # the reference: from W before zeroing
    live = np.arange(32) != 5
    want = quantize_codes(W[:, live].T, s, z, 15).T
    assert np.array_equal(ref.codes[:, live], want)
    assert np.array_equal(ref.scale[:, 0], s)
    assert not np.array_equal(ours.scale[:, 0], s)  # "zeroed": the dead column is ignored
    r2 = gptq_reference(W, H, bits=4, dead_params_from="original")
    assert np.array_equal(r2.codes, ref.codes)
