"""QTensor: a quantized tensor as it sits in memory — packed codes, scales, zeros — and its bytes.

    x̂ = (unpack(codes) − zero) · expand(scale)          int formats   (affine.py)
    x̂ = grid[unpack(codes)] · expand(absmax)             codebook formats (codebook.py)
    x̂ = decode(codes) · expand(scale)                    float formats (floats.py), scaled FP8/FP4

    nbytes          = codes.nbytes + scale bytes + zero bytes (+ nested scale QTensor, + offset)
    bits_per_weight = 8 · nbytes / x.size

Storage choices (what ``nbytes`` counts — exactly the arrays held here):
  * codes: uint8, packed along the last axis with pack.py (signed codes offset by 2^(b−1));
  * scale: float32 by default, or float16 with ``scale_dtype="float16"`` (llama.cpp-style; the
    codes are then computed with the fp16-rounded scale so that codes and scale agree);
    a double-quantized scale (QLoRA) is itself a QTensor plus a float32 ``scale_offset``;
  * zero: ``None`` when it is identically 0 (symmetric signed), else one byte per block
    (int8 for signed formats, uint8 for unsigned) — GPTQ's symmetric (maxq+1)/2 is stored too,
    as GPTQ does.
Ref: llama.cpp "bits per weight" (bpw); GPTQ qweight/qzeros/scales.
Shape legend: x (d0, …, d_last); codes (d0, …, d_last·b/8); scale/zero (d0/b0, …, d_last/b_last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import affine
from .floats import decode
from .formats import Format, get_format
from .granularity import check_block_size, num_blocks
from .pack import packed_length, to_signed, unpack

__all__ = ["QTensor", "SCALE_DTYPES"]

SCALE_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True, eq=False)
class QTensor:
    """Packed codes + scale (+ zero) + format + block_size + original shape.

    >>> w = np.arange(-8, 8, dtype=np.float32).reshape(2, 8)
    >>> from tinyquant.quant import quantize_tensor
    >>> qt = quantize_tensor(w, "int4", (1, 8))
    >>> qt.codes.shape, qt.scale.shape, qt.zero, qt.nbytes, qt.bits_per_weight
    ((2, 4), (2, 1), None, 16, 8.0)
    >>> bool(np.abs(qt.dequantize() - w).max() <= qt.scale.max() / 2)
    True
    """

    codes: np.ndarray  # uint8 (…, packed last dim): packed unsigned codes
    scale: np.ndarray | QTensor  # per-block scale (float32 / float16), or double-quantized
    zero: np.ndarray | None  # per-block zero (int8 / uint8), None when identically 0
    fmt: Format  # the format of the codes
    block_size: tuple[int, ...]  # elements sharing one (scale, zero)
    shape: tuple[int, ...]  # the original tensor's shape
    scale_offset: float | None = None  # double quantization: absmax = dequant(scale) + offset

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.shape)
        block = check_block_size(shape, self.block_size)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "block_size", block)
        want_codes = shape[:-1] + (packed_length(shape[-1], self.fmt.storage_bits),)
        if self.codes.dtype != np.uint8 or self.codes.shape != want_codes:
            raise ValueError(
                f"codes must be uint8 of shape {want_codes} (packed {self.fmt.storage_bits}-bit "
                f"codes of shape {shape}), got {self.codes.dtype} {self.codes.shape}"
            )
        want = num_blocks(shape, block)
        if isinstance(self.scale, QTensor):  # double-quantized: flat, possibly zero-padded
            if self.scale.size < int(np.prod(want)) or self.scale_offset is None:
                raise ValueError(
                    f"a nested scale QTensor needs >= {int(np.prod(want))} values and a "
                    "scale_offset"
                )
        elif np.shape(self.scale) != want:
            raise ValueError(f"scale must have shape {want}, got {np.shape(self.scale)}")
        elif np.asarray(self.scale).dtype not in (np.float16, np.float32):
            raise ValueError(
                f"scale must be float16 or float32, got {np.asarray(self.scale).dtype}"
            )
        if self.zero is not None and np.shape(self.zero) != want:
            raise ValueError(f"zero must have shape {want}, got {np.shape(self.zero)}")
        if self.zero is not None and np.asarray(self.zero).dtype not in (np.int8, np.uint8):
            raise ValueError(f"zero must be int8 or uint8, got {np.asarray(self.zero).dtype}")

    # -- storage --------------------------------------------------------------------------------
    def to_state(self, prefix: str = "") -> tuple[dict[str, np.ndarray], dict]:
        """(arrays named ``prefix``codes/scale/zero, JSON-able layout) — what a file stores.

        >>> from tinyquant.quant import quantize_tensor
        >>> qt = quantize_tensor(np.ones((2, 4), np.float32), "uint4", (1, 4), symmetric=False)
        >>> arrays, meta = qt.to_state("w.")
        >>> sorted(arrays), meta["fmt"], QTensor.from_state(arrays, meta, "w.").nbytes == qt.nbytes
        (['w.codes', 'w.scale', 'w.zero'], 'uint4', True)
        """
        arrays = {prefix + "codes": self.codes}
        meta = {"fmt": self.fmt.name, "block_size": list(self.block_size),
                "shape": list(self.shape), "scale_offset": self.scale_offset}  # fmt: skip
        if isinstance(self.scale, QTensor):
            nested, meta["scale"] = self.scale.to_state(prefix + "scale.")
            arrays |= nested
        else:
            arrays[prefix + "scale"] = np.asarray(self.scale)
        if self.zero is not None:
            arrays[prefix + "zero"] = np.asarray(self.zero)
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict, meta: dict, prefix: str = "") -> QTensor:
        """Inverse of ``to_state``; every field is checked against the layout it claims."""
        try:
            scale = (
                cls.from_state(arrays, meta["scale"], prefix + "scale.")
                if isinstance(meta.get("scale"), dict)
                else arrays[prefix + "scale"]
            )
            return cls(np.asarray(arrays[prefix + "codes"]), scale, arrays.get(prefix + "zero"),
                       get_format(meta["fmt"]), tuple(meta["block_size"]), tuple(meta["shape"]),
                       meta.get("scale_offset"))  # fmt: skip
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"quantized tensor {prefix!r} is incomplete ({err!r} missing)"
            ) from err

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of elements of the original tensor."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Exact bytes held: packed codes + scales + zeros (+ nested scale and its offset)."""
        n = self.codes.nbytes + self.scale.nbytes
        if self.zero is not None:
            n += self.zero.nbytes
        if self.scale_offset is not None:
            n += 4  # one float32
        return int(n)

    @property
    def bits_per_weight(self) -> float:
        """All stored bits divided by the number of elements (llama.cpp's bpw)."""
        return 8.0 * self.nbytes / self.size

    # -- values ---------------------------------------------------------------------------------
    def scale_values(self) -> np.ndarray:
        """The per-block scale as float32 (dequantizing a double-quantized scale)."""
        if isinstance(self.scale, QTensor):
            want = num_blocks(self.shape, self.block_size)
            flat = self.scale.dequantize().reshape(-1)[: int(np.prod(want))]  # drop the padding
            absmax = (flat + np.float32(self.scale_offset)).astype(np.float32)
            # an absmax is ≥ 0; the 8-bit code's error can push a small one below 0, which
            # would flip the sign of its whole block: clamp (bitsandbytes does not)
            return np.maximum(absmax, np.float32(0)).reshape(want)
        return np.asarray(self.scale, dtype=np.float32)

    def unpacked_codes(self) -> np.ndarray:
        """Codes at full width: int8 for signed int formats, else uint8 indices/bit patterns."""
        u = unpack(self.codes, self.fmt.storage_bits, self.shape[-1])  # (…, d_last) uint8
        if self.fmt.kind == "int" and self.fmt.signed:
            return to_signed(u, self.fmt.storage_bits)
        return u

    def dequantize(self) -> np.ndarray:
        """The float32 tensor the codes stand for, of shape ``self.shape``."""
        scale = self.scale_values()
        codes = self.unpacked_codes()
        if self.fmt.kind == "int":
            zero = 0 if self.zero is None else self.zero.astype(np.int32)
            return affine.dequantize(codes, scale, zero, self.block_size)
        if self.fmt.kind == "codebook":
            grid = np.array(self.fmt.grid, dtype=np.float32)
            vals = grid[codes]  # (…) float32
        else:
            vals = decode(codes, self.fmt)
        return (vals * affine.expand(scale, self.block_size, self.shape)).astype(np.float32)
