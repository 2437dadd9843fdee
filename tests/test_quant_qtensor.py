"""QTensor: exact bytes, round trip, storage dtypes."""

import numpy as np
import pytest

from tinyquant.quant import QTensor, fake_quantize, per_group, quantize_tensor

RNG = np.random.default_rng(1)


@pytest.mark.parametrize(
    "fmt,sym",
    [
        ("int8", True),
        ("int4", True),
        ("uint4", False),
        ("int3", True),
        ("uint2", False),
        ("ternary", True),
    ],
)
def test_qtensor_dequantizes_to_the_fake_quantized_tensor(fmt, sym):
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    block = per_group(x.shape, 32)
    qt = quantize_tensor(x, fmt, block, symmetric=sym)
    np.testing.assert_array_equal(qt.dequantize(), fake_quantize(x, fmt, block, symmetric=sym))


def test_int4_group32_with_fp16_scales_costs_4_5_bits_per_weight_like_q4_0():
    x = RNG.standard_normal((8, 256)).astype(np.float32)
    qt = quantize_tensor(x, "int4", per_group(x.shape, 32), scale_dtype="float16")
    assert qt.bits_per_weight == 4.5
    assert qt.nbytes == qt.codes.nbytes + qt.scale.nbytes


def test_asymmetric_qtensor_counts_one_byte_per_zero():
    x = RNG.standard_normal((8, 256)).astype(np.float32)
    qt = quantize_tensor(x, "uint4", per_group(x.shape, 128), symmetric=False)
    assert qt.nbytes == 8 * 128 + 8 * 2 * 4 + 8 * 2 * 1


def test_gptq_symmetric_qtensor_stores_its_zero():
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    qt = quantize_tensor(x, "uint4", (1, 16), convention="gptq")
    assert qt.zero is not None and np.all(qt.zero == 8)


def test_fp16_scale_codes_agree_with_the_stored_scale():
    x = RNG.standard_normal((2, 32)).astype(np.float32) * 3
    qt = quantize_tensor(x, "int8", (1, 32), scale_dtype="float16")
    err = np.abs(qt.dequantize() - x)
    assert np.all(err <= qt.scale.astype(np.float32).max() / 2 * (1 + 1e-6))


def test_qtensor_rejects_codes_of_the_wrong_shape():
    with pytest.raises(ValueError, match="codes must be uint8"):
        QTensor(
            np.zeros((2, 3), np.uint8),
            np.ones((2, 1), np.float32),
            None,
            quantize_tensor(np.ones((2, 8), np.float32), "int4", (1, 8)).fmt,
            (1, 8),
            (2, 8),
        )
