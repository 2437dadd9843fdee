"""Bit packing: documented layouts, inverse, errors."""

import numpy as np
import pytest

from tinyquant.quant import pack, packed_length, to_signed, to_unsigned, unpack


def test_int4_low_nibble_holds_the_even_element():
    assert pack(np.array([0xA, 0x5], np.uint8), 4)[0] == 0x5A


def test_int2_lowest_bits_hold_the_first_element():
    assert pack(np.array([3, 0, 0, 0], np.uint8), 2)[0] == 0b00000011
    assert pack(np.array([0, 0, 0, 3], np.uint8), 2)[0] == 0b11000000


def test_int3_packs_a_24_bit_little_endian_word():
    c = np.arange(8, dtype=np.uint8)
    word = sum(int(v) << (3 * j) for j, v in enumerate(c))
    assert pack(c, 3).tolist() == [word & 0xFF, (word >> 8) & 0xFF, word >> 16]


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_unpack_inverts_pack_on_every_code(bits):
    rng = np.random.default_rng(bits)
    c = rng.integers(0, 2**bits, size=(5, 48), dtype=np.uint8)
    p = pack(c, bits)
    assert p.shape == (5, packed_length(48, bits))
    np.testing.assert_array_equal(unpack(p, bits, 48), c)


def test_signed_offset_round_trips():
    c = np.arange(-8, 8, dtype=np.int8)
    np.testing.assert_array_equal(to_signed(to_unsigned(c, 4), 4), c)


def test_length_not_multiple_of_packing_unit_is_rejected():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack(np.zeros(12, np.uint8), 3)


def test_out_of_range_codes_are_rejected():
    with pytest.raises(ValueError, match="to_unsigned"):
        pack(np.array([16, 0], np.uint8), 4)


def test_unsupported_bits_are_rejected():
    with pytest.raises(ValueError, match="supported bits"):
        pack(np.zeros(8, np.uint8), 5)
