"""Codebook formats: bitsandbytes' code choice, double quantization, byte layout."""

import numpy as np
import pytest

from tinyquant.quant import get_format, quantize_tensor
from tinyquant.quant.codebook import (
    encode_codebook,
    from_bnb_bytes,
    quantize_codebook,
    to_bnb_bytes,
)

# dQuantizeNF4's literals, copied from bitsandbytes csrc/kernels.cu (the oracle)
BNB_NF4_PIVOTS = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
]


def bnb_nf4(x):
    """A transcription of bitsandbytes' dQuantizeNF4 comparison tree, one value at a time."""
    x = np.float32(x)
    p = [np.float32(v) for v in BNB_NF4_PIVOTS]
    if x > p[7]:
        if x > p[11]:
            if x > p[13]:
                return 15 if x > p[14] else 14
            return 13 if x > p[12] else 12
        if x > p[9]:
            return 11 if x > p[10] else 10
        return 9 if x > p[8] else 8
    if x > p[3]:
        if x > p[5]:
            return 7 if x > p[6] else 6
        return 5 if x > p[4] else 4
    if x > p[1]:
        return 3 if x > p[2] else 2
    return 1 if x > p[0] else 0


def test_nf4_codes_equal_bitsandbytes_tree_on_pivots_and_neighbours():
    p = np.array(BNB_NF4_PIVOTS, np.float32)
    y = np.concatenate(
        [p, np.nextafter(p, 2), np.nextafter(p, -2), np.linspace(-1, 1, 1001, dtype=np.float32)]
    )
    np.testing.assert_array_equal(encode_codebook(y, "nf4"), [bnb_nf4(v) for v in y])


def test_an_exact_midpoint_goes_to_the_lower_nf4_code():
    mid = np.float32((np.float64(get_format("nf4").grid[8]) + 0) / 2)
    assert encode_codebook(np.array([mid]), "nf4")[0] == 7


def test_fp4_bnb_codes_decode_to_the_nearest_value():
    grid = np.array(get_format("fp4_bnb").grid, np.float32)
    y = np.linspace(-1, 1, 2001, dtype=np.float32)
    got = grid[encode_codebook(y, "fp4_bnb")]
    best = np.abs(y[:, None] - grid[None, :]).min(axis=1)
    np.testing.assert_allclose(np.abs(y - got), best, atol=1e-6)


def test_nf4_dequantizes_to_code_times_absmax():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 128)).astype(np.float32)
    qt = quantize_codebook(w, "nf4")
    absmax = np.abs(w.reshape(4, 2, 64)).max(-1)
    np.testing.assert_array_equal(qt.scale, absmax)
    codes = qt.unpacked_codes().reshape(4, 2, 64)
    grid = np.array(get_format("nf4").grid, np.float32)
    np.testing.assert_array_equal(
        qt.dequantize(), (grid[codes] * absmax[..., None]).reshape(4, 128)
    )


def test_double_quantized_absmax_stays_close_to_the_true_absmax():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 512)).astype(np.float32)
    qt = quantize_codebook(w, "nf4", double_quant=True)
    true = np.abs(w.reshape(256, 8, 64)).max(-1)
    rel = np.abs(qt.scale_values() - true) / true
    assert rel.max() < 0.02
    assert qt.nbytes == qt.codes.nbytes + qt.scale.codes.nbytes + qt.scale.scale.nbytes + 4


def test_bnb_byte_layout_round_trips():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((2, 64)).astype(np.float32)
    qt = quantize_codebook(w, "nf4")
    b = to_bnb_bytes(qt)
    assert b[0] >> 4 == qt.unpacked_codes()[0, 0]
    np.testing.assert_array_equal(from_bnb_bytes(b, w.shape), qt.codes)


def test_all_zero_block_decodes_to_zeros():
    w = np.zeros((1, 64), np.float32)
    np.testing.assert_array_equal(quantize_codebook(w, "nf4").dequantize(), w)


def test_quantize_tensor_dispatches_codebook_and_float_formats():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    assert quantize_tensor(w, "nf4", (1, 64)).bits_per_weight == 4.5
    qt = quantize_tensor(w, "fp8_e4m3", (1, 64))
    assert qt.bits_per_weight == 8.5
    rel = np.abs(qt.dequantize() - w) / np.abs(w).max(axis=1, keepdims=True)
    assert rel.max() <= 2**-4 * 448 / 448  # half an ulp at the top binade, relative to amax


def test_codebook_rejects_integer_formats():
    with pytest.raises(ValueError, match="not a codebook format"):
        quantize_codebook(np.zeros((1, 64), np.float32), "int4")
