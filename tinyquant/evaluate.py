"""The one evaluator: every Δppl, KL and top-1 figure of tinyquant comes from here.

On a fixed sample of validation windows spread over all four held-out plays
(``llm.data.eval_windows``), a model is compared position by position with the FP32 reference:

    perplexity = exp(Σ nll / N)                       Δppl % = 100 · (ppl_q / ppl_ref − 1)
    KL(p_ref ‖ p_q) = Σ_v p_ref(v) · (log p_ref(v) − log p_q(v))      per position; mean, p99
    top-1 agreement = share of positions where argmax p_q = argmax p_ref   ("same top p")

— the figures llama.cpp's ``perplexity --kl-divergence`` reports, on the same windows for
every model. The reference log-probabilities are computed once per (checkpoint, sample) and
cached in the process. Every interval is a *paired* 95% bootstrap over windows (bootstrap.py)
with one seeded resample matrix shared by all models, so a model identical to the reference
gets [0, 0] and two models can be compared (``paired_difference``) on the noise of their
difference alone. Standard errors treat windows as the independent units (positions inside a
window are correlated): se = std_w(mean_w) / √W for equal-length windows.

Refs: llama.cpp ``tools/perplexity`` (KL divergence and "same top p" statistics); Dettmers et
al. 2022 "The case for 4-bit precision" (why KL beside perplexity); Efron & Tibshirani 1993.
Shape legend: W windows, B windows per batch, T positions per window, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from tinyquant.bootstrap import (
    interval_str,
    percent_change_interval,
    ratio_interval,
    resample_indices,
)
from tinyquant.llm.checkpoint import tensors_sha256
from tinyquant.llm.data import eval_windows, val_bytes
from tinyquant.llm.model import Config, forward
from tinyquant.llm.nll import log_softmax

__all__ = [
    "EvalSample",
    "EvalResult",
    "PairedDifference",
    "Evaluator",
    "paired_difference",
    "delta_ratio",
    "row_summary",
]


@dataclass(frozen=True)
class EvalSample:
    """Which windows are scored and how intervals are drawn (the defaults: README and compare)."""

    n_windows: int | None = 256  # windows of 256 predicted bytes; None: all 1878 (--full)
    length: int = 256  # bytes predicted per window (the model's context)
    n_boot: int = 2000  # bootstrap resamples per interval
    seed: int = 0  # seeds the resample matrix

    @classmethod
    def quick(cls) -> EvalSample:
        """A small sample for smoke tests (intervals are wide)."""
        return cls(n_windows=32, n_boot=500)

    @classmethod
    def full(cls) -> EvalSample:
        """Every validation byte after the first (480,513 predictions)."""
        return cls(n_windows=None)


@dataclass(frozen=True)
class EvalResult:
    """One model against the reference on the sample; per-window sums kept for pairing."""

    perplexity: float
    ref_perplexity: float
    delta_ppl_pct: float  # 100 · (ppl / ppl_ref − 1)
    delta_ppl_ci95: tuple[float, float]
    kl: float  # mean KL(p_ref ‖ p) per position, nats
    kl_se: float
    kl_ci95: tuple[float, float]
    kl_p99: float  # 99th percentile of the per-position KL
    top1: float  # share of positions with the reference's argmax
    top1_se: float
    n_windows: int
    n_tokens: int
    nll_w: np.ndarray = field(repr=False)  # (W,) summed NLL per window, float64
    ref_nll_w: np.ndarray = field(repr=False)  # (W,) the reference's
    kl_w: np.ndarray = field(repr=False)  # (W,) summed KL per window
    n_w: np.ndarray = field(repr=False)  # (W,) positions per window
    idx: np.ndarray = field(repr=False)  # (R, W) the shared resample matrix

    def summary(self, scheme: str) -> str:
        """The one-line form notebooks print (``row_summary``)."""
        return row_summary({"scheme": scheme} | self.as_dict())

    def as_dict(self) -> dict:
        """The JSON-able figures (``compare --json`` rows carry these keys)."""
        return {
            "perplexity": self.perplexity,
            "delta_ppl_pct": self.delta_ppl_pct,
            "delta_ppl_ci95": list(self.delta_ppl_ci95),
            "kl": self.kl,
            "kl_se": self.kl_se,
            "kl_ci95": list(self.kl_ci95),
            "kl_p99": self.kl_p99,
            "top1": self.top1,
            "top1_se": self.top1_se,
            "eval_windows": self.n_windows,
            "eval_tokens": self.n_tokens,
        }


@dataclass(frozen=True)
class PairedDifference:
    """Model a against model b on the same windows (``paired_difference``)."""

    ppl_ratio_pct: float  # 100 · (ppl_a / ppl_b − 1)
    ppl_ratio_ci95: tuple[float, float]
    kl_diff: float  # mean KL of a minus mean KL of b
    kl_diff_ci95: tuple[float, float]

    @property
    def resolved(self) -> bool:
        """True when the perplexity interval excludes 0 (the sample tells a and b apart)."""
        lo, hi = self.ppl_ratio_ci95
        return not lo <= 0.0 <= hi


def paired_difference(a: EvalResult, b: EvalResult) -> PairedDifference:
    """a − b on the same windows: 100·(ppl_a/ppl_b − 1) and KL_a − KL_b with paired intervals.

    A result compared with itself is exactly 0 with the interval [0, 0].
    """
    if a.n_windows != b.n_windows or not np.array_equal(a.n_w, b.n_w):
        raise ValueError("a and b were evaluated on different samples; use one Evaluator")
    d = a.nll_w - b.nll_w  # (W,) per-window difference: the pairing
    ratio = 100.0 * math.expm1(float(d.sum() / a.n_w.sum()))
    dkl = a.kl_w - b.kl_w
    return PairedDifference(
        ppl_ratio_pct=ratio,
        ppl_ratio_ci95=percent_change_interval(d, a.n_w, a.idx),
        kl_diff=float(dkl.sum() / a.n_w.sum()),
        kl_diff_ci95=ratio_interval(dkl, a.n_w, a.idx),
    )


def delta_ratio(a: EvalResult, b: EvalResult, level: float = 0.95) -> tuple[float, tuple]:
    """Δppl_a / Δppl_b (e.g. GPTQ's Δ over RTN's) with its paired percentile interval.

    Both Δs are recomputed on every shared resample, so the interval carries their correlation.
    Meaningful when b's own interval excludes 0 (a ratio to a Δ of ~0 is unbounded).
    """
    if a.n_windows != b.n_windows or not np.array_equal(a.n_w, b.n_w):
        raise ValueError("a and b were evaluated on different samples; use one Evaluator")
    n = a.n_w[a.idx].sum(axis=1)  # (R,)
    da = np.expm1((a.nll_w - a.ref_nll_w)[a.idx].sum(axis=1) / n)
    db = np.expm1((b.nll_w - b.ref_nll_w)[b.idx].sum(axis=1) / n)
    q = 100 * (1 - level) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = np.percentile(da / db, [q, 100 - q])
    return a.delta_ppl_pct / b.delta_ppl_pct, (float(lo), float(hi))


@dataclass(frozen=True)
class _Reference:
    logp: list[np.ndarray]  # per batch (B, T, V) float32 log p_ref
    nll_w: np.ndarray  # (W,)
    n_w: np.ndarray  # (W,)


_REFERENCE_CACHE: dict[tuple, _Reference] = {}


class Evaluator:
    """Scores models against one FP32 reference on one sample (the reference is run once).

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> p = init_params(cfg, seed=0)
    >>> ev = Evaluator(p, cfg, EvalSample(n_windows=8, length=32, n_boot=50))
    >>> r = ev.evaluate(p)
    >>> r.delta_ppl_pct, r.delta_ppl_ci95, r.kl, r.top1, r.n_tokens
    (0.0, (0.0, 0.0), 0.0, 1.0, 256)
    """

    def __init__(
        self,
        reference: dict,
        cfg: Config,
        sample: EvalSample | None = None,
        batch_size: int = 16,
        progress: bool = False,
    ) -> None:
        self.cfg, self.sample = cfg, sample or EvalSample()
        if self.sample.length > cfg.context:
            raise ValueError(
                f"sample length {self.sample.length} exceeds the model context {cfg.context}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.progress = int(batch_size), progress
        self.windows = eval_windows(self.sample.n_windows, self.sample.length)
        self._batches = self._make_batches(val_bytes())
        self.idx = resample_indices(len(self.windows), self.sample.n_boot, self.sample.seed)
        key = (tensors_sha256(reference), self.sample.n_windows, self.sample.length, batch_size)
        if key not in _REFERENCE_CACHE:
            _REFERENCE_CACHE[key] = self._reference(reference)
        self.ref = _REFERENCE_CACHE[key]

    def _make_batches(self, data: np.ndarray) -> list[np.ndarray]:
        """Windows as int64 (B, T+1) batches; windows of a different length go alone."""
        by_len: dict[int, list[int]] = {}
        for s, n in self.windows:
            by_len.setdefault(n, []).append(s)
        out = []
        for n, starts in by_len.items():
            for b in range(0, len(starts), self.batch_size):
                st = np.asarray(starts[b : b + self.batch_size])
                out.append(data[st[:, None] + np.arange(n + 1)[None, :]].astype(np.int64))
        return out  # (B, n+1) each, in the order of self.windows

    def _logp(self, params: dict, desc: str, kv_cache: Callable[[int], object] | None = None):
        bar = tqdm(self._batches, desc=desc, unit="batch", leave=False, disable=not self.progress)
        for win in bar:
            cache = None if kv_cache is None else kv_cache(len(win))  # a fresh cache per batch
            yield win, log_softmax(forward(params, win[:, :-1], self.cfg, cache=cache))  # (B,T,V)

    def _reference(self, params: dict) -> _Reference:
        logp, nll = [], []
        for win, lp in self._logp(params, "reference"):
            logp.append(lp)
            nll.append(_nll_per_window(lp, win[:, 1:]))
        nll_w = np.concatenate(nll)
        n_w = np.array([w.shape[1] - 1 for w in self._batches for _ in w], np.float64)
        return _Reference(logp, nll_w, n_w)

    def evaluate(self, params: dict, kv_cache: Callable[[int], object] | None = None) -> EvalResult:
        """Perplexity, Δppl, KL and top-1 of ``params`` against the reference, with intervals.

        ``kv_cache`` (batch size -> a fresh cache, e.g. ``kv_quant.kv_cache("int4", cfg)``)
        scores each window in one forward call through that cache, so attention reads the
        keys and values as the cache stores them; None: plain attention, as the reference.
        """
        nll, kl, agree, kl_pos = [], [], [], []
        logp = self._logp(params, "evaluate", kv_cache)
        for (win, lp), lr in zip(logp, self.ref.logp, strict=True):
            nll.append(_nll_per_window(lp, win[:, 1:]))
            k = (np.exp(lr) * (lr - lp)).sum(axis=-1, dtype=np.float64)  # (B, T)
            k = np.maximum(k, 0.0)  # ≥ 0 up to rounding
            kl_pos.append(k.ravel())
            kl.append(k.sum(axis=1))
            agree.append((lp.argmax(-1) == lr.argmax(-1)).sum(axis=1))
        nll_w, kl_w = np.concatenate(nll), np.concatenate(kl)
        agree_w = np.concatenate(agree).astype(np.float64)
        n_w, N = self.ref.n_w, float(self.ref.n_w.sum())
        if not np.all(np.isfinite(nll_w)):
            raise ValueError("the model's log-probabilities hold NaN or Inf; check its weights")
        d = nll_w - self.ref.nll_w  # (W,) paired per-window difference
        ref_ppl = math.exp(float(self.ref.nll_w.sum() / N))
        return EvalResult(
            perplexity=math.exp(float(nll_w.sum() / N)),
            ref_perplexity=ref_ppl,
            delta_ppl_pct=100.0 * math.expm1(float(d.sum() / N)),
            delta_ppl_ci95=percent_change_interval(d, n_w, self.idx),
            kl=float(kl_w.sum() / N),
            kl_se=_window_se(kl_w, n_w),
            kl_ci95=ratio_interval(kl_w, n_w, self.idx),
            kl_p99=float(np.percentile(np.concatenate(kl_pos), 99)),
            top1=float(agree_w.sum() / N),
            top1_se=_window_se(agree_w, n_w),
            n_windows=len(self.windows),
            n_tokens=int(N),
            nll_w=nll_w,
            ref_nll_w=self.ref.nll_w,
            kl_w=kl_w,
            n_w=n_w,
            idx=self.idx,
        )


def _nll_per_window(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Σ_t −log p(y_t) per window: (B,) float64."""
    picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]  # (B, T)
    return -picked.sum(axis=1, dtype=np.float64)


def _window_se(a: np.ndarray, n: np.ndarray) -> float:
    """Standard error of Σa/Σn with windows as the units (the ratio estimator's linearisation).

    >>> _window_se(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    0.5
    """
    W = len(a)
    if W < 2:
        return math.nan
    r = a.sum() / n.sum()
    z = (a - r * n) / n.mean()  # (W,) per-window deviations in units of a per position
    return float(np.sqrt((z**2).sum() / (W - 1) / W))


def row_summary(row: dict) -> str:
    """One recipe's figures on one line — what notebooks print, so a test can hold them to the
    committed compare run.

    >>> row_summary({"scheme": "w4-rtn", "delta_ppl_pct": 0.6, "delta_ppl_ci95": [0.29, 0.91],
    ...              "kl": 0.00559, "kl_ci95": [0.00524, 0.00602], "top1": 0.9603})
    'w4-rtn: Δppl +0.60% [+0.29, +0.91] · KL 0.00559 [0.00524, 0.00602] · top-1 96.03%'
    """
    kl_lo, kl_hi = row["kl_ci95"]
    d = interval_str(row["delta_ppl_pct"], tuple(row["delta_ppl_ci95"]))
    d = d.replace(" [", "% [", 1)
    return (f"{row['scheme']}: Δppl {d} · KL {row['kl']:.5f} [{kl_lo:.5f}, {kl_hi:.5f}] · "
            f"top-1 {100 * row['top1']:.2f}%")  # fmt: skip
