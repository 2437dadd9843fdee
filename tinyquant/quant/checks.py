"""Argument checks every public entry point calls first: one line, the argument, what to do.

    arrays    as_float32 / float_array   float dtype, rank, non-empty, finite (NaN/Inf named)
              check_shape                 shape agreement between two arguments
    scalars   check_int                   whole numbers in a range (bools and 32.9 rejected,
                                          never truncated)
              check_real                  finite reals in a range
              check_bits                  a width the format table has (int formats)
              check_option                a known option string
    hints     divisors_near               divisors of n nearest a target, in O(√n)

Each raises ``ValueError`` (a value out of range, an unknown option) or ``TypeError`` (a string
where a number belongs, a non-array), in one line that names the argument, as in
``ValueError("group_size 48 does not divide in_features 128; use a divisor such as 32 or 64")``.
Nothing here runs inside a kernel: kernels/checks.py holds the stricter buffer checks.
This module imports only numpy and the format table, so every floor may use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np

from .formats import FORMATS

__all__ = [
    "check_finite",
    "as_float32",
    "float_array",
    "check_shape",
    "check_int",
    "check_real",
    "check_bits",
    "check_option",
    "divisors_near",
    "INT_BITS",
]

INT_BITS = tuple(sorted({f.bits for f in FORMATS.values() if f.kind == "int"}))  # (2, 3, 4, …)


def check_finite(x: np.ndarray, name: str = "x") -> None:
    """Raise ValueError naming how many values are NaN/Inf and where the first one is.

    >>> check_finite(np.array([[1.0, np.nan], [np.inf, 2.0]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: x has 2 non-finite values (1 NaN, 1 Inf); the first is nan at index (0, 1)...
    """
    bad = ~np.isfinite(x)
    if bad.any():
        n_nan = int(np.isnan(x).sum())
        n_bad = int(bad.sum())
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} has {n_bad} non-finite values ({n_nan} NaN, {n_bad - n_nan} Inf); "
            f"the first is {x[first]} at index {first}. "
            "Remove or replace them (e.g. np.nan_to_num) before quantizing"
        )


def _float_dtype(x, name: str) -> np.ndarray:
    if isinstance(x, str | bytes) or x is None:
        raise TypeError(f"{name} must be a float array, got {type(x).__name__}")
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(
            f"{name} has dtype {x.dtype}; quantize floating-point arrays "
            f"(float16/32/64), e.g. {name}.astype(np.float32)"
        )
    return x


def as_float32(x: np.ndarray, name: str = "x", nonempty: bool = False) -> np.ndarray:
    """x as a float32 array of rank ≥ 1, or a ValueError naming ``name`` (dtype, 0-d, NaN/Inf;
    an empty array too with ``nonempty``).

    >>> as_float32(np.array([1, 2]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: x has dtype int64; quantize floating-point arrays (float16/32/64), ...
    """
    x = _float_dtype(x, name)
    if x.ndim == 0:
        raise ValueError(f"{name} is a 0-d scalar; pass at least a 1-D array (e.g. x[None])")
    if nonempty and x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); pass at least one value")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32, copy=False)
    if x.dtype != np.float32 and np.isfinite(x).all() and not np.isfinite(x32).all():
        raise ValueError(
            f"{name} has values beyond the float32 range (|x| > 3.4e38) that become inf when "
            "cast to float32; rescale x first"
        )
    check_finite(x32, name)
    return x32


def float_array(
    x, name: str, ndim: int | None = None, what: str = "", dtype=np.float32, finite: bool = True
) -> np.ndarray:
    """A non-empty float array of rank ``ndim`` (``what`` names its axes), cast to ``dtype``.

    >>> float_array(np.ones(4), "W", ndim=2, what="(out_features, in_features)")
    Traceback (most recent call last):
    ...
    ValueError: W must be 2-D (out_features, in_features), got shape (4,)
    >>> float_array(np.ones((2, 0)), "W", ndim=2)
    Traceback (most recent call last):
    ...
    ValueError: W is empty (shape (2, 0)); pass at least one value
    """
    x = _float_dtype(x, name)
    if ndim is not None and x.ndim != ndim:
        axes = f" {what}" if what else ""
        raise ValueError(f"{name} must be {ndim}-D{axes}, got shape {x.shape}")
    if x.ndim == 0:
        raise ValueError(f"{name} is a 0-d scalar; pass at least a 1-D array (e.g. x[None])")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); pass at least one value")
    if finite:
        check_finite(x, name)
    with np.errstate(over="ignore"):
        out = x.astype(dtype, copy=False)
    if finite and not np.isfinite(out).all():
        raise ValueError(
            f"{name} has values beyond the {np.dtype(dtype)} range that become inf when cast; "
            "rescale it first"
        )
    return out


def check_shape(a: np.ndarray, name: str, shape: Sequence[int], why: str) -> None:
    """Require ``a.shape == shape``; ``why`` says which argument implies it.

    >>> check_shape(np.ones((3, 3)), "H", (4, 4), "W has 4 in_features")
    Traceback (most recent call last):
    ...
    ValueError: H has shape (3, 3) but W has 4 in_features, so it must be (4, 4)
    """
    if np.shape(a) != tuple(shape):
        raise ValueError(f"{name} has shape {np.shape(a)} but {why}, so it must be {tuple(shape)}")


def check_int(v, name: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum] as an int: bools, floats (32.9 and 32.0) and
    strings are refused, never truncated.

    >>> check_int(np.int64(32), "group_size")
    32
    >>> check_int(32.9, "group_size")
    Traceback (most recent call last):
    ...
    TypeError: group_size must be an integer, got float 32.9; pass e.g. 32
    >>> check_int(0, "group_size")
    Traceback (most recent call last):
    ...
    ValueError: group_size must be >= 1, got 0
    """
    if isinstance(v, bool | np.bool_) or not isinstance(v, Integral):
        example = ""
        if isinstance(v, Real) and not isinstance(v, bool | np.bool_) and math.isfinite(v):
            example = f"; pass e.g. {max(int(v), 1 if minimum is None else minimum)}"
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}{example}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def check_real(
    v, name: str, lo: float | None = None, hi: float | None = None, open_lo: bool = False
) -> float:
    """A finite real in [lo, hi] (or (lo, hi] with ``open_lo``) as a float.

    >>> check_real(float("nan"), "damp", 0.0)
    Traceback (most recent call last):
    ...
    ValueError: damp must be a finite number >= 0.0, got nan
    """
    if isinstance(v, bool | np.bool_) or not isinstance(v, Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    lo_ok = lo is None or (v > lo if open_lo else v >= lo)
    if not (math.isfinite(v) and lo_ok and (hi is None or v <= hi)):
        if lo is not None and hi is not None:
            rng = f" in {'(' if open_lo else '['}{lo}, {hi}]"
        elif lo is not None:
            rng = f" {'>' if open_lo else '>='} {lo}"
        else:
            rng = "" if hi is None else f" <= {hi}"
        raise ValueError(f"{name} must be a finite number{rng}, got {v}")
    return v


def check_bits(bits, name: str = "bits", allowed: Sequence[int] = INT_BITS) -> int:
    """An integer code width among ``allowed`` (default: every width of the int formats).

    >>> check_bits(3.5)
    Traceback (most recent call last):
    ...
    TypeError: bits must be an integer, got float 3.5; pass e.g. 3
    >>> check_bits(9, allowed=(2, 3, 4, 8))
    Traceback (most recent call last):
    ...
    ValueError: bits must be one of 2, 3, 4, 8, got 9
    """
    b = check_int(bits, name, minimum=None)
    if b not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got {b}")
    return b


def check_option(v, name: str, choices: Sequence[str]) -> str:
    """One of the known option strings.

    >>> check_option("bogus", "group_params_from", ("current", "chunk_start"))
    Traceback (most recent call last):
    ...
    ValueError: group_params_from must be one of 'current', 'chunk_start', got 'bogus'
    """
    if not isinstance(v, str) or v not in choices:
        known = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {known}, got {v!r}")
    return v


def divisors_near(n: int, target: int, k: int = 3) -> list[int]:
    """The ``k`` divisors of n nearest ``target`` (ties: the larger), sorted.

    Bounded time for any n: trial division stops at min(√n, 10⁶), so for n > 10¹² the hint
    draws on the divisors d ≤ 10⁶ and their cofactors n / d (it is a hint, not a factorisation).

    >>> divisors_near(96, 64), divisors_near(10**10, 3)
    ([32, 48, 96], [2, 4, 5])
    """
    divs: set[int] = set()
    for d in range(1, min(math.isqrt(n), 10**6) + 1):
        if n % d == 0:
            divs.update((d, n // d))
    return sorted(sorted(divs, key=lambda d: (abs(d - target), -d))[:k])
