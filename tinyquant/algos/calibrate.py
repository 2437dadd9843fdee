"""Calibration: run text through the model and keep, per Linear, the statistics of its input X.

    mean_abs_j = mean_n |X_nj|     max_abs_j = max_n |X_nj|     H = (2/N)·Σ_n x_n x_nᵀ = 2XᵀX/N

H is accumulated as a running mean, one BLAS product XᵀX per batch in float64 (no Python loop
over tokens): after a batch of m rows, H ← H·n/(n+m) + 2·XᵀX/(n+m) (GPTQ's ``add_batch``).
mean |x| is AWQ's activation statistic, max |x| SmoothQuant's; the histogram feeds the plots.

**Sequential mode** (GPTQ, Frantar et al. 2022, §4 "the quantized inputs"): block i is calibrated
on the outputs of the already-quantized blocks 0..i−1, and — with ``true_sequential`` (AutoGPTQ's
default) — inside a block each Linear group is calibrated after the groups before it were
quantized: [q, k, v] → [o] → [gate, up] → [down]. A callback decides how a group is quantized,
so RTN, GPTQ or AWQ plug in unchanged.

Refs: Frantar et al. 2022 (GPTQ), IST-DASLab/gptq ``gptq.py`` add_batch and ``llama.py``
sequential loop; Lin et al. 2023 (AWQ) and Xiao et al. 2022 (SmoothQuant) for the statistics.
Shapes: B sequences, T tokens, N = B·T rows, I in features, d model width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from tinyquant.llm.model import (
    Config,
    attention,
    block,
    embed,
    forward,
    linear,
    rmsnorm,
    silu,
)

LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
GROUPS = (("attn_q", "attn_k", "attn_v"), ("attn_output",), ("ffn_gate", "ffn_up"), ("ffn_down",))


@dataclass
class LinearStats:
    """Running statistics of one Linear's input rows x (I,)."""

    in_features: int
    hessian: bool = True  # accumulate H (I×I) — GPTQ needs it, AWQ/SmoothQuant do not
    hist_edges: np.ndarray | None = None  # histogram bin edges over x values, or None
    n: int = 0  # rows seen
    H: np.ndarray | None = None  # (I, I) float64, running mean of 2·x xᵀ
    mean_abs: np.ndarray = field(default=None)  # (I,) float64
    max_abs: np.ndarray = field(default=None)  # (I,) float64
    hist: np.ndarray | None = None  # (bins,) int64 counts

    def __post_init__(self) -> None:
        I = self.in_features
        self.mean_abs = np.zeros(I) if self.mean_abs is None else self.mean_abs
        self.max_abs = np.zeros(I) if self.max_abs is None else self.max_abs
        if self.hessian and self.H is None:
            self.H = np.zeros((I, I))
        if self.hist_edges is not None and self.hist is None:
            self.hist = np.zeros(len(self.hist_edges) - 1, np.int64)

    def update(self, x: np.ndarray) -> None:
        """Add rows x (N, I) to the running statistics.

        >>> s = LinearStats(2)
        >>> s.update(np.array([[1.0, -2.0], [3.0, 0.0]]))
        >>> s.n, s.mean_abs.tolist(), s.max_abs.tolist(), s.H.tolist()
        (2, [2.0, 1.0], [3.0, 2.0], [[10.0, -2.0], [-2.0, 4.0]])
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.in_features)  # (N, I)
        m = x.shape[0]
        if m == 0:
            return
        tot = self.n + m
        ax = np.abs(x)
        self.mean_abs = self.mean_abs * (self.n / tot) + ax.sum(axis=0) / tot
        self.max_abs = np.maximum(self.max_abs, ax.max(axis=0))
        if self.hessian:
            self.H *= self.n / tot
            self.H += (2.0 / tot) * (x.T @ x)  # one BLAS product per batch
        if self.hist is not None:
            self.hist += np.histogram(x, bins=self.hist_edges)[0]
        self.n = tot


class StatsRecorder:
    """A ``record(name, x2d)`` hook that accumulates a LinearStats per recorded weight name.

    >>> rec = StatsRecorder(names=["w"])
    >>> rec("w", np.ones((3, 4))); rec("other", np.ones((3, 4)))
    >>> list(rec.stats), rec.stats["w"].n
    (['w'], 3)
    """

    def __init__(
        self,
        names: Iterable[str] | None = None,
        hessian: bool = True,
        hist_edges: np.ndarray | None = None,
    ) -> None:
        self.names = None if names is None else set(names)
        self.hessian = hessian
        self.hist_edges = hist_edges
        self.stats: dict[str, LinearStats] = {}

    def __call__(self, name: str, x2d: np.ndarray) -> None:
        if self.names is not None and name not in self.names:
            return
        if name not in self.stats:
            self.stats[name] = LinearStats(x2d.shape[-1], self.hessian, self.hist_edges)
        self.stats[name].update(x2d)


def _batches(tokens: np.ndarray, batch_size: int):
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"calibration tokens must be (B, T), got shape {tokens.shape}")
    for b in range(0, tokens.shape[0], batch_size):
        yield tokens[b : b + batch_size]


def collect_stats(
    params: dict,
    cfg: Config,
    tokens: np.ndarray,
    names: Iterable[str] | None = None,
    hessian: bool = True,
    hist_edges: np.ndarray | None = None,
    batch_size: int = 16,
) -> dict[str, LinearStats]:
    """Statistics of every Linear's input (or only ``names``) over calibration tokens (B, T).

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> st = collect_stats(init_params(cfg), cfg, np.zeros((2, 8), np.int64))
    >>> st["blk.0.ffn_down.weight"].H.shape, st["blk.0.attn_q.weight"].n
    ((64, 64), 16)
    """
    rec = StatsRecorder(names, hessian, hist_edges)
    for tb in _batches(tokens, batch_size):
        forward(params, tb, cfg, record=rec)
    return rec.stats


@dataclass
class BlockCalib:
    """What a sequential-mode callback sees for one group of Linears of block ``layer``."""

    params: dict  # the model so far: blocks < layer (and earlier groups) already quantized
    cfg: Config
    layer: int
    names: tuple[str, ...]  # full weight names of this group, e.g. ("blk.0.attn_q.weight", ...)
    stats: dict[str, LinearStats]  # their input statistics on the quantized prefix
    x: np.ndarray  # (B, T, d) this block's input (the quantized prefix's output)


QuantizeFn = Callable[[BlockCalib], dict]


def _names(i: int, group: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"blk.{i}.{n}.weight" for n in group)


def _record(names, xs: list[np.ndarray], hessian: bool) -> dict[str, LinearStats]:
    """Statistics of one group's common input, batch by batch: {name: LinearStats}."""
    rec = StatsRecorder(names, hessian)
    for a in xs:
        a2 = a.reshape(-1, a.shape[-1])  # (N, I)
        for name in names:
            rec(name, a2)
    return rec.stats


def _staged_block(params, cfg, i, xs, quantize_fn, hessian) -> list[np.ndarray]:
    """Block i, true-sequential: each group's input computed once, on the groups before it.

        h1 = norm(x) → [q, k, v] → att = attention(h1) → [o] → x1 = x + o(att)
        h2 = norm(x1) → [gate, up] → m = silu(gate h2) ⊙ (up h2) → [down] → x + …

    The same operations as ``block`` on the same batches, so the result equals running the
    whole block once per group (what the reference does) — five times cheaper.
    """
    p = f"blk.{i}."

    def step(group, inputs):
        names = _names(i, group)
        ctx = BlockCalib(params, cfg, i, names, _record(names, inputs, hessian), np.concatenate(xs))
        params.update(quantize_fn(ctx))

    h1 = [rmsnorm(x, params[p + "attn_norm.weight"], cfg.norm_eps) for x in xs]  # (B, T, d)
    step(GROUPS[0], h1)
    att = [attention(params, cfg, i, h) for h in h1]  # (B, T, d) with the quantized q, k, v
    step(GROUPS[1], att)
    x1 = [x + linear(a, params[p + "attn_output.weight"]) for x, a in zip(xs, att, strict=True)]
    h2 = [rmsnorm(x, params[p + "ffn_norm.weight"], cfg.norm_eps) for x in x1]
    step(GROUPS[2], h2)
    m = [silu(linear(h, params[p + "ffn_gate.weight"])) * linear(h, params[p + "ffn_up.weight"])
         for h in h2]  # (B, T, F)  # fmt: skip
    step(GROUPS[3], m)
    return [x + linear(a, params[p + "ffn_down.weight"]) for x, a in zip(x1, m, strict=True)]


def calibrate_sequential(
    params: dict,
    cfg: Config,
    tokens: np.ndarray,
    quantize_fn: QuantizeFn,
    true_sequential: bool = True,
    hessian: bool = True,
    fp_inputs: bool = False,
    batch_size: int = 16,
) -> dict:
    """Quantize the blocks in order, each calibrated on the quantized blocks before it.

    ``quantize_fn(ctx)`` returns {name: replacement} for ``ctx.names`` (a float array for
    fake-quant, or a quantized Linear); any other params it returns (e.g. a folded norm) are
    installed too. With ``true_sequential`` the groups [q, k, v] → [o] → [gate, up] → [down]
    are quantized in turn (AutoGPTQ's default); without, one call per block with all seven.
    ``fp_inputs=True`` feeds each block the *FP* model's output instead (AWQ's reference).
    Returns a new params dict; ``params`` is not modified.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> zero_them = lambda ctx: {n: 0 * ctx.params[n] for n in ctx.names}
    >>> q = calibrate_sequential(init_params(cfg), cfg, np.zeros((2, 8), np.int64), zero_them)
    >>> float(np.abs(q["blk.1.ffn_down.weight"]).max())
    0.0
    """
    fp, params = params, dict(params)
    xs = [embed(params, tb) for tb in _batches(tokens, batch_size)]  # [(B, T, d)] per batch
    for i in range(cfg.n_layers):
        if true_sequential and not fp_inputs:
            xs = _staged_block(params, cfg, i, xs, quantize_fn, hessian)
            continue
        names = _names(i, sum(GROUPS, ()))
        rec = StatsRecorder(names, hessian)
        for x in xs:
            block(params, cfg, i, x, record=rec)
        params.update(quantize_fn(BlockCalib(params, cfg, i, names, rec.stats, np.concatenate(xs))))
        src = fp if fp_inputs else params  # the FP block's output, or the quantized block's
        xs = [block(src, cfg, i, x) for x in xs]
    return params
