"""Bit packing: b-bit unsigned codes ⇄ bytes, along the last axis, little-endian.

    n codes of b bits  →  n·b/8 bytes        (b ∈ {8, 6, 4, 3, 2})

Codes must be *unsigned*, in [0, 2^b). Signed codes q ∈ [−2^(b−1), 2^(b−1)) are stored offset
by 2^(b−1) (``to_unsigned`` / ``to_signed``; QTensor does this, kernels undo it). The layouts
(defined here and only here; a kernel may repack into its own layout):

  INT4  byte k = [ c[2k+1] : high nibble | c[2k] : low nibble ]
                   bit  7 6 5 4             3 2 1 0

  INT2  byte k = [ c[4k+3] | c[4k+2] | c[4k+1] | c[4k] ]
                   bit 7 6   5 4       3 2       1 0

  INT3  8 codes → 3 bytes: the 24-bit little-endian word w = Σ_j c[8k+j] << 3j,
        byte 3k = w & 0xFF, byte 3k+1 = (w >> 8) & 0xFF, byte 3k+2 = w >> 16
          w bit: 23..21 20..18 17..15 14..12 11..9 8..6 5..3 2..0
          code :   c7     c6     c5     c4     c3   c2   c1   c0
        (c2 and c5 straddle a byte boundary.)

  INT6  4 codes → 3 bytes: the 24-bit little-endian word w = Σ_j c[4k+j] << 6j,
        stored as INT3's three bytes (c1 and c2 straddle byte boundaries).

  INT8  byte k = c[k].

Relation to other layouts: llama.cpp Q4_0 puts element j in the low nibble and j+16 in the high
nibble of a 32-block; bitsandbytes puts element 2i in the HIGH nibble (codebook.py swaps).
Shape legend: codes (…, n) → packed (…, n·b/8).
"""

from __future__ import annotations

import numpy as np

from .checks import check_bits, check_int

__all__ = ["pack", "unpack", "to_unsigned", "to_signed", "packed_length", "codes_per_unit",
           "SUPPORTED_BITS"]  # fmt: skip

SUPPORTED_BITS = (8, 6, 4, 3, 2)
_CODES_PER_UNIT = {8: 1, 6: 4, 4: 2, 3: 8, 2: 4}  # codes per whole number of bytes
_BYTES_PER_UNIT = {8: 1, 6: 3, 4: 1, 3: 3, 2: 1}


def _check_bits(bits: int) -> int:
    return check_bits(bits, "bits (the supported bits of packing)", allowed=SUPPORTED_BITS)


def packed_length(n: int, bits: int) -> int:
    """Bytes that n codes of ``bits`` bits occupy; ValueError if n does not fill whole bytes.

    >>> packed_length(64, 4), packed_length(64, 3), packed_length(64, 2)
    (32, 24, 16)
    """
    bits = _check_bits(bits)
    n = check_int(n, "n (the number of codes)", minimum=0)
    unit = _CODES_PER_UNIT[bits]
    if n % unit != 0:
        raise ValueError(
            f"{bits}-bit packing needs the last dimension to be a multiple of {unit}, got {n}; "
            f"pad it to {n + (-n) % unit}"
        )
    return n // unit * _BYTES_PER_UNIT[bits]


def codes_per_unit(bits: int) -> int:
    """How many b-bit codes fill a whole number of bytes (a row's length must be a multiple).

    >>> [codes_per_unit(b) for b in (8, 6, 4, 3, 2)]
    [1, 4, 2, 8, 4]
    """
    return _CODES_PER_UNIT[_check_bits(bits)]


def to_unsigned(codes: np.ndarray, bits: int) -> np.ndarray:
    """Signed codes in [−2^(b−1), 2^(b−1)) → unsigned uint8 by adding 2^(b−1).

    >>> to_unsigned(np.array([-8, -1, 0, 7], dtype=np.int8), 4)
    array([ 0,  7,  8, 15], dtype=uint8)
    """
    bits = _check_bits(bits)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise ValueError(f"codes must be an integer array, got dtype {codes.dtype}")
    c = codes.astype(np.int16) + (1 << (bits - 1))
    if c.size and (c.min() < 0 or c.max() >= (1 << bits)):
        raise ValueError(f"signed codes outside [{-(1 << (bits - 1))}, {(1 << (bits - 1)) - 1}]")
    return c.astype(np.uint8)


def to_signed(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of ``to_unsigned``: uint8 codes → int8 by subtracting 2^(b−1).

    >>> to_signed(np.array([0, 7, 8, 15], dtype=np.uint8), 4)
    array([-8, -1,  0,  7], dtype=int8)
    """
    bits = _check_bits(bits)
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise ValueError(f"codes must be an integer array, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() >= (1 << bits)):
        raise ValueError(
            f"unsigned {bits}-bit codes must lie in [0, {(1 << bits) - 1}], got "
            f"[{c.min()}, {c.max()}]"
        )
    return (c.astype(np.int16) - (1 << (bits - 1))).astype(np.int8)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned b-bit codes along the last axis into uint8.

    >>> pack(np.array([1, 2, 3, 4], dtype=np.uint8), 4)   # [0x21, 0x43]
    array([33, 67], dtype=uint8)
    >>> pack(np.array([1, 2, 3, 0], dtype=np.uint8), 2)   # 0b00_11_10_01
    array([57], dtype=uint8)
    """
    bits = _check_bits(bits)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise ValueError(f"codes must be an integer array, got dtype {codes.dtype}")
    if codes.ndim == 0:
        raise ValueError("codes must have at least one axis")
    n = codes.shape[-1]
    packed_length(n, bits)  # validates n
    if codes.size and (codes.min() < 0 or codes.max() >= (1 << bits)):
        raise ValueError(
            f"codes must be unsigned in [0, {(1 << bits) - 1}] for {bits}-bit packing, got "
            f"[{codes.min()}, {codes.max()}]; offset signed codes with to_unsigned first"
        )
    lead = codes.shape[:-1]
    c = codes.astype(np.uint32)
    if bits == 8:
        return c.astype(np.uint8)
    if bits == 4:
        c = c.reshape(*lead, n // 2, 2)  # (…, n/2, 2)
        return (c[..., 0] | (c[..., 1] << 4)).astype(np.uint8)  # (…, n/2)
    if bits == 2:
        c = c.reshape(*lead, n // 4, 4)  # (…, n/4, 4)
        byte = c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)
        return byte.astype(np.uint8)  # (…, n/4)
    # bits == 3 or 6: 24/bits codes → one 24-bit word → 3 bytes
    k = 24 // bits
    c = c.reshape(*lead, n // k, k)  # (…, n/k, k)
    w = np.zeros(c.shape[:-1], dtype=np.uint32)
    for j in range(k):
        w |= c[..., j] << (bits * j)
    out = np.stack([w & 0xFF, (w >> 8) & 0xFF, w >> 16], axis=-1)  # (…, n/k, 3)
    return out.astype(np.uint8).reshape(*lead, n // k * 3)  # (…, 3n/k)


def unpack(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of ``pack``: uint8 bytes → n unsigned codes (uint8) along the last axis.

    >>> unpack(np.array([33, 67], dtype=np.uint8), 4, 4)
    array([1, 2, 3, 4], dtype=uint8)
    """
    bits = _check_bits(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed must be uint8, got dtype {packed.dtype}")
    nbytes = packed_length(n, bits)
    if packed.ndim == 0 or packed.shape[-1] != nbytes:
        raise ValueError(
            f"{n} codes of {bits} bits need {nbytes} bytes on the last axis, "
            f"got shape {packed.shape}"
        )
    lead = packed.shape[:-1]
    p = packed.astype(np.uint32)
    if bits == 8:
        return packed.copy()
    if bits == 4:
        c = np.stack([p & 0xF, p >> 4], axis=-1)  # (…, n/2, 2)
    elif bits == 2:
        c = np.stack([(p >> s) & 0x3 for s in (0, 2, 4, 6)], axis=-1)  # (…, n/4, 4)
    else:  # 3 or 6 bits: 3 bytes hold one 24-bit word of 24/bits codes
        k, mask = 24 // bits, (1 << bits) - 1
        p = p.reshape(*lead, n // k, 3)  # (…, n/k, 3)
        w = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)
        c = np.stack([(w >> (bits * j)) & mask for j in range(k)], axis=-1)  # (…, n/k, k)
    return c.astype(np.uint8).reshape(*lead, n)
