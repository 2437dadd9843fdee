"""RTN: the thin layer over the core agrees with the row-wise GPTQ grid GPTQ itself uses."""

import numpy as np
import pytest

from tinyquant.algos.qgrid import fake_quantize_rows
from tinyquant.algos.rtn import rtn_quantize


@pytest.mark.parametrize(
    "bits,group_size,symmetric", [(4, 32, False), (3, None, True), (2, 16, False)]
)
def test_rtn_through_the_core_equals_the_row_grid_gptq_uses(bits, group_size, symmetric):
    W = np.random.default_rng(bits).normal(size=(16, 64)).astype(np.float32)
    np.testing.assert_array_equal(
        rtn_quantize(W, f"uint{bits}", group_size, symmetric, "gptq").dequantize(),
        fake_quantize_rows(W, bits, group_size, symmetric),
    )


def test_rtn_error_is_at_most_half_a_step():
    W = np.random.default_rng(0).normal(size=(8, 128)).astype(np.float32)
    qt = rtn_quantize(W, "uint3", 32)
    step = np.repeat(qt.scale, 32, axis=1)
    assert np.all(np.abs(qt.dequantize() - W) <= step / 2 + 1e-6)


def test_nf4_goes_through_the_codebook_path():
    W = np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)
    qt = rtn_quantize(W, "nf4", 64)
    assert qt.fmt.name == "nf4" and qt.zero is None


def test_symmetric_gptq_convention_with_a_signed_format_is_a_clear_error():
    with pytest.raises(ValueError, match="unsigned"):
        rtn_quantize(np.ones((2, 8), np.float32), "int4", 8, symmetric=True)
