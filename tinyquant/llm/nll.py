"""Next-byte negative log-likelihood: how well the model predicts held-out bytes.

    loss = −(1/N) Σ_t log p(x_{t+1} | x_≤t)      nats per byte (token = byte)
    perplexity = exp(loss),   bits_per_byte = loss / ln 2

Evaluation is deterministic: the data is cut into windows of ``context + 1`` bytes starting every
``context`` bytes; each window predicts its last ``context`` bytes from the ones before, so every
byte after the first is predicted exactly once (the last, shorter window included). The training
loop's validation check and ``tinyquant eval`` use this; comparisons between models use the one
evaluator, ``tinyquant.evaluate``, on a fixed sample of these windows.
Params may contain quantized-linear objects: the same ``forward`` runs them.

Shape legend: B windows per batch, T window length (≤ context), V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from tinyquant.llm.model import Config, forward

__all__ = ["log_softmax", "window_starts", "window_batches", "eval_loss"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis, computed stably in the logits' dtype.

    >>> np.round(np.exp(log_softmax(np.array([0.0, np.log(3.0)]))), 3).tolist()
    [0.25, 0.75]
    """
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def window_starts(n_bytes: int, T: int) -> list[tuple[int, int]]:
    """(start, length) of each window of ``length + 1`` bytes tiling ``n_bytes`` bytes.

    >>> window_starts(70, 32)
    [(0, 32), (32, 32), (64, 5)]
    """
    n = n_bytes - 1
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
        if max_bytes < 2:
            raise ValueError(f"max_bytes must be >= 2 (or None for all), got {max_bytes}")
        data = data[:max_bytes]
    if len(data) < 2:
        raise ValueError(f"need at least 2 bytes to evaluate, got {len(data)}")
    T = cfg.context
    wins = window_starts(len(data), T)
    full = [s for s, n in wins if n == T]
    tail = [(s, n) for s, n in wins if n < T]
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    for starts, n in [(g, T) for g in groups] + [([s], n) for s, n in tail]:
        idx = np.asarray(starts)[:, None] + np.arange(n + 1)[None, :]  # (B, n+1)
        yield data[idx].astype(np.int64)


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
    loss = total / count
    if not math.isfinite(loss):
        raise ValueError(
            f"the model's loss is {loss} (its logits hold NaN or Inf); check the weights"
        )
    return {
        "val_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": loss / math.log(2),
        "tokens": count,
    }
