"""How good is a (quantized) model: cross-entropy on held-out bytes, and how far from FP32.

    loss = −(1/N) Σ_t log p(x_{t+1} | x_≤t)      nats per byte (token = byte)
    perplexity = exp(loss),   bits_per_byte = loss / ln 2
    KL(p_fp32 ‖ p_q) = Σ_v p_fp32(v) · (log p_fp32(v) − log p_q(v)),  averaged over positions
    top-1 agreement  = share of positions where argmax p_q = argmax p_fp32
    SQNR (dB)        = 10 · log10(‖x‖² / ‖x − x̂‖²)

Evaluation is deterministic: the data is cut into windows of ``context + 1`` bytes starting every
``context`` bytes; each window predicts its last ``context`` bytes from the ones before, so every
byte after the first is predicted exactly once (the last, shorter window included).
Params may contain quantized-linear objects: the same ``forward`` runs them.
Perplexity alone hides how a quantized model differs from its original: two models with equal
perplexity can disagree on many next-byte choices, which KL and top-1 agreement show (Dettmers
et al. 2022, "The case for 4-bit precision"; llama.cpp's ``perplexity --kl-divergence``).

Shape legend: B windows per batch, T window length (≤ context), V vocab.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np

from tinyquant.llm.model import Config, forward, new_cache


def _windows(data: np.ndarray, T: int) -> list[tuple[int, int]]:
    """(start, length) of each window of ``length + 1`` bytes covering data."""
    n = len(data) - 1
    return [(s, min(T, n - s)) for s in range(0, n, T)]


def window_batches(
    data: np.ndarray, cfg: Config, max_bytes: int | None = None, batch_size: int = 16
) -> Iterator[np.ndarray]:
    """Evaluation windows of ``data`` as int64 batches (B, n+1): inputs [:, :-1], targets [:, 1:].

    >>> [w.shape for w in window_batches(np.arange(70, dtype=np.uint8), Config.tiny())]
    [(2, 33), (1, 6)]
    """
    data = np.asarray(data)
    if max_bytes is not None:
        data = data[:max_bytes]
    if len(data) < 2:
        raise ValueError(f"need at least 2 bytes to evaluate, got {len(data)}")
    T = cfg.context
    wins = _windows(data, T)
    full = [s for s, n in wins if n == T]
    tail = [(s, n) for s, n in wins if n < T]
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    for starts, n in [(g, T) for g in groups] + [([s], n) for s, n in tail]:
        idx = np.asarray(starts)[:, None] + np.arange(n + 1)[None, :]  # (B, n+1)
        yield data[idx].astype(np.int64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis, computed stably in the logits' dtype.

    >>> np.round(np.exp(log_softmax(np.array([0.0, np.log(3.0)]))), 3).tolist()
    [0.25, 0.75]
    """
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _summary(total_nll: float, count: int) -> dict:
    loss = total_nll / count
    return {
        "val_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": loss / math.log(2),
        "tokens": count,
    }


def eval_loss(
    params: dict,
    cfg: Config,
    data: np.ndarray,
    max_bytes: int | None = None,
    batch_size: int = 16,
) -> dict:
    """Mean next-byte cross-entropy of ``params`` on ``data`` (uint8 bytes).

    Returns ``{"val_loss", "perplexity", "bits_per_byte", "tokens"}`` (loss in nats/byte,
    ``tokens`` = bytes predicted). ``max_bytes`` evaluates only that prefix of ``data``.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> r = eval_loss(init_params(cfg), cfg, np.arange(100, dtype=np.uint8))
    >>> r["tokens"], bool(abs(r["val_loss"] - np.log(256)) < 0.05)
    (99, True)
    """
    total, count = 0.0, 0
    for win in window_batches(data, cfg, max_bytes, batch_size):
        logp = log_softmax(forward(params, win[:, :-1], cfg))  # (B, n, V)
        y = win[:, 1:]
        picked = np.take_along_axis(logp, y[..., None], axis=-1)  # (B, n, 1)
        total -= float(picked.sum(dtype=np.float64))
        count += y.size
    return _summary(total, count)


# ----------------------------------------------------------------------------- vs. the FP32 model


def reference_logprobs(
    params: dict, cfg: Config, data: np.ndarray, max_bytes: int | None = None, batch_size: int = 16
) -> list[np.ndarray]:
    """log p of the reference (FP32) model on every evaluation window, one (B, n, V) per batch.

    Computed once and shared by every quantized model compared against it.
    """
    return [
        log_softmax(forward(params, win[:, :-1], cfg))
        for win in window_batches(data, cfg, max_bytes, batch_size)
    ]


def eval_vs_reference(
    params: dict,
    cfg: Config,
    data: np.ndarray,
    ref_logp: list[np.ndarray],
    max_bytes: int | None = None,
    batch_size: int = 16,
) -> dict:
    """``eval_loss`` plus KL(p_ref ‖ p) per position and top-1 agreement with the reference.

    ``ref_logp`` comes from ``reference_logprobs`` with the same data, max_bytes and batch_size.
    A model compared with itself has KL 0 and agreement 1:

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> p, data = init_params(cfg, seed=1), np.arange(80, dtype=np.uint8)
    >>> r = eval_vs_reference(p, cfg, data, reference_logprobs(p, cfg, data))
    >>> r["kl"], r["top1"]
    (0.0, 1.0)
    """
    total, count, kl, agree = 0.0, 0, 0.0, 0
    batches = list(window_batches(data, cfg, max_bytes, batch_size))
    shapes = [(w.shape[0], w.shape[1] - 1) for w in batches]
    if shapes != [r.shape[:2] for r in ref_logp]:
        raise ValueError(
            "ref_logp does not match these windows; compute it with reference_logprobs on the "
            "same data, max_bytes and batch_size"
        )
    for win, lr in zip(batches, ref_logp, strict=True):
        logp = log_softmax(forward(params, win[:, :-1], cfg))  # (B, n, V)
        y = win[:, 1:]
        total -= float(np.take_along_axis(logp, y[..., None], axis=-1).sum(dtype=np.float64))
        count += y.size
        kl_pos = (np.exp(lr) * (lr - logp)).sum(axis=-1, dtype=np.float64)  # (B, n)
        kl += float(np.maximum(kl_pos, 0.0).sum())  # ≥ 0 up to rounding
        agree += int((logp.argmax(-1) == lr.argmax(-1)).sum())
    return _summary(total, count) | {"kl": kl / count, "top1": agree / count}


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


# ----------------------------------------------------------------------------- size and speed


def tensor_nbytes(t) -> int:
    """Bytes a parameter occupies as stored: an array's own bytes, or a quantized object's."""
    return int(t.nbytes)


def model_nbytes(params: dict) -> int:
    """Exact bytes of every tensor of the model as stored (codes, scales, zeros, floats).

    >>> model_nbytes({"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float16)})
    32
    """
    return sum(tensor_nbytes(t) for t in params.values())


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
