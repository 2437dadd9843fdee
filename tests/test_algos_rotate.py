"""Hadamard rotation: orthogonality, involution, speed shape, and exactness of rotating W and x."""

import numpy as np
import pytest

from tinyquant.algos.gptq import gptq_quantize
from tinyquant.algos.rotate import (
    RandomHadamard,
    RotatedLinear,
    hadamard_matrix,
    hadamard_transform,
    rotate_hessian,
    rotate_weight,
)
from tinyquant.qmodel import QuantLinear


def sylvester(n):
    H = np.ones((1, 1))
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


@pytest.mark.parametrize("n", [1, 2, 8, 64, 256, 12, 24, 768])
def test_hadamard_matrix_has_orthogonal_pm1_rows_and_is_symmetric(n):
    H = hadamard_matrix(n)
    assert set(np.unique(H)) <= {-1, 1}
    np.testing.assert_array_equal(H @ H.T, n * np.eye(n))
    np.testing.assert_array_equal(H, H.T)


@pytest.mark.parametrize("n", [16, 256])
def test_fast_transform_equals_the_sylvester_matrix_product(n):
    x = np.random.default_rng(n).normal(size=(3, n))
    np.testing.assert_allclose(hadamard_transform(x, normalize=False), x @ sylvester(n), atol=1e-9)


@pytest.mark.parametrize("n", [64, 768])
def test_normalized_transform_is_its_own_inverse_and_preserves_norms(n):
    x = np.random.default_rng(0).normal(size=(4, n))
    y = hadamard_transform(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-12)
    np.testing.assert_allclose(hadamard_transform(y), x, atol=1e-12)


def test_random_hadamard_is_orthogonal_and_seeded():
    R = RandomHadamard(768, seed=3).matrix()
    np.testing.assert_allclose(R.T @ R, np.eye(768), atol=1e-10)
    assert np.array_equal(RandomHadamard(768, 3).signs, RandomHadamard(768, 3).signs)
    assert not np.array_equal(RandomHadamard(768, 3).signs, RandomHadamard(768, 4).signs)


@pytest.mark.parametrize("n", [256, 768])
def test_rotating_weights_and_inputs_together_leaves_the_layer_output_unchanged(n):
    rng = np.random.default_rng(n)
    W, x = rng.normal(size=(32, n)), rng.normal(size=(5, n))
    rot, rot_out = RandomHadamard(n, 1), RandomHadamard(32, 2)
    np.testing.assert_allclose(rot.apply(x) @ rot.apply(W).T, x @ W.T, atol=1e-9)
    lin = RotatedLinear(rot, rotate_weight(W, rot, rot_out), rot_out)
    np.testing.assert_allclose(lin.forward(x.astype(np.float32)), x @ W.T, rtol=1e-4, atol=1e-4)


def test_rotation_spreads_an_outlier_weight_over_the_row():
    W = np.zeros((1, 256))
    W[0, 7] = 16.0
    Wr = rotate_weight(W, RandomHadamard(256, 0))
    np.testing.assert_allclose(np.abs(Wr), 1.0, rtol=1e-6)  # 16/√256 in every column


def test_rotated_hessian_is_the_hessian_of_rotated_inputs():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(100, 64))
    rot = RandomHadamard(64, 0)
    Xr = rot.apply(X)
    np.testing.assert_allclose(
        rotate_hessian(2 * X.T @ X / 100, rot), 2 * Xr.T @ Xr / 100, atol=1e-10
    )


def test_gptq_in_rotated_space_composes_with_a_rotated_quantized_linear():
    rng = np.random.default_rng(6)
    X = rng.standard_t(3, size=(512, 64))
    W = rng.standard_t(3, size=(16, 64)).astype(np.float32)
    rot = RandomHadamard(64, 0)
    r = gptq_quantize(rotate_weight(W, rot), rotate_hessian(2 * X.T @ X / 512, rot), bits=4)
    lin = RotatedLinear(rot, r.weight)
    ref = rot.apply(X).astype(np.float32) @ r.weight.T
    np.testing.assert_allclose(lin.forward(X.astype(np.float32)), ref, rtol=1e-5, atol=1e-5)


def test_rotated_linear_counts_the_quantized_bytes_plus_sign_bits():
    W = np.random.default_rng(7).normal(size=(8, 64)).astype(np.float32)
    ql = QuantLinear.from_weight(W, "int4", group_size=32)
    assert RotatedLinear(RandomHadamard(64, 0), ql).nbytes == ql.nbytes + 8


def test_unsupported_size_is_a_clear_value_error():
    with pytest.raises(ValueError, match="12"):
        RandomHadamard(100)
