"""Packing and QTensor byte accounting, over generated codes and tensors."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from spec_strategies import tensors

from tinyquant.quant import (
    choose_qparams,
    fake_quantize,
    get_format,
    num_blocks,
    pack,
    packed_length,
    quantize_codebook,
    quantize_tensor,
    to_signed,
    to_unsigned,
    unpack,
)

UNIT = {8: 1, 4: 2, 3: 8, 2: 4}


@st.composite
def unsigned_codes(draw):
    bits = draw(st.sampled_from([8, 4, 3, 2]))
    rows = draw(st.integers(1, 3))
    n = UNIT[bits] * draw(st.integers(1, 6))
    codes = draw(hnp.arrays(np.uint8, (rows, n), elements=st.integers(0, 2**bits - 1)))
    return codes, bits


@given(unsigned_codes())
def test_unpack_after_pack_is_the_identity(cb):
    codes, bits = cb
    packed = pack(codes, bits)
    assert packed.dtype == np.uint8 and packed.shape[-1] == codes.shape[-1] * bits // 8
    np.testing.assert_array_equal(unpack(packed, bits, codes.shape[-1]), codes)


@given(unsigned_codes())
def test_pack_after_unpack_is_the_identity_on_every_byte_string(cb):
    codes, bits = cb
    rng = np.random.default_rng(int(codes.sum()))
    raw = rng.integers(
        0, 256, size=(codes.shape[0], packed_length(codes.shape[1], bits)), dtype=np.uint8
    )
    np.testing.assert_array_equal(pack(unpack(raw, bits, codes.shape[1]), bits), raw)


@given(unsigned_codes())
def test_signed_offset_is_a_bijection(cb):
    codes, bits = cb
    np.testing.assert_array_equal(to_unsigned(to_signed(codes, bits), bits), codes)


FORMATS_FOR_QT = st.sampled_from(
    [("int8", True), ("int4", True), ("int3", True), ("int2", True), ("ternary", True),
     ("uint8", False), ("uint4", False), ("uint3", False), ("uint2", False)]
)  # fmt: skip


@given(
    tensors(group_sizes=(8, 16), max_groups=3),
    FORMATS_FOR_QT,
    st.sampled_from(["float32", "float16"]),
)
def test_qtensor_nbytes_equals_the_bytes_of_its_packed_arrays(xg, fs, scale_dtype):
    x, g = xg
    fmt, sym = fs
    x = np.clip(x, -6e4, 6e4)  # keep fp16 scales finite
    if scale_dtype == "float16":  # an fp16 scale that underflows is refused (tested below)
        scale, _ = choose_qparams(x, fmt, (1, g), symmetric=sym)
        assume(np.all(scale.astype(np.float16) > 0))
    qt = quantize_tensor(x, fmt, (1, g), symmetric=sym, scale_dtype=scale_dtype)
    n_blocks = int(np.prod(num_blocks(x.shape, (1, g))))
    bits = get_format(fmt).storage_bits
    expected = (
        x.size * bits // 8 + n_blocks * np.dtype(scale_dtype).itemsize + (0 if sym else n_blocks)
    )
    arrays = [qt.codes, qt.scale] + ([] if qt.zero is None else [qt.zero])
    assert qt.nbytes == expected == sum(a.nbytes for a in arrays)
    assert qt.bits_per_weight == 8 * expected / x.size


@given(tensors(group_sizes=(8, 16), max_groups=3), FORMATS_FOR_QT)
def test_qtensor_dequantizes_to_fake_quantize(xg, fs):
    x, g = xg
    fmt, sym = fs
    qt = quantize_tensor(x, fmt, (1, g), symmetric=sym)
    np.testing.assert_array_equal(qt.dequantize(), fake_quantize(x, fmt, (1, g), symmetric=sym))


@given(
    st.integers(1, 12),
    st.sampled_from(["nf4", "fp4_bnb"]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_codebook_qtensor_nbytes_counts_codes_absmax_and_double_quant_state(rows, fmt, dq, seed):
    x = np.random.default_rng(seed).standard_normal((rows, 128)).astype(np.float32)
    qt = quantize_codebook(x, fmt, double_quant=dq)
    n_abs = rows * 2
    if dq:
        n_pad = -(-n_abs // 256) * 256
        expected = x.size // 2 + n_pad + 4 * (n_pad // 256) + 4
    else:
        expected = x.size // 2 + 4 * n_abs
    assert qt.nbytes == expected


@given(st.integers(1, 3), st.sampled_from(["int8", "int4", "uint4"]))
def test_a_scale_that_underflows_float16_is_refused_with_a_clear_error(rows, fmt):
    x = np.full((rows, 8), 1e-9, np.float32)
    x[:, 0] = -1e-9
    with pytest.raises(ValueError, match="does not fit in float16"):
        quantize_tensor(x, fmt, (1, 8), symmetric=fmt != "uint4", scale_dtype="float16")
