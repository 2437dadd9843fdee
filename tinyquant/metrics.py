"""How good is a (quantized) model: cross-entropy on held-out bytes, perplexity, bits per byte.

    loss = −(1/N) Σ_t log p(x_{t+1} | x_≤t)      nats per byte (token = byte)
    perplexity = exp(loss),   bits_per_byte = loss / ln 2

Evaluation is deterministic: the data is cut into windows of ``context + 1`` bytes starting every
``context`` bytes; each window predicts its last ``context`` bytes from the ones before, so every
byte after the first is predicted exactly once (the last, shorter window included).
Params may contain quantized-linear objects: the same ``forward`` runs them.

Shape legend: B windows per batch, T window length (≤ context), V vocab.
"""

from __future__ import annotations

import math

import numpy as np

from tinyquant.llm.model import Config, forward


def _windows(data: np.ndarray, T: int) -> list[tuple[int, int]]:
    """(start, length) of each window of ``length + 1`` bytes covering data."""
    n = len(data) - 1
    return [(s, min(T, n - s)) for s in range(0, n, T)]


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
    >>> r["tokens"], abs(r["val_loss"] - np.log(256)) < 0.05
    (99, True)
    """
    data = np.asarray(data)
    if max_bytes is not None:
        data = data[:max_bytes]
    if len(data) < 2:
        raise ValueError(f"need at least 2 bytes to evaluate, got {len(data)}")
    T = cfg.context
    wins = _windows(data, T)
    total, count = 0.0, 0
    full = [s for s, n in wins if n == T]
    tail = [(s, n) for s, n in wins if n < T]
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    batches = [(g, T) for g in groups] + [([s], n) for s, n in tail]
    for starts, n in batches:
        idx = np.asarray(starts)[:, None] + np.arange(n + 1)[None, :]  # (B, n+1)
        win = data[idx].astype(np.int64)
        logits = forward(params, win[:, :-1], cfg)  # (B, n, V)
        z = logits - logits.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        y = win[:, 1:]
        picked = np.take_along_axis(logp, y[..., None], axis=-1)  # (B, n, 1)
        total -= float(picked.sum(dtype=np.float64))
        count += y.size
    loss = total / count
    return {
        "val_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": loss / math.log(2),
        "tokens": count,
    }
