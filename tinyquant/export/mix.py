"""llama-quantize's type mixes: which GGML type each tensor gets for a file type like Q4_K_M.

A file type names a default type (Q4_K_M → Q4_K) and a few hand rules that spend more bits
where errors hurt most (``llama_tensor_get_type`` in llama-quant.cpp, for arch ``llama``,
no experts):

    tensor              Q2_K     Q3_K_M             Q4_K_M / Q5_K_M           others
    output              Q6_K     Q6_K               Q6_K                      Q6_K (Q8_0 stays Q8_0)
    attn_v              Q3_K¹    Q5_K (first 2)     Q6_K if use_more_bits     default
                                 else Q4_K
    ffn_down            Q3_K     Q5_K if i < n/16   Q6_K if use_more_bits     Q4_0/Q5_0 + imatrix:
                                 else Q4_K                                    Q4_1/Q5_1 if i < n/8
    attn_output         Q3_K     Q4_K               default                   default
    norms (1-D)         F32 always; token_embd and the rest: the default type.
    ¹ Q4_K when n_head / n_head_kv ≥ 4.

Then the shape fallback (``tensor_type_fallback``): a row length that is not a multiple of the
type's block size demotes Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and F16 if
even 32 does not divide it; ``output`` whose row is not a multiple of the default type's block
goes straight to Q8_0. use_more_bits(i, n) = i < n/8 or i ≥ 7n/8 or (i − n/8) % 3 == 2.

Refs: llama.cpp src/llama-quant.cpp ``llama_tensor_get_type_impl``, ``tensor_type_fallback``.
"""

from __future__ import annotations

import math
import re

from tinyquant.presets import use_more_bits
from tinyquant.quant.gguf_blocks import GGUF_BLOCK_BYTES
from tinyquant.quant.kquants import KQUANT_BLOCK_BYTES

__all__ = ["FILE_TYPES", "BLOCK_SIZE", "tensor_types", "type_bits", "mix_bits_per_weight"]

# file type → its default tensor type (llama_ftype_get_default_type)
FILE_TYPES = {
    "F32": "F32", "F16": "F16", "Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
    "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q2_K": "Q2_K", "Q3_K_M": "Q3_K", "Q4_K_M": "Q4_K",
    "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
}  # fmt: skip
BLOCK_SIZE = {"Q8_0": 32, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32, "Q2_K": 256,
              "Q3_K": 256, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "F16": 1, "F32": 1}  # fmt: skip
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def _fallback(t: str, ncols: int) -> str:
    """llama.cpp's tensor_type_fallback for a row of ``ncols`` values."""
    if ncols % BLOCK_SIZE[t] == 0:
        return t
    t = FALLBACK.get(t, t)
    return t if ncols % BLOCK_SIZE[t] == 0 else "F16"


def tensor_types(
    shapes: dict[str, tuple[int, ...]],
    ftype: str,
    n_head: int,
    n_head_kv: int,
    has_imatrix: bool = False,
) -> dict[str, str]:
    """The GGML type of every tensor (shapes in our (out, in) order) for ``ftype``.

    >>> sh = {f"blk.{i}.{n}.weight": (8, 256) for i in range(4) for n in ("attn_v", "ffn_down")}
    >>> t = tensor_types({**sh, "output.weight": (8, 256), "output_norm.weight": (256,)},
    ...                  "Q4_K_M", 4, 4)
    >>> [t[f"blk.{i}.attn_v.weight"] for i in range(4)], t["output.weight"], t["output_norm.weight"]
    (['Q4_K', 'Q4_K', 'Q6_K', 'Q6_K'], 'Q6_K', 'F32')
    """
    if ftype not in FILE_TYPES:
        raise ValueError(f"unknown GGUF type {ftype!r}; choose from {', '.join(FILE_TYPES)}")
    default = FILE_TYPES[ftype]
    n_layer = sum(1 for n in shapes if n.endswith("attn_v.weight"))
    out, i_v = {}, 0
    for name, shape in shapes.items():
        if len(shape) < 2:  # norms stay F32 (only 2-D tensors are quantized)
            out[name] = "F32"
            continue
        if default in ("F32", "F16"):
            out[name] = default
            continue
        ncols, t = shape[-1], default
        m = re.match(r"blk\.(\d+)\.(\w+)\.weight$", name)
        kind, i = (m.group(2), int(m.group(1))) if m else (name, -1)
        if name == "output.weight":
            t = "Q8_0" if ncols % BLOCK_SIZE[default] else "Q6_K" if default != "Q8_0" else t
        elif kind == "attn_v":
            if ftype == "Q2_K":
                t = "Q4_K" if n_head // n_head_kv >= 4 else "Q3_K"
            elif ftype == "Q3_K_M":
                t = "Q5_K" if i_v < 2 else "Q4_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and use_more_bits(i_v, n_layer):
                t = "Q6_K"
            i_v += 1
        elif kind == "ffn_down":
            if ftype == "Q2_K":
                t = "Q3_K"
            elif ftype == "Q3_K_M":
                t = "Q5_K" if i < n_layer // 16 else "Q4_K"
            elif ftype in ("Q4_K_M", "Q5_K_M"):
                t = "Q6_K" if use_more_bits(i, n_layer) else t
            elif ftype in ("Q4_0", "Q5_0") and has_imatrix and i < n_layer // 8:
                t = "Q4_1" if ftype == "Q4_0" else "Q5_1"
        elif kind == "attn_output":
            t = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K"}.get(ftype, t)
        out[name] = _fallback(t, ncols)
    return out


def type_bits(t: str) -> float:
    """Stored bits per weight of one GGML type, from its block's byte layout.

    >>> [type_bits(t) for t in ("Q4_0", "Q4_K", "Q6_K", "Q8_0", "F16")]
    [4.5, 4.5, 6.5625, 8.5, 16.0]
    """
    if t in ("F32", "F16"):
        return 32.0 if t == "F32" else 16.0
    nbytes = {**GGUF_BLOCK_BYTES, **KQUANT_BLOCK_BYTES}[t.lower()]
    return 8 * nbytes / BLOCK_SIZE[t]


def mix_bits_per_weight(
    shapes: dict[str, tuple[int, ...]], ftype: str, n_head: int, n_head_kv: int
) -> float:
    """Bits per weight of the 2-D tensors when ``ftype``'s mix quantizes a model of ``shapes``.

    The same count as a written file's (``export.schemes.file_bits``), without writing it: e.g.
    Llama-2-7B's shapes give Q4_K_M ≈ 4.85 (output Q6_K, attn_v/ffn_down Q6_K in 1/3+ of blocks).
    """
    types = tensor_types(shapes, ftype, n_head, n_head_kv)
    n = {k: math.prod(v) for k, v in shapes.items() if len(v) >= 2}
    return sum(n[k] * type_bits(types[k]) for k in n) / sum(n.values())
