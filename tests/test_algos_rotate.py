"""Hadamard rotation: seeding, composition with GPTQ, bytes, errors. Properties: tests/spec."""

import numpy as np
import pytest

from tinyquant.algos.gptq import gptq_quantize
from tinyquant.algos.rotate import RandomHadamard, rotate_hessian, rotate_weight
from tinyquant.linears import QuantLinear, RotatedLinear


def test_random_hadamard_signs_are_fixed_by_the_seed():
    assert np.array_equal(RandomHadamard(768, 3).signs, RandomHadamard(768, 3).signs)
    assert not np.array_equal(RandomHadamard(768, 3).signs, RandomHadamard(768, 4).signs)


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
