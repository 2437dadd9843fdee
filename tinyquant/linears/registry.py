"""Reading a saved Linear back: its ``type`` names the class, the class reads its own state."""

from __future__ import annotations

import numpy as np

from .quant_linear import QuantLinear
from .wrappers import ActQuantLinear, Int8OutlierLinear, RotatedLinear

__all__ = ["LINEAR_TYPES", "linear_from_state"]

LINEAR_TYPES = {c.__name__: c for c in (QuantLinear, ActQuantLinear, RotatedLinear,
                                         Int8OutlierLinear)}  # fmt: skip


def linear_from_state(arrays: dict[str, np.ndarray], meta: dict, prefix: str = ""):
    """The Linear that ``to_state(prefix)`` described (a float array for a plain weight)."""
    kind = meta.get("type") if isinstance(meta, dict) else None
    if kind == "array":
        return np.asarray(arrays[prefix.rstrip(".")])
    if kind not in LINEAR_TYPES:
        raise ValueError(f"unknown Linear type {kind!r} at {prefix!r}; known: {list(LINEAR_TYPES)}")
    try:
        return LINEAR_TYPES[kind].from_state(arrays, meta, prefix)
    except KeyError as err:
        raise ValueError(
            f"the saved Linear at {prefix!r} lacks {err}; the file is incomplete"
        ) from err
