"""Bad inputs raise ValueError before entering Numba — never a crash or a silent wrong answer."""

from functools import partial

import numpy as np
import pytest

from tinyquant.kernels import numba_int, reference, weight_only
from tinyquant.kernels.checks import MAX_K

GEMMS = [reference.int8_matmul, numba_int.int8_matmul]
W8A8 = [reference.w8a8_linear, numba_int.w8a8_linear]
W4 = [
    partial(reference.weight_only_linear, bits=4),
    partial(weight_only.weight_only_linear, bits=4),
]


def _w4(T=2, O=8, I=64, g=32):
    x = np.ones((T, I), np.float32)
    return (
        x,
        np.zeros((O, I // 2), np.uint8),
        np.ones((O, I // g), np.float32),
        np.zeros((O, I // g), np.float32),
        g,
    )


@pytest.mark.parametrize("fn", GEMMS)
@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((2, 4), np.int16), np.zeros((3, 4), np.int8), "dtype"),
        (np.zeros((2, 4), np.int8), np.zeros((3, 5), np.int8), "columns"),
        (np.zeros((4, 2), np.int8).T, np.zeros((3, 4), np.int8), "contiguous"),
        (np.zeros(4, np.int8), np.zeros((3, 4), np.int8), "axes"),
        (np.zeros((1, MAX_K + 1), np.int8), np.zeros((1, MAX_K + 1), np.int8), "overflow"),
    ],
)
def test_bad_gemm_operands_raise_value_error(fn, a, b, match):
    with pytest.raises(ValueError, match=match):
        fn(a, b)


@pytest.mark.parametrize("fn", W8A8)
def test_w8a8_rejects_nan_wrong_dtype_and_mismatched_shapes(fn):
    w, s = np.ones((3, 4), np.int8), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        fn(np.array([[1, np.nan, 0, 0]], np.float32), w, s)
    with pytest.raises(ValueError, match="dtype"):
        fn(np.ones((1, 4), np.float64), w, s)
    with pytest.raises(ValueError, match="features"):
        fn(np.ones((1, 5), np.float32), w, s)
    with pytest.raises(ValueError, match="w_scale"):
        fn(np.ones((1, 4), np.float32), w, np.ones(2, np.float32))


@pytest.mark.parametrize("fn", W4)
def test_weight_only_rejects_infinite_activations(fn):
    x, p, s, z, g = _w4()
    x[1, 3] = np.inf
    with pytest.raises(ValueError, match=r"non-finite.*\(1, 3\)"):
        fn(x, p, s, z, g)


@pytest.mark.parametrize("fn", W4)
def test_weight_only_rejects_a_group_size_that_does_not_match_the_scales(fn):
    x, p, s, z, _ = _w4()
    with pytest.raises(ValueError, match="group"):
        fn(x, p, s, z, 16)  # scales were made for group 32
    with pytest.raises(ValueError, match="does not divide"):
        fn(x, p, s, z, 48)


@pytest.mark.parametrize("fn", W4)
def test_weight_only_rejects_packed_data_of_the_wrong_width(fn):
    x, p, s, z, g = _w4()
    with pytest.raises(ValueError, match="bytes per row"):
        fn(x, p[:, :-1].copy(), s, z, g)
    with pytest.raises(ValueError, match="bytes per row"):
        fn(np.ones((2, 32), np.float32), p, s[:, :1].copy(), z[:, :1].copy(), 32)


@pytest.mark.parametrize("fn", W4)
def test_weight_only_rejects_non_contiguous_activations_and_wrong_dtypes(fn):
    x, p, s, z, g = _w4(I=64)
    wide = np.ones((2, 128), np.float32)
    with pytest.raises(ValueError, match="contiguous"):
        fn(wide[:, ::2], p, s, z, g)
    with pytest.raises(ValueError, match="dtype"):
        fn(x, p.astype(np.int8), s, z, g)
    with pytest.raises(ValueError, match="dtype"):
        fn(x, p, s.astype(np.float16), z, g)
    with pytest.raises(ValueError, match="zero"):
        fn(x, p, s, z[:3].copy(), g)


def test_packed_linear_rejects_inputs_of_the_wrong_width():
    x, p, s, z, g = _w4()
    pw = weight_only.prepack(p, s, z, g, 4)
    with pytest.raises(ValueError, match="features"):
        weight_only.packed_linear(np.ones((1, 32), np.float32), pw)
    with pytest.raises(ValueError, match="prepack"):
        weight_only.packed_linear(x, p)
