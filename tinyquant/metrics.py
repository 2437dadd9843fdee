"""Two measurements beside the evaluator: tensor error in dB, and batch-1 decoding speed.

    SQNR (dB) = 10 · log10(‖x‖² / ‖x − x̂‖²)          each extra bit of a uniform grid ≈ +6.02 dB
    tokens/s  = greedy single-token steps with a KV cache per second (median of repeats)

Model quality (perplexity, Δppl, KL, top-1 with intervals) is ``tinyquant.evaluate``'s.
"""

from __future__ import annotations

import math
import time

import numpy as np

from tinyquant.llm.model import Config, forward, new_cache


def sqnr_db(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖x‖² / ‖x − x̂‖²) in dB (inf when exact).

    Each extra bit of a uniform quantizer adds ≈ 6.02 dB.

    >>> round(sqnr_db(np.array([3.0, 4.0]), np.array([3.0, 4.5])), 2)   # 25 / 0.25
    20.0
    """
    x = np.asarray(x, dtype=np.float64)
    err = float(((x - np.asarray(x_hat, dtype=np.float64)) ** 2).sum())
    sig = float((x**2).sum())
    if err == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


# ----------------------------------------------------------------------------- speed


def decode_tokens_per_s(
    params: dict,
    cfg: Config,
    n_tokens: int = 64,
    prompt_len: int = 16,
    repeats: int = 3,
    threads: int | None = 1,
) -> float:
    """Batch-1 greedy decoding speed with a KV cache (median over ``repeats`` runs).

    ``threads`` caps Numba's kernel threads while timing (``None``: leave as is). On this
    model's small matrices a parallel hand-off costs more than the work it splits, and on a
    busy machine it waits for a time slice on every call; one thread measures the kernels.

    Each run prefills ``prompt_len`` bytes, takes one untimed step (kernels warm), then times
    ``n_tokens`` single-token steps.
    """
    if prompt_len < 1 or n_tokens < 1 or prompt_len + n_tokens + 1 > cfg.context:
        raise ValueError(
            f"need 1 <= prompt_len, 1 <= n_tokens and prompt_len + n_tokens < {cfg.context}; "
            f"got {prompt_len} and {n_tokens}"
        )
    dtype = params["token_embd.weight"].dtype
    prompt = (np.arange(prompt_len) * 7 + 65) % cfg.vocab_size
    import numba

    before = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return _decode_rate(params, cfg, prompt, n_tokens, repeats, dtype)
    finally:
        numba.set_num_threads(before)


def _decode_rate(params, cfg, prompt, n_tokens, repeats, dtype) -> float:
    rates = []
    for _ in range(repeats):
        cache = new_cache(cfg, 1, dtype)
        nxt = int(forward(params, prompt, cfg, cache=cache)[0, -1].argmax())
        nxt = int(forward(params, np.array([nxt]), cfg, cache=cache)[0, -1].argmax())  # warm-up
        t0 = time.perf_counter()
        for _ in range(n_tokens):
            nxt = int(forward(params, np.array([nxt]), cfg, cache=cache)[0, -1].argmax())
        rates.append(n_tokens / (time.perf_counter() - t0))
    return float(np.median(rates))
