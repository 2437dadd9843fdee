"""The Linear protocol: what every object that replaces a weight in the params dict provides.

    forward(x)         y = x Wᵀ for x (…, in_features) → (…, out_features) float32
    in_features, out_features
    nbytes             bytes of the weight as stored (codes, scales, zeros, signs, …)
    path               "fake" (dequantized weights, float matmul) or "int" (integer kernels)
    has_int_kernel     whether ``with_path("int")`` exists for this object
    with_path(path)    the same weight on the other path — a new object, never a mutation
    to_state(prefix)   (arrays, JSON-able layout) for a quantized checkpoint; ``from_state``
                       (a classmethod) reads it back

The model's single call site ``linear(x, w)`` calls ``w.forward(x)``; nothing else is asked of
a replaced weight, so a new kind of quantized Linear is a new class, not a new flag. One method
is optional: a class may offer ``forward_shared(x, ws)`` (a static method), the outputs of
several of its Linears that read the same x in one call, or None to decline; the model's
``linears`` uses it for q/k/v and gate/up, and the values must equal one ``forward`` each.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["QLinear", "PATHS", "LINEAR_TYPES", "register", "linear_from_state", "check_path",
           "check_input", "exact_int_matmul"]  # fmt: skip

PATHS = ("fake", "int")


@runtime_checkable
class QLinear(Protocol):
    in_features: int
    out_features: int

    @property
    def nbytes(self) -> int: ...

    @property
    def path(self) -> str: ...

    @property
    def has_int_kernel(self) -> bool: ...

    def forward(self, x: np.ndarray) -> np.ndarray: ...

    def with_path(self, path: str) -> QLinear: ...

    def to_state(self, prefix: str = "") -> tuple[dict[str, np.ndarray], dict]: ...


def check_path(path: str, has_int_kernel: bool, what: str) -> str:
    """``path`` if it is valid for this Linear, else a ValueError saying what to do.

    >>> check_path("fake", False, "nf4 weights")
    'fake'
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if path == "int" and not has_int_kernel:
        raise ValueError(f"{what} have no integer kernel; use path='fake'")
    return path


def check_input(x: np.ndarray, in_features: int) -> np.ndarray:
    """x as float32 (…, in_features), finite — the same check on both paths.

    >>> check_input(np.ones((2, 3)), 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: x has 3 features on its last axis but this Linear expects 4
    """
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[-1] != in_features:
        got = "a 0-d scalar" if x.ndim == 0 else f"{x.shape[-1]} features on its last axis"
        raise ValueError(f"x has {got} but this Linear expects {in_features}")
    if x.dtype.kind != "f":
        raise ValueError(f"x must be a float array, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("x holds NaN or Inf; the layer input must be finite")
    return x


LINEAR_TYPES: dict[str, type] = {}  # saved "type" → class, filled by ``register``


def register(cls: type) -> type:
    """Class decorator: make ``cls`` readable back from a saved layout (its ``type`` entry)."""
    LINEAR_TYPES[cls.__name__] = cls
    return cls


def linear_from_state(arrays: dict[str, np.ndarray], meta: dict, prefix: str = ""):
    """The Linear that ``to_state(prefix)`` described: its ``type`` names the class, the class
    reads its own state."""
    kind = meta.get("type") if isinstance(meta, dict) else None
    if kind not in LINEAR_TYPES:
        raise ValueError(f"unknown Linear type {kind!r} at {prefix!r}; known: {list(LINEAR_TYPES)}")
    try:
        return LINEAR_TYPES[kind].from_state(arrays, meta, prefix)
    except KeyError as err:
        raise ValueError(
            f"the saved Linear at {prefix!r} lacks {err}; the file is incomplete"
        ) from err


def exact_int_matmul(q_x: np.ndarray, q_w: np.ndarray) -> np.ndarray:
    """q_x q_wᵀ for int8-valued operands (T, K) and (O, K), exact, as float32 (T, O).

    Every product is at most 127² and every partial sum at most K·127²: below 2²⁴ (K ≤ 1040)
    float32 represents them all, so BLAS's float32 GEMM is exact in any summation order;
    beyond, float64 (exact below 2⁵³). This is the fake path's stand-in for the int32 kernel.

    >>> q = np.full((1, 1040), 127, np.int8)
    >>> int(exact_int_matmul(q, q)[0, 0]) == 1040 * 127 * 127
    True
    """
    dt = np.float32 if q_x.shape[-1] * 127 * 127 < 2**24 else np.float64
    return (q_x.astype(dt) @ q_w.astype(dt).T).astype(np.float32)
