"""Folding per-channel scales into the previous op: exact reparametrisations of a block.

For a Linear with input x and a per-input-channel scale s > 0, x Wᵀ = (x/s)(W·s)ᵀ. The division
x/s is free when it can be folded into whatever produced x:

    q, k, v      x = RMSNorm(·) ⊙ g          g ← g/s        (the norm's gain)
    attn_output  x = softmax(·) · v           W_v rows ← /s  (attention is linear in v, per channel)
    gate, up     x = RMSNorm(·) ⊙ g          g ← g/s
    ffn_down     x = silu(gate h) ⊙ (up h)    W_up rows ← /s (linear in the up branch)

AWQ (Lin et al. 2023, §3.2) folds its activation-aware scales this way, and SmoothQuant (Xiao et
al. 2022, eq. 4) its migration scales; both call ``fold_scales``. Refs: llm-awq ``auto_scale.py``
``scale_ln_fcs`` / ``scale_fc_fc``; smoothquant ``smooth.py``.
Shapes: d model width, F d_ff; W (out, in).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fold_scales", "PAIRS"]

PAIRS = ("qkv", "o", "gate_up", "down")  # the four places a block can fold a scale


def fold_scales(
    params: dict,
    i: int,
    s_qkv: np.ndarray | None = None,
    s_o: np.ndarray | None = None,
    s_gate_up: np.ndarray | None = None,
    s_down: np.ndarray | None = None,
) -> dict:
    """Fold per-channel scales into block i; returns the changed params (same dtypes).

    attn_norm /= s_qkv and q/k/v columns *= s_qkv; attn_v rows /= s_o and attn_output
    columns *= s_o; ffn_norm /= s_gate_up and gate/up columns *= s_gate_up; ffn_up rows
    /= s_down and ffn_down columns *= s_down. Exact in full precision.

    >>> p = {f"blk.0.{n}.weight": np.ones((2, 2)) for n in ("attn_v", "attn_output")}
    >>> fold_scales(p, 0, s_o=np.array([2.0, 4.0]))["blk.0.attn_output.weight"].tolist()
    [[2.0, 4.0], [2.0, 4.0]]
    """
    p = f"blk.{i}."
    out: dict = {}

    def mul(name: str, s: np.ndarray, rows: bool = False) -> None:
        w = np.asarray(params[p + name])
        cur = np.asarray(out.get(p + name, w), np.float64)
        out[p + name] = (cur * (s[:, None] if rows else s)).astype(w.dtype)

    if s_qkv is not None:
        mul("attn_norm.weight", 1 / s_qkv)  # the norm's gain is the previous op: x/s
        for n in ("attn_q", "attn_k", "attn_v"):
            mul(n + ".weight", s_qkv)  # columns: W·s
    if s_o is not None:
        mul("attn_v.weight", 1 / s_o, rows=True)  # attention is linear in v, per channel
        mul("attn_output.weight", s_o)
    if s_gate_up is not None:
        mul("ffn_norm.weight", 1 / s_gate_up)
        for n in ("ffn_gate", "ffn_up"):
            mul(n + ".weight", s_gate_up)
    if s_down is not None:
        mul("ffn_up.weight", 1 / s_down, rows=True)  # silu(g)·u is linear in u
        mul("ffn_down.weight", s_down)
    return out
