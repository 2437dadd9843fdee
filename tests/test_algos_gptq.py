"""GPTQ: the identities of Frantar et al. 2022 checked on seeded problems."""

import warnings

import numpy as np
import pytest

from tinyquant.algos.gptq import gptq_quantize, layer_objective, upper_cholesky_of_inverse
from tinyquant.algos.qgrid import fake_quantize_rows


def correlated_problem(seed: int, O: int = 32, I: int = 64, N: int = 512):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(I, I)) / np.sqrt(I) + np.eye(I)
    X = rng.standard_t(4, size=(N, I)) @ mix  # correlated, heavy-tailed inputs
    W = rng.normal(size=(O, I)).astype(np.float32)
    return W, 2 * X.T @ X / N


def damped(H, damp=0.01):
    Hd = H.copy()
    Hd[np.diag_indices_from(Hd)] += damp * np.mean(np.diag(H))
    return Hd


@pytest.mark.parametrize("group_size,act_order", [(None, False), (16, False), (16, True)])
def test_sum_of_column_losses_equals_half_trace_of_delta_h_delta(group_size, act_order):
    W, H = correlated_problem(0)
    r = gptq_quantize(W, H, bits=3, group_size=group_size, act_order=act_order, chunk=16)
    expected = layer_objective(W, r.weight, damped(H))
    assert r.losses.sum() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("group_size,symmetric", [(None, False), (16, True), (8, False)])
def test_diagonal_hessian_gives_exactly_round_to_nearest(group_size, symmetric):
    W, _ = correlated_problem(1)
    H = np.diag(np.random.default_rng(1).uniform(0.5, 2.0, size=W.shape[1]))
    r = gptq_quantize(W, H, bits=3, group_size=group_size, symmetric=symmetric)
    rtn = fake_quantize_rows(W, 3, group_size, symmetric)
    np.testing.assert_array_equal(r.weight, rtn)


def test_without_groups_the_result_does_not_depend_on_the_chunk_size():
    W, H = correlated_problem(2)
    ref = gptq_quantize(W, H, bits=4, chunk=128)
    for chunk in (1, 7, 32):
        other = gptq_quantize(W, H, bits=4, chunk=chunk)
        mismatch = np.mean(other.codes != ref.codes)
        assert mismatch < 0.002, f"chunk {chunk}: {mismatch:.4f} of codes differ"
        np.testing.assert_allclose(other.losses.sum(), ref.losses.sum(), rtol=1e-3)


def test_with_groups_current_weights_make_the_result_independent_of_the_chunk_size():
    W, H = correlated_problem(3)
    ref = gptq_quantize(W, H, bits=3, group_size=16, chunk=64)
    other = gptq_quantize(W, H, bits=3, group_size=16, chunk=24)  # groups straddle chunks
    assert np.mean(other.codes != ref.codes) < 0.002


def test_reference_chunk_start_groups_do_depend_on_the_chunk_size():
    W, H = correlated_problem(3)
    a = gptq_quantize(W, H, bits=2, group_size=16, chunk=64, group_params_from="chunk_start")
    b = gptq_quantize(W, H, bits=2, group_size=16, chunk=16, group_params_from="chunk_start")
    assert np.mean(a.codes != b.codes) > 0.01


def test_scaling_h_changes_nothing():
    W, H = correlated_problem(4)
    a = gptq_quantize(W, H, bits=3, group_size=16)
    b = gptq_quantize(W, 37.0 * H, bits=3, group_size=16)
    assert np.mean(a.codes != b.codes) < 0.002
    np.testing.assert_allclose(37.0 * a.losses.sum(), b.losses.sum(), rtol=1e-3)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bits,group_size", [(4, None), (3, 16), (2, None)])
def test_gptq_never_loses_to_rtn_on_its_own_objective(seed, bits, group_size):
    W, H = correlated_problem(10 + seed)
    r = gptq_quantize(W, H, bits=bits, group_size=group_size)
    rtn = fake_quantize_rows(W, bits, group_size, symmetric=False)
    assert layer_objective(W, r.weight, H) < layer_objective(W, rtn, H)


def test_codes_scale_zero_and_group_index_reconstruct_the_weight():
    W, H = correlated_problem(5)
    r = gptq_quantize(W, H, bits=3, group_size=16, act_order=True)
    deq = r.scale[:, r.g_idx] * (r.codes.astype(np.float32) - r.zero[:, r.g_idx])
    np.testing.assert_array_equal(deq, r.weight)
    assert sorted(np.bincount(r.g_idx).tolist()) == [16] * 4


def test_static_groups_use_contiguous_groups_even_with_act_order():
    W, H = correlated_problem(6)
    r = gptq_quantize(W, H, bits=3, group_size=16, act_order=True, static_groups=True)
    np.testing.assert_array_equal(r.g_idx, np.arange(64) // 16)
    deq = r.scale[:, r.g_idx] * (r.codes.astype(np.float32) - r.zero[:, r.g_idx])
    np.testing.assert_array_equal(deq, r.weight)


def test_act_order_processes_columns_by_decreasing_hessian_diagonal():
    W, H = correlated_problem(7)
    r = gptq_quantize(W, H, bits=3, act_order=True)
    assert np.all(np.diff(np.diag(H)[r.perm]) <= 0)


def test_dead_inputs_get_zero_weight_and_no_loss():
    W, H = correlated_problem(8)
    H[5, :] = H[:, 5] = 0.0
    r = gptq_quantize(W, H, bits=4)
    assert np.all(r.weight[:, 5] == 0)
    assert r.losses[5] == 0


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


def test_upper_cholesky_of_inverse_matches_the_definition_on_a_large_matrix():
    rng = np.random.default_rng(12)
    A = rng.normal(size=(600, 600))
    H = A @ A.T + 600 * np.eye(600)
    U = upper_cholesky_of_inverse(H)
    assert np.allclose(np.tril(U, -1), 0)
    np.testing.assert_allclose(U.T @ U, np.linalg.inv(H), atol=1e-12)


def test_bad_group_size_is_a_clear_value_error():
    W, H = correlated_problem(13)
    with pytest.raises(ValueError, match="does not divide"):
        gptq_quantize(W, H, group_size=48)


def test_float16_scales_are_used_for_the_codes_so_the_stored_tensor_is_exact():
    from tinyquant.algos.gptq import to_qtensor

    W, H = correlated_problem(14)
    r = gptq_quantize(W, H, bits=2, group_size=16, scale_dtype="float16")
    np.testing.assert_array_equal(r.scale, r.scale.astype(np.float16).astype(np.float32))
    qt = to_qtensor(r)
    assert qt.scale.dtype == np.float16
    np.testing.assert_array_equal(qt.dequantize(), r.weight)
