"""Training-speed benchmark: tokens/s of forward, forward+backward(+AdamW), and the QAT step.

The baseline of each row is the time of the *same step's matrix multiplications alone* (the same
shapes, replayed on random arrays), so ``speedup = baseline_seconds / seconds`` is the share of
the step spent in BLAS matmuls: 1.0 would mean every cycle goes to matmuls, lower means
elementwise work (softmax, RMSNorm, RoPE, SwiGLU, AdamW) and copies take the rest.

Shape legend: B batch, T context, N = B·T, d model width, H heads, hd head dim, F d_ff, V vocab.
"""

from __future__ import annotations

import sys

import numpy as np

from tinyquant.bench import time_it
from tinyquant.llm.backward import AdamW, loss_and_grads
from tinyquant.llm.model import Config, forward, init_params
from tinyquant.qat import prepare, qat_loss_and_grads
from tinyquant.recipe import Weights


def matmul_shapes(cfg: Config, B: int, backward: bool) -> list[tuple[tuple, tuple]]:
    """(a.shape, b.shape) of every matmul ``a @ b`` in one step (forward, or forward+backward).

    >>> len(matmul_shapes(Config.tiny(), 2, backward=False))
    19
    """
    T, d, F, V, H, hd = (
        cfg.context,
        cfg.d_model,
        cfg.d_ff,
        cfg.vocab_size,
        cfg.n_heads,
        cfg.head_dim,
    )
    N = B * T
    lin = [(d, 3 * d), (d, d), (d, 2 * F), (F, d)] if backward else None
    out: list[tuple[tuple, tuple]] = []
    for _ in range(cfg.n_layers):
        if backward:  # the training forward fuses q|k|v and gate|up
            out += [((N, i), (i, o)) for i, o in lin]
        else:
            out += [((N, d), (d, d))] * 4 + [((N, d), (d, F))] * 2 + [((N, F), (F, d))]
        out += [((B, H, T, hd), (B, H, hd, T)), ((B, H, T, T), (B, H, T, hd))]  # q kᵀ, P v
        if backward:
            for i, o in lin:
                out += [((N, o), (o, i)), ((o, N), (N, i))]  # dx = dy W, dW = dyᵀ x
            out += [((B, H, T, T), (B, H, T, hd))] * 3 + [((B, H, T, hd), (B, H, hd, T))]
    out.append(((N, d), (d, V)))
    if backward:
        out += [((N, V), (V, d)), ((V, N), (N, d))]
    return out


def _replay(shapes: list[tuple[tuple, tuple]], dtype) -> callable:
    rng = np.random.default_rng(0)
    arrays = [
        (rng.standard_normal(a).astype(dtype), rng.standard_normal(b).astype(dtype))
        for a, b in shapes
    ]

    def run() -> None:
        for a, b in arrays:
            a @ b

    return run


def run(quick: bool = False) -> list[dict]:
    """Rows for forward and forward+backward+AdamW of the default preset (tiny when quick)."""
    cfg = Config.tiny() if quick else Config()
    B = 4 if quick else 16
    repeats = 2 if quick else 5
    params = init_params(cfg, seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (B, cfg.context))
    y = rng.integers(0, cfg.vocab_size, (B, cfg.context))
    opt = AdamW()

    def train_step() -> None:
        _, grads = loss_and_grads(params, cfg, x, y)
        opt.step(params, grads, 1e-4)

    g = 16 if quick else 64  # 2-bit groups (the tiny model's width is 32)
    latent, st = prepare(params, cfg, Weights("uint2", g))
    opt_q = AdamW(weight_decay=0.0)

    def qat_step() -> None:  # fake-quantized Linears, STE/LSQ backward, AdamW on w and log s
        _, grads, qgrads = qat_loss_and_grads(latent, cfg, st, x, y)
        opt.step(latent, grads, 1e-4)
        opt_q.step({k: st.log_scale[k[2:]] if k[0] == "s" else st.zero[k[2:]]
                    for k in qgrads}, qgrads, 1e-4)  # fmt: skip

    cases = [
        ("forward", lambda: forward(params, x, cfg), False),
        ("forward+backward+AdamW", train_step, True),
        (f"QAT step (uint2 g{g})", qat_step, True),
    ]
    rows = []
    tokens = B * cfg.context
    for name, fn, backward in cases:
        sec, best = time_it(fn, repeats=repeats)
        base, _ = time_it(_replay(matmul_shapes(cfg, B, backward), np.float32), repeats=repeats)
        row = {
            "suite": "train",
            "name": name,
            "shape": f"B={B} T={cfg.context} d={cfg.d_model} L={cfg.n_layers} F={cfg.d_ff}",
            "seconds": sec,
            "seconds_min": best,
            "tokens_per_s": tokens / sec,
            "baseline": "the same step's matmuls alone",
            "baseline_seconds": base,
            "speedup": base / sec,
        }
        print(
            f"train  {name:24s} {row['shape']}  {sec * 1e3:8.1f} ms  "
            f"{row['tokens_per_s']:8.0f} tok/s  matmuls {base * 1e3:7.1f} ms "
            f"= {row['speedup']:.0%} of the step",
            file=sys.stderr,  # stdout is kept for --json
            flush=True,
        )
        rows.append(row)
    qat, fp32 = rows[2]["seconds"], rows[1]["seconds"]
    rows[2]["vs_fp32_step"] = qat / fp32
    print(f"train  QAT step / FP32 training step = {qat / fp32:.2f}×", file=sys.stderr, flush=True)
    return rows
