"""int8 GEMM and W8A8: the Numba kernels (portable and VNNI) are exact against the NumPy oracle."""

import re
from pathlib import Path

import numpy as np
import pytest

from tinyquant.kernels import numba_int, reference, vnni
from tinyquant.kernels.checks import MAX_K

KINDS = ["portable"] + (["vnni"] if vnni.has_vnni() else [])
# (M, K, N): GEMV rows, edge tiles in M and N, K tails that are not a multiple of 64
SHAPES = [
    (1, 64, 4),
    (1, 4096, 37),
    (3, 100, 7),
    (4, 64, 4),
    (5, 130, 9),
    (8, 256, 64),
    (17, 333, 130),
]


def _int64_matmul(a, b):
    return (a.astype(np.int64)[:, None, :] * b.astype(np.int64)[None, :, :]).sum(-1)


def test_reference_int8_matmul_equals_an_int64_product_sum():
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (7, 90), dtype=np.int8)
    b = rng.integers(-128, 128, (11, 90), dtype=np.int8)
    assert np.array_equal(reference.int8_matmul(a, b), _int64_matmul(a, b))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_numba_int8_matmul_is_array_equal_to_the_reference(kind, shape):
    M, K, N = shape
    rng = np.random.default_rng(M * 1000 + K + N)
    a = rng.integers(-128, 128, (M, K), dtype=np.int8)
    b = rng.integers(-128, 128, (N, K), dtype=np.int8)
    c = numba_int.int8_matmul(a, b, kind)
    assert c.dtype == np.int32
    assert np.array_equal(c, reference.int8_matmul(a, b))


@pytest.mark.parametrize("kind", KINDS)
def test_extreme_codes_at_the_largest_allowed_k_do_not_overflow(kind):
    # u = 127 + 128 = 255 against s = -128: the most negative raw u8·s8 sum the kernels form
    a = np.full((4, MAX_K), -128, np.int8)
    b = np.full((5, MAX_K), 127, np.int8)
    b[1] = -128
    c = numba_int.int8_matmul(a, b, kind)
    assert np.array_equal(c, _int64_matmul(a, b))


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch_gives_an_empty_result(kind):
    a = np.zeros((0, 64), np.int8)
    b = np.ones((3, 64), np.int8)
    assert numba_int.int8_matmul(a, b, kind).shape == (0, 3)


def test_default_kernels_follow_the_environment_variable(monkeypatch):
    monkeypatch.setenv("TINYQUANT_KERNELS", "portable")
    assert vnni.default_kernels() == "portable"
    monkeypatch.setenv("TINYQUANT_KERNELS", "fastest")
    with pytest.raises(ValueError, match="portable"):
        vnni.default_kernels()


def _cpuinfo_lists_vnni():
    """The oracle, read here on its own: do all `flags` lines of /proc/cpuinfo name avx512_vnni?
    None where the file or its flags are missing."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    lines = re.findall(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return all(re.search(r"\bavx512_vnni\b", line) for line in lines) if lines else None


def test_vnni_kernels_run_exactly_when_proc_cpuinfo_lists_avx512_vnni(monkeypatch):
    cpu_has = _cpuinfo_lists_vnni()
    if cpu_has is None:
        pytest.skip("no /proc/cpuinfo flags on this machine: nothing independent to compare to")
    monkeypatch.delenv("TINYQUANT_KERNELS", raising=False)
    assert vnni.default_kernels() == ("vnni" if cpu_has else "portable")
    a = np.array([[-128, 127, 3, -1, 5]], np.int8)
    b = np.array([[127, -128, -7, 0, 2], [-128, -128, 1, 1, 1]], np.int8)
    if cpu_has:  # the instruction exists: the kernel runs and is exact
        assert np.array_equal(numba_int.int8_matmul(a, b, "vnni"), _int64_matmul(a, b))
    else:  # it does not: asking for it is refused before any kernel runs
        with pytest.raises(ValueError, match="AVX512-VNNI"):
            numba_int.int8_matmul(a, b, "vnni")


def test_a_cpuinfo_without_the_vnni_flag_turns_the_vnni_kernels_off(monkeypatch):
    monkeypatch.delenv("TINYQUANT_KERNELS", raising=False)
    monkeypatch.setattr(vnni, "cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    vnni.has_vnni.cache_clear()
    try:
        assert vnni.has_vnni() is False
        assert vnni.default_kernels() == "portable"
        with pytest.raises(ValueError, match="AVX512-VNNI"):
            vnni.check_kernels("vnni")
    finally:
        monkeypatch.undo()
        vnni.has_vnni.cache_clear()


def test_asking_for_vnni_on_a_cpu_without_it_is_an_error(monkeypatch):
    monkeypatch.setattr(vnni, "has_vnni", lambda: False)
    with pytest.raises(ValueError, match="AVX512-VNNI"):
        vnni.check_kernels("vnni")


def test_quantize_per_token_error_is_at_most_half_a_step():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 50)) * rng.random((6, 1)) * 10).astype(np.float32)
    x[2] = 0.0
    q, s = reference.quantize_per_token(x)
    err = np.abs(q.astype(np.float32) * s[:, None] - x)
    assert np.all(err <= s[:, None] / 2 * (1 + 1e-6))
    assert np.all(q[2] == 0) and s[2] == 1.0
    assert np.all(np.abs(q).max(axis=1)[[0, 1, 3, 4, 5]] == 127)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1, 3, 8])
def test_w8a8_kernel_is_bit_identical_to_the_reference(kind, T):
    rng = np.random.default_rng(T)
    x = rng.standard_normal((T, 200), dtype=np.float32)
    w = rng.integers(-127, 128, (70, 200), dtype=np.int8)
    s = rng.random(70, dtype=np.float32)
    assert np.array_equal(numba_int.w8a8_linear(x, w, s, kind), reference.w8a8_linear(x, w, s))


@pytest.mark.parametrize("packed_for", KINDS)
@pytest.mark.parametrize("run_with", KINDS)
def test_w8a8_weight_packed_for_one_family_runs_exactly_on_the_other(packed_for, run_with):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((7, 130), dtype=np.float32)  # K not a multiple of 4, O of 64
    w = rng.integers(-127, 128, (70, 130), dtype=np.int8)
    s = rng.random(70, dtype=np.float32)
    p = numba_int.prepack_w8a8(w, s, packed_for)
    assert np.array_equal(p.rows(), w.view(np.uint8) ^ np.uint8(0x80))
    y = numba_int.w8a8_packed_linear(x, p, run_with)
    assert np.array_equal(y, reference.w8a8_linear(x, w, s))


def test_w8a8_is_within_activation_rounding_of_the_float_product():
    # |y − x Ŵᵀ| ≤ Σ_i |x̂_i − x_i| |Ŵ_oi| ≤ (s_x / 2) Σ_i |Ŵ_oi|  (weights already dequantized)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 96), dtype=np.float32)
    w = rng.integers(-127, 128, (33, 96), dtype=np.int8)
    s_w = (rng.random(33) * 0.01).astype(np.float32)
    w_hat = w.astype(np.float32) * s_w[:, None]
    y = reference.w8a8_linear(x, w, s_w)
    _, s_x = reference.quantize_per_token(x)
    bound = s_x[:, None] / 2 * np.abs(w_hat).sum(axis=1)[None, :]
    assert np.all(np.abs(y - x @ w_hat.T) <= bound * 1.001 + 1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_gemm_on_prepacked_weights_equals_the_reference(kind):
    rng = np.random.default_rng(8)
    a = rng.integers(-128, 128, (9, 131), dtype=np.int8)
    b = rng.integers(-128, 128, (70, 131), dtype=np.int8)
    p = numba_int.prepack_w8a8(b, np.ones(70, np.float32), kind)
    assert np.array_equal(numba_int.int8_matmul_packed(a, p), reference.int8_matmul(a, b))
