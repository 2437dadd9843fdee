"""Calibration observers: watch activations, choose a clipping range [lo, hi], give (scale, zero).

Every observer has the same protocol:

    obs = MinMaxObserver("int8")            # or MovingAverage…, Percentile…, MSE…, KL…
    for x in calibration_batches: obs.observe(x)
    scale, zero = obs.qparams()             # frozen: STATIC activation quantization
    x_hat = obs.fake_quantize(x_new)        # applies the frozen (scale, zero)

DYNAMIC quantization (scales measured on each batch at run time) is activations.py's.

How each picks the range (x the calibration values, a = |x|):
  min-max          lo = min x, hi = max x                                   (PyTorch MinMaxObserver)
  moving average   lo ← lo + c·(min x_batch − lo), same for hi, c = 0.01  (PyTorch; batch 1 sets)
  percentile       hi = P_p(a) (symmetric) or lo = P_(100−p)(x), hi = P_p(x)
  MSE              r* = argmin_r ‖x − Q_{r·[lo, hi]}(x)‖², r ∈ {1, 1 − 1/n, …, 1/n}  (clip search)
  KL entropy       2048-bin histogram of a; threshold T = argmin_T KL(P_T ‖ Q_T) where P_T folds
                   the tail beyond T into its last bin and Q_T merges P_T into 2^(b−1) levels
                   (TensorRT, Migacz 2017, "8-bit Inference with TensorRT"; MXNet/TVM code)

Symmetric observers use amax = max(|lo|, |hi|). Ranges go through affine.qparams_from_range, so
every convention of affine.py applies; with convention="torch" MinMaxObserver,
MovingAverageMinMaxObserver (per-tensor, or ``axis=-1`` for PyTorch's PerChannel… twins) give
torch.ao.quantization's (scale, zero_point) bit for bit, and ``fake_quantize`` is its
fake_quantize_per_tensor_affine / _per_channel_affine (x · (1/scale), float32). Min-max-type
observers accept ``axis=-1`` (one range per last-axis channel); the others are per-tensor and
keep the observed values (float32) in memory.
Refs: Jacob et al. 2018; PyTorch torch.ao.quantization.observer; Wu et al. 2020 "Integer
Quantization for Deep Learning Inference" (percentile, MSE, entropy calibration compared).
Shape legend: x (…, F); per-tensor ranges (); axis=-1 ranges (F,).
"""

from __future__ import annotations

import numpy as np

from .affine import CONVENTIONS, dequantize, fake_quantize, qparams_from_range, quantize
from .checks import as_float32, check_int, check_option, check_real
from .formats import Format, get_format
from .granularity import per_tensor

MAX_STEPS = 1000  # MSEObserver: each step quantizes every observed value once
MAX_BINS = 8192  # KLObserver: the search is O(bins²) (TensorRT uses 2048)

__all__ = [
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "KLObserver",
    "OBSERVERS",
]


class Observer:
    """Base: collects statistics with ``observe``; ``range``/``qparams``/``fake_quantize``."""

    def __init__(
        self,
        fmt: str | Format = "int8",
        symmetric: bool = True,
        convention: str = "restricted",
        axis: int | None = None,
    ) -> None:
        if axis is not None and (isinstance(axis, bool) or axis != -1):
            raise ValueError(f"axis must be None or -1 (the last axis), got {axis!r}")
        self.fmt = get_format(fmt)  # the format whose range we choose
        check_option(convention, "convention", CONVENTIONS)
        self.symmetric = symmetric  # amax-based range (True) or [min, max] with a zero-point
        self.convention = convention  # see affine.py
        self.axis = axis  # None: per-tensor; -1: one range per channel of the last axis
        self.n_batches = 0  # how many observe() calls so far

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x = as_float32(x, nonempty=True)
        if self.axis is not None and self.axis not in (-1, x.ndim - 1):
            raise ValueError(f"axis must be None or -1 (the last axis), got {self.axis}")
        self.n_batches += 1
        return x

    def _batch_minmax(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.axis is None:
            return x.min(), x.max()
        flat = x.reshape(-1, x.shape[-1])  # (N, F)
        return flat.min(axis=0), flat.max(axis=0)

    def observe(self, x: np.ndarray) -> Observer:  # pragma: no cover - abstract
        raise NotImplementedError

    def range(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_observed(self) -> None:
        if self.n_batches == 0:
            raise ValueError(f"{type(self).__name__} has observed nothing; call observe(x) first")

    def qparams(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero) from the observed range; shape () per-tensor or (F,) with axis=-1."""
        lo, hi = self.range()
        lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        if self.symmetric:
            amax = np.maximum(np.abs(lo), np.abs(hi))
            lo, hi = -amax, amax
        return qparams_from_range(lo, hi, self.fmt, self.symmetric, self.convention)

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """Static quantization: dequantize(quantize(x)) with the frozen (scale, zero)."""
        scale, zero = self.qparams()
        codes = quantize(x, scale, zero, self.fmt, convention=self.convention)
        return dequantize(codes, scale, zero)


class MinMaxObserver(Observer):
    """Running min and max over all observed batches.

    >>> obs = MinMaxObserver("int8").observe(np.array([-1.0, 0.5])).observe(np.array([2.54]))
    >>> obs.range(), obs.qparams()
    ((np.float32(-1.0), np.float32(2.54)), (array(0.02, dtype=float32), array(0, dtype=int32)))
    """

    def __init__(self, fmt="int8", symmetric=True, convention="restricted", axis=None) -> None:
        super().__init__(fmt, symmetric, convention, axis)
        self.lo: np.ndarray | None = None  # running minimum
        self.hi: np.ndarray | None = None  # running maximum

    def observe(self, x: np.ndarray) -> MinMaxObserver:
        lo, hi = self._batch_minmax(self._prepare(x))
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        return self

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        self._check_observed()
        return self.lo, self.hi


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of per-batch min and max (PyTorch, averaging_constant 0.01).

    >>> obs = MovingAverageMinMaxObserver().observe(np.array([-1.0, 1.0]))
    >>> obs.observe(np.array([-3.0, 101.0])).range()       # 1 + 0.01·(101 − 1) = 2
    (np.float32(-1.02), np.float32(2.0))
    """

    def __init__(
        self, fmt="int8", symmetric=True, convention="restricted", axis=None, momentum=0.01
    ) -> None:
        super().__init__(fmt, symmetric, convention, axis)
        momentum = check_real(momentum, "momentum", 0.0, 1.0, open_lo=True)
        self.momentum = np.float32(momentum)  # weight of the newest batch

    def observe(self, x: np.ndarray) -> MovingAverageMinMaxObserver:
        lo, hi = self._batch_minmax(self._prepare(x))
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = self.lo + self.momentum * (lo - self.lo)
            self.hi = self.hi + self.momentum * (hi - self.hi)
        return self


class _SampleObserver(Observer):
    """Keeps every observed value (flattened float32) for the per-tensor searches below."""

    def __init__(self, fmt="int8", symmetric=True, convention="restricted") -> None:
        super().__init__(fmt, symmetric, convention, None)
        self._chunks: list[np.ndarray] = []
        self._range: tuple | None = None  # cached search result, reset by observe()

    def observe(self, x: np.ndarray):
        self._chunks.append(self._prepare(x).reshape(-1))
        self._range = None
        return self

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        """The chosen range; the search runs once per set of observed values."""
        if self._range is None:
            self._range = self._search()
        return self._range

    def _search(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def values(self) -> np.ndarray:
        """All observed values, concatenated (float32)."""
        self._check_observed()
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]


class PercentileObserver(_SampleObserver):
    """Clip at the p-th percentile (of |x| if symmetric, of x on both ends otherwise).

    >>> x = np.concatenate([np.linspace(-1, 1, 9999), [50.0]]).astype(np.float32)
    >>> hi = PercentileObserver(percentile=99.9).observe(x).range()[1]
    >>> bool(0.99 < hi < 1.0)
    True
    """

    def __init__(self, fmt="int8", symmetric=True, convention="restricted", percentile=99.99):
        super().__init__(fmt, symmetric, convention)
        check_real(percentile, "percentile", 0.0, 100.0, open_lo=True)
        self.percentile = percentile  # e.g. 99.99: clip the top 0.01 %

    def _search(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.values()
        if self.symmetric:
            a = np.float32(np.percentile(np.abs(x), self.percentile))
            return -a, a
        lo = np.float32(np.percentile(x, 100 - self.percentile))
        return lo, np.float32(np.percentile(x, self.percentile))


class MSEObserver(_SampleObserver):
    """Grid search over clip ratios r: minimise ‖x − Q_r(x)‖² on the observed values.

    r = 1 is in the grid, so the chosen range is never worse than min-max on this data.

    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.standard_normal(10_000), [40.0]]).astype(np.float32)
    >>> obs = MSEObserver("int4").observe(x)
    >>> lo, hi = obs.range()                       # runs the search, sets obs.ratio
    >>> bool(obs.error(obs.ratio) < obs.error(1.0)), bool(obs.ratio < 0.5)
    (True, True)
    """

    def __init__(self, fmt="int8", symmetric=True, convention="restricted", steps=100):
        super().__init__(fmt, symmetric, convention)
        # grid size: r ∈ {1, 1 − 1/steps, …, 1/steps}
        self.steps = check_int(steps, "steps", 1, MAX_STEPS)
        self.ratio: float | None = None  # the chosen clip ratio (after range())

    def error(self, ratio: float) -> float:
        """‖x − Q(x)‖² when the min-max range is shrunk by ``ratio``."""
        x = self.values()[None]  # (1, N)
        sym, conv = self.symmetric, self.convention
        xq = fake_quantize(x, self.fmt, per_tensor(x.shape), sym, conv, clip_ratio=ratio)
        return float(np.sum((x.astype(np.float64) - xq) ** 2))

    def _search(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.values()
        ratios = [1 - i / self.steps for i in range(self.steps)]
        errors = [self.error(r) for r in ratios]
        self.ratio = ratios[int(np.argmin(errors))]  # first minimum: the widest best range
        r = np.float32(self.ratio)
        return x.min() * r, x.max() * r


class KLObserver(_SampleObserver):
    """TensorRT entropy calibration: the |x| threshold minimising KL(P ‖ Q). Symmetric only.

    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.standard_normal(100_000), [30.0]]).astype(np.float32)
    >>> t = KLObserver("int8").observe(x).range()[1]
    >>> bool(3.0 < t < 30.0)
    True
    """

    def __init__(self, fmt="int8", convention="restricted", bins=2048):
        super().__init__(fmt, True, convention)
        self.bins = check_int(bins, "bins", 1, MAX_BINS)  # histogram resolution over [0, amax]
        self.divergence: np.ndarray | None = None  # KL per candidate threshold (after range())

    def _search(self) -> tuple[np.ndarray, np.ndarray]:
        a = np.abs(self.values())
        amax = float(a.max())
        if amax == 0.0:
            return np.float32(0), np.float32(0)
        hist, edges = np.histogram(a, bins=self.bins, range=(0.0, amax))
        hist = hist.astype(np.float64)
        n_q = 2 ** (self.fmt.bits - 1) if self.fmt.kind == "int" else 128  # levels per sign
        start = min(n_q, self.bins)
        kl = np.full(self.bins + 1, np.inf)
        for i in range(start, self.bins + 1):
            # 1) reference P: the first i bins, the tail folded into the last one
            p = hist[:i].copy()
            p[-1] += hist[i:].sum()
            # 2) candidate Q: merge the first i bins into n_q levels, spread back over non-zeros
            nonzero = p != 0
            idx = (np.arange(i) * n_q) // i  # level of each bin
            merged = np.bincount(idx, weights=hist[:i], minlength=n_q)
            count = np.bincount(idx, weights=nonzero, minlength=n_q)
            q = np.where(nonzero, merged[idx] / np.maximum(count[idx], 1), 0.0)
            # 3) KL(P ‖ Q) over P's support; Q gets a tiny floor where it is 0 but P is not
            p_n = p / p.sum()
            q = np.where(nonzero & (q == 0), 1e-4, q)
            q_n = q / q.sum()
            m = p_n > 0
            kl[i] = np.sum(p_n[m] * np.log(p_n[m] / q_n[m]))
        self.divergence = kl
        best = int(np.argmin(kl))
        t = np.float32(edges[best])  # upper edge of the last kept bin
        return -t, t


OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "kl": KLObserver,
}
