"""Weight-only W8/W4/W3/W2 A16 kernels agree with the NumPy reference within the stated tolerance."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyquant.kernels import reference, unpack_dot, weight_only
from tinyquant.quant import quantize_tensor
from tinyquant.quant.pack import pack, unpack


def _problem(rng, T, O, I, g, bits):
    packed = rng.integers(0, 256, (O, I * bits // 8), dtype=np.uint8)
    scale = (rng.random((O, I // g)) * 0.1 + 0.01).astype(np.float32)
    zero = rng.integers(0, 1 << bits, (O, I // g)).astype(np.float32)
    x = rng.standard_normal((T, I), dtype=np.float32)
    return x, packed, scale, zero


def _tolerance(x, packed, scale, zero, g, bits):
    """FLOAT_RTOL · (|x| |W|ᵀ + |x| |s·z|ᵀ): the magnitude of the terms the kernels sum."""
    codes = unpack(packed, bits, x.shape[1]).astype(np.float32)
    s = np.repeat(scale, g, axis=1)
    mag = np.abs(x) @ (np.abs(codes * s) + np.abs(np.repeat(zero, g, axis=1) * s)).T
    return reference.FLOAT_RTOL * mag


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("T", [1, 3, 4, 5, 17])
def test_fused_kernel_matches_the_reference_within_the_stated_tolerance(bits, T):
    rng = np.random.default_rng(10 * bits + T)
    O, I, g = 130, 256, 64  # O not a multiple of 64: padding rows are dropped
    x, p, s, z = _problem(rng, T, O, I, g, bits)
    y = weight_only.weight_only_linear(x, p, s, z, g, bits)
    y_ref = reference.weight_only_linear(x, p, s, z, g, bits)
    assert y.shape == (T, O) and y.dtype == np.float32
    assert np.all(np.abs(y - y_ref) <= _tolerance(x, p, s, z, g, bits))


@given(
    bits=st.sampled_from([8, 4, 3, 2]),
    T=st.integers(1, 20),
    O=st.integers(1, 140),
    groups=st.integers(1, 3),
    g=st.sampled_from([8, 32, 128]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_the_reference(bits, T, O, groups, g, seed):
    rng = np.random.default_rng(seed)
    I = groups * g
    x, p, s, z = _problem(rng, T, O, I, g, bits)
    y = weight_only.weight_only_linear(x, p, s, z, g, bits)
    y_ref = reference.weight_only_linear(x, p, s, z, g, bits)
    assert np.all(np.abs(y - y_ref) <= _tolerance(x, p, s, z, g, bits))


def test_the_tolerance_catches_a_single_wrong_code():
    rng = np.random.default_rng(3)
    x, p, s, z = _problem(rng, 1, 64, 256, 64, 4)
    x = np.abs(x) + 0.5  # no cancellation: one code off by one moves y[0, 0] by s · x
    bad = p.copy()
    bad[0, 0] ^= 0x01  # code (0, 0) off by one
    y_bad = weight_only.weight_only_linear(x, bad, s, z, 64, 4)
    y_ref = reference.weight_only_linear(x, p, s, z, 64, 4)
    assert np.abs(y_bad - y_ref)[0, 0] > _tolerance(x, p, s, z, 64, 4)[0, 0]


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_prepacked_weight_dequantizes_to_the_reference_weight(bits):
    rng = np.random.default_rng(bits)
    _, p, s, z = _problem(rng, 1, 70, 128, 32, bits)
    pw = weight_only.prepack(p, s, z, 32, bits)
    codes = unpack(p, bits, 128)
    w_ref = reference.dequantize_groups(codes, s, z, 32)
    # the kernel computes q·s − s·z, the reference (q − z)·s: equal up to rounding of each term
    mag = (codes + np.repeat(z, 32, axis=1)) * np.repeat(s, 32, axis=1)
    assert np.all(np.abs(weight_only.dequantize_packed(pw) - w_ref) <= 1e-6 * mag)


@pytest.mark.parametrize("fmt", ["int8", "int4", "uint4", "int3", "int2"])
def test_reference_runs_qtensors_from_the_quantization_core(fmt):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((48, 128)).astype(np.float32)
    qt = quantize_tensor(w, fmt, (1, 32), symmetric=not fmt.startswith("u"))
    bits = qt.fmt.storage_bits
    zero = np.zeros(qt.scale.shape, np.float32) if qt.zero is None else qt.zero.astype(np.float32)
    if qt.fmt.signed:
        zero = zero + (1 << (bits - 1))
    x = rng.standard_normal((3, 128), dtype=np.float32)
    y = reference.weight_only_linear(x, qt.codes, qt.scale_values(), zero, 32, bits)
    np.testing.assert_allclose(y, x @ qt.dequantize().T, rtol=1e-5, atol=1e-5)


def test_many_tokens_take_the_dequantize_then_blas_path_and_still_match():
    rng = np.random.default_rng(5)
    T = weight_only.DEQUANT_MIN_TOKENS + 3
    x, p, s, z = _problem(rng, T, 600, 128, 128, 4)  # 600 rows: not a multiple of 64
    y = weight_only.weight_only_linear(x, p, s, z, 128, 4)
    assert np.all(
        np.abs(y - reference.weight_only_linear(x, p, s, z, 128, 4))
        <= _tolerance(x, p, s, z, 128, 4)
    )


@pytest.mark.parametrize("lut", [False, True] if unpack_dot.USE_LUT else [False])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_micro_kernel_sums_codes_times_x_with_and_without_the_lookup_table(bits, lut):
    from numba import njit

    f = unpack_dot._make_unpack_dot(bits, 1, lut)

    @njit
    def run(w, x, acc):
        f(w.ctypes.data, x.ctypes.data, x.shape[1] * 4, x.shape[1], acc.ctypes.data)

    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, (64, 40)).astype(np.uint8)  # (rows, columns)
    x = rng.integers(-4, 5, (1, 40)).astype(np.float32)  # small integers: exact float sums
    pw = weight_only.prepack(pack(codes, bits), np.ones((64, 1), np.float32),
                             np.zeros((64, 1), np.float32), 40, bits)  # fmt: skip
    acc = np.empty(64, np.float32)
    run(pw.w[0], x, acc)
    assert np.array_equal(acc, codes.astype(np.float32) @ x[0])


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_serial_and_parallel_calls_give_bit_identical_outputs(monkeypatch, bits):
    from tinyquant.kernels import threads, weight_only

    rng = np.random.default_rng(bits)
    O, I, g = 200, 256, 64
    packed = rng.integers(0, 256, (O, I * bits // 8), dtype=np.uint8)
    s = rng.random((O, I // g), dtype=np.float32)
    z = rng.integers(0, 2**bits, (O, I // g)).astype(np.float32)
    pw = weight_only.prepack(packed, s, z, g, bits)
    x = rng.standard_normal((3, I), dtype=np.float32)
    monkeypatch.setattr(threads, "SERIAL_MAX_MACS", 0)  # every call parallel
    par = weight_only.packed_linear(x, pw)
    monkeypatch.setattr(threads, "SERIAL_MAX_MACS", 1 << 40)  # every call on one thread
    ser = weight_only.packed_linear(x, pw)
    assert np.array_equal(par, ser)
