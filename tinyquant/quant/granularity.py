"""Granularity as a block shape: which elements share one (scale, zero).

One quantizer serves every granularity (torchao's ``block_size`` idea): a tensor of shape
``(d0, d1, …)`` is tiled by blocks of shape ``block_size = (b0, b1, …)``, each bᵢ dividing dᵢ, and
every block gets its own (scale, zero). The scale array therefore has shape ``(d0/b0, d1/b1, …)``.

    per_tensor   (O, I) -> block (O, I)   scale (1, 1)
    per_channel  (O, I) -> block (1, I)   scale (O, 1)     one per output row (weights)
    per_group    (O, I) -> block (1, g)   scale (O, I/g)   g along the input dim (GPTQ, GGUF)
    per_token    (T, F) -> block (1, F)   scale (T, 1)     one per activation row

Weights are stored (out_features, in_features), so a group always runs along the last axis.
Ref: torchao quant_primitives (block_size); GPTQ ``groupsize``; llama.cpp blocks of 32.
"""

from __future__ import annotations

from collections.abc import Sequence

from .checks import check_int, divisors_near

__all__ = [
    "per_tensor",
    "per_channel",
    "per_group",
    "per_token",
    "check_block_size",
    "num_blocks",
]


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, str) or not isinstance(shape, Sequence):
        raise TypeError(f"shape must be a tuple of ints, got {type(shape).__name__} {shape!r}")
    shape = tuple(check_int(d, "every dimension of shape", minimum=None) for d in shape)
    if len(shape) == 0:
        raise ValueError("shape () has no axes; quantize at least a 1-D array")
    if any(d <= 0 for d in shape):
        raise ValueError(f"shape {shape} has an empty axis; every dimension must be >= 1")
    return shape


def per_tensor(shape: Sequence[int]) -> tuple[int, ...]:
    """One block covering the whole tensor.

    >>> per_tensor((4, 8))
    (4, 8)
    """
    return _shape(shape)


def per_channel(shape: Sequence[int]) -> tuple[int, ...]:
    """One block per output row of an (out, in) weight: block (1, …, 1, in).

    >>> per_channel((4, 8))
    (1, 8)
    """
    shape = _shape(shape)
    return (1,) * (len(shape) - 1) + (shape[-1],)


def per_token(shape: Sequence[int]) -> tuple[int, ...]:
    """One block per row of a (tokens, features) activation: block (1, …, 1, features).

    >>> per_token((3, 16))
    (1, 16)
    >>> per_token((2, 3, 16))
    (1, 1, 16)
    """
    return per_channel(shape)


def per_group(shape: Sequence[int], group_size: int) -> tuple[int, ...]:
    """Blocks of ``group_size`` consecutive elements along the last (input) axis.

    >>> per_group((4, 128), 32)
    (1, 32)
    >>> per_group((4, 96), 64)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: group_size 64 does not divide ... 96 ...; use a divisor such as 32, 48 or 96
    """
    shape = _shape(shape)
    g = check_int(group_size, "group_size")
    n = shape[-1]
    if n % g != 0:
        near = divisors_near(n, g)
        hint = str(near[-1])
        if len(near) > 1:
            hint = ", ".join(str(d) for d in near[:-1]) + f" or {near[-1]}"
        raise ValueError(
            f"group_size {g} does not divide the last dimension {n} of shape {shape}; "
            f"use a divisor such as {hint}"
        )
    return (1,) * (len(shape) - 1) + (g,)


def check_block_size(shape: Sequence[int], block_size: Sequence[int]) -> tuple[int, ...]:
    """Validate that ``block_size`` tiles ``shape``; return it as a tuple of ints.

    >>> check_block_size((4, 8), (1, 4))
    (1, 4)
    >>> check_block_size((4, 8), (1, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: block_size (1, 3) does not tile shape (4, 8): 3 does not divide 8 on axis 1; ...
    """
    shape = _shape(shape)
    if isinstance(block_size, str) or not isinstance(block_size, Sequence):
        raise TypeError(
            f"block_size must be a tuple of ints, got {type(block_size).__name__} {block_size!r}"
        )
    block = tuple(check_int(b, "every entry of block_size", minimum=None) for b in block_size)
    if len(block) != len(shape):
        raise ValueError(
            f"block_size {block} has {len(block)} axes but the tensor has shape {shape} "
            f"({len(shape)} axes); give one block length per axis, e.g. per_channel(shape)"
        )
    for axis, (d, b) in enumerate(zip(shape, block, strict=True)):
        if b <= 0 or d % b != 0:
            divs = ", ".join(str(v) for v in divisors_near(d, max(b, 1), 8))
            raise ValueError(
                f"block_size {block} does not tile shape {shape}: {b} does not divide {d} "
                f"on axis {axis}; use a divisor of {d} such as {divs}"
            )
    return block


def num_blocks(shape: Sequence[int], block_size: Sequence[int]) -> tuple[int, ...]:
    """Shape of the scale array: ``shape // block_size`` elementwise.

    >>> num_blocks((4, 128), (1, 32))
    (4, 4)
    """
    block = check_block_size(shape, block_size)
    return tuple(d // b for d, b in zip(shape, block, strict=True))
