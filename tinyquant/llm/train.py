"""The training loop: random byte windows, hand-written gradients, AdamW, warmup + cosine.

    lr(s) = lr_max · (s + 1) / warmup                                    s < warmup
    lr(s) = lr_min + ½ (lr_max − lr_min)(1 + cos(π (s − warmup) / (S − warmup)))   otherwise

(Loshchilov & Hutter 2017, SGDR eq. 5, with a linear warmup as in Goyal et al. 2017.) Gradients
are clipped to a global L2 norm (Pascanu et al. 2013). Validation loss on a fixed prefix of the
held-out plays is measured every ``eval_every`` steps; the full validation loss at the end goes
into the checkpoint's metadata together with the training curve.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinyquant.llm import data as D
from tinyquant.llm.backward import AdamW, clip_grads, loss_and_grads
from tinyquant.llm.checkpoint import check_output_path, save_checkpoint
from tinyquant.llm.model import Config, init_params
from tinyquant.llm.nll import eval_loss


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyper-parameters (defaults: the shipped checkpoint's run)."""

    steps: int = 2000  # optimizer steps
    batch_size: int = 16  # sequences per step; each is `context` bytes
    lr: float = 2e-3  # peak learning rate
    min_lr: float = 2e-4  # learning rate at the end of the cosine
    warmup: int = 100  # linear warmup steps
    weight_decay: float = 0.1  # AdamW decoupled decay on Linear weights only
    clip: float = 1.0  # global gradient-norm clip
    seed: int = 0  # seeds the initial weights and the batch sampler
    eval_every: int = 250  # steps between quick validation checks (0 = never)
    eval_bytes: int = 32768  # quick validation on this prefix of the validation bytes

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0 < self.lr or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got {self.min_lr}, {self.lr}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


def lr_at(step: int, tc: TrainConfig) -> float:
    """Learning rate of step ``step`` (0-based): linear warmup then cosine decay.

    >>> tc = TrainConfig(steps=100, lr=1.0, min_lr=0.0, warmup=10)
    >>> lr_at(0, tc), lr_at(9, tc), round(lr_at(55, tc), 3), round(lr_at(100, tc), 3)
    (0.1, 1.0, 0.5, 0.0)
    """
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    span = max(1, tc.steps - tc.warmup)
    frac = min(1.0, (step - tc.warmup) / span)
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1.0 + math.cos(math.pi * frac))


def train(
    cfg: Config,
    tc: TrainConfig,
    train_data: np.ndarray | None = None,
    val_data: np.ndarray | None = None,
    out: str | Path | None = None,
    command: str = "",
    progress: bool = True,
    final_eval_bytes: int | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Train from scratch; return (params, metadata). Saves to ``out`` at every evaluation.

    >>> cfg = Config.tiny(); tc = TrainConfig(steps=3, batch_size=2, warmup=1, eval_every=0)
    >>> data = np.frombuffer(b"to be or not to be " * 20, dtype=np.uint8)
    >>> p, meta = train(cfg, tc, data, data, progress=False)
    >>> meta["steps"], bool(meta["val_loss"] < np.log(256))
    (3, True)
    """
    from tqdm import tqdm

    if out is not None:
        out = check_output_path(out)  # before training: a bad path must not waste the run
    train_data = D.train_bytes() if train_data is None else train_data
    val_data = D.val_bytes() if val_data is None else val_data
    params = init_params(cfg, seed=tc.seed)
    opt = AdamW(weight_decay=tc.weight_decay)
    stream = D.batches(train_data, tc.batch_size, cfg.context, seed=tc.seed + 1)
    tokens_per_step = tc.batch_size * cfg.context
    curve: list[dict] = []
    meta: dict = {
        "command": command,
        "seed": tc.seed,
        "train_config": asdict(tc),
        "tokenizer": "bytes",
        "validation_plays": list(D.VALIDATION_PLAYS),
    }
    smooth = None
    t0 = time.perf_counter()
    bar = tqdm(range(tc.steps), disable=not progress, unit="step", mininterval=2.0)
    for step in bar:
        x, y = next(stream)
        loss, grads = loss_and_grads(params, cfg, x, y)
        gnorm = clip_grads(grads, tc.clip)
        opt.step(params, grads, lr_at(step, tc))
        smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
        elapsed = time.perf_counter() - t0
        tok_s = (step + 1) * tokens_per_step / elapsed
        bar.set_postfix(loss=f"{smooth:.3f}", tok_s=f"{tok_s:.0f}", gnorm=f"{gnorm:.2f}")
        point = {"step": step + 1, "train_loss": round(float(loss), 5)}
        last = step + 1 == tc.steps
        if tc.eval_every and ((step + 1) % tc.eval_every == 0) and not last:
            v = eval_loss(params, cfg, val_data, max_bytes=tc.eval_bytes)["val_loss"]
            point["val_loss_prefix"] = round(v, 5)
            bar.write(
                f"step {step + 1}: train {smooth:.4f}  val(prefix) {v:.4f}  {tok_s:.0f} tok/s"
            )
            if out is not None:
                meta_now = dict(meta, steps=step + 1, curve=curve + [point], complete=False)
                meta_now["train_bytes_seen"] = (step + 1) * tokens_per_step
                save_checkpoint(out, params, cfg, meta_now)
        curve.append(point)
    train_seconds = time.perf_counter() - t0
    # the final numbers: quick prefix (comparable with the curve) and the full validation set
    curve[-1]["val_loss_prefix"] = round(
        eval_loss(params, cfg, val_data, max_bytes=tc.eval_bytes)["val_loss"], 5
    )
    final = eval_loss(params, cfg, val_data, max_bytes=final_eval_bytes)
    meta.update(
        steps=tc.steps,
        train_bytes_seen=tc.steps * tokens_per_step,
        train_seconds=round(train_seconds, 1),
        train_tokens_per_s=round(tc.steps * tokens_per_step / train_seconds, 1),
        val_loss=final["val_loss"],
        val_bits_per_byte=final["bits_per_byte"],
        val_tokens=final["tokens"],
        curve=curve,
        complete=True,
    )
    if progress:
        print(
            f"done: {tc.steps} steps in {train_seconds / 60:.1f} min "
            f"({meta['train_tokens_per_s']:.0f} tok/s); val loss {final['val_loss']:.4f} "
            f"nats/byte ({final['bits_per_byte']:.4f} bits/byte) on {final['tokens']} bytes"
        )
    if out is not None:
        save_checkpoint(out, params, cfg, meta)
    return params, meta
