"""Hadamard rotation's specification: R is orthogonal, and rotating W and x together is exact."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyquant.algos.rotate import (
    RandomHadamard,
    hadamard_matrix,
    hadamard_transform,
    rotate_hessian,
    rotate_weight,
)
from tinyquant.linears import RotatedLinear

SIZES = st.sampled_from([1, 2, 8, 12, 24, 64, 96, 256, 768])


def sylvester(n):
    H = np.ones((1, 1))
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


@given(SIZES)
def test_the_hadamard_matrix_has_orthogonal_pm1_rows_and_is_symmetric(n):
    H = hadamard_matrix(n)
    assert set(np.unique(H)) <= {-1, 1}
    np.testing.assert_array_equal(H @ H.T, n * np.eye(n))
    np.testing.assert_array_equal(H, H.T)


@given(st.sampled_from([1, 2, 16, 256]), st.integers(0, 2**16))
def test_the_fast_transform_equals_the_sylvester_matrix_product(n, seed):
    x = np.random.default_rng(seed).normal(size=(3, n))
    np.testing.assert_allclose(hadamard_transform(x, normalize=False), x @ sylvester(n), atol=1e-9)


@given(SIZES, st.integers(0, 2**16))
def test_the_normalized_transform_is_its_own_inverse_and_preserves_norms(n, seed):
    x = np.random.default_rng(seed).normal(size=(4, n))
    y = hadamard_transform(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-12)
    np.testing.assert_allclose(hadamard_transform(y), x, atol=1e-12)


@settings(max_examples=30)
@given(SIZES, st.integers(0, 2**16))
def test_a_random_hadamard_rotation_is_orthogonal(n, seed):
    R = RandomHadamard(n, seed=seed).matrix()
    np.testing.assert_allclose(R.T @ R, np.eye(n), atol=1e-10)
    x = np.random.default_rng(seed).normal(size=(2, n))
    np.testing.assert_allclose(RandomHadamard(n, seed).apply(x), x @ R, atol=1e-10)


@settings(max_examples=30)
@given(SIZES, st.integers(0, 2**16))
def test_rotating_weights_and_inputs_together_leaves_x_times_w_transposed_unchanged(n, seed):
    rng = np.random.default_rng(seed)
    W, x = rng.normal(size=(8, n)), rng.normal(size=(5, n))
    rot = RandomHadamard(n, seed)
    np.testing.assert_allclose(rot.apply(x) @ rot.apply(W).T, x @ W.T, atol=1e-9)
    np.testing.assert_allclose(rot.inverse(rot.apply(x)), x, atol=1e-12)


@pytest.mark.parametrize("n", [256, 768])
def test_a_rotated_linear_computes_the_original_layer(n):
    rng = np.random.default_rng(n)
    W, x = rng.normal(size=(32, n)), rng.normal(size=(5, n))
    rot = RandomHadamard(n, 1)
    lin = RotatedLinear(rot, rotate_weight(W, rot))
    np.testing.assert_allclose(lin.forward(x.astype(np.float32)), x @ W.T, rtol=1e-4, atol=1e-4)


@given(st.sampled_from([64, 256, 768]), st.integers(0, 2**16), st.data())
def test_rotation_spreads_a_single_outlier_weight_evenly_over_the_row(n, seed, data):
    W = np.zeros((1, n))
    W[0, data.draw(st.integers(0, n - 1))] = 16.0
    Wr = rotate_weight(W, RandomHadamard(n, seed))
    np.testing.assert_allclose(np.abs(Wr), 16.0 / np.sqrt(n), rtol=1e-6)


@settings(max_examples=20)
@given(st.sampled_from([12, 64, 96]), st.integers(0, 2**16))
def test_the_rotated_hessian_is_the_hessian_of_rotated_inputs(n, seed):
    X = np.random.default_rng(seed).normal(size=(100, n))
    rot = RandomHadamard(n, seed)
    Xr = rot.apply(X)
    np.testing.assert_allclose(
        rotate_hessian(2 * X.T @ X / 100, rot), 2 * Xr.T @ Xr / 100, atol=1e-10
    )
