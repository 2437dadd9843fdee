"""Layer sensitivity: what quantizing *one* Linear alone costs the model, measured and predicted.

For every block Linear l and every candidate scheme s (bits × method × group size), quantize W_l
alone, keep every other weight FP32, and measure on calibration text (training plays, never the
validation plays the evaluator scores):

    ΔKL(l, s)  = mean over positions of KL(p_fp32 ‖ p_{W_l → Q_s(W_l)})     the measured cost
    hessian    = tr(ΔW H ΔWᵀ),  ΔW = W − Ŵ, H = 2XᵀX/N                   GPTQ's layer objective
    fisher     = ½ Σ_ij F_ij ΔW_ij²,  F = T·E_w[g_w²]                       HAWQ / SqueezeLLM
    sqnr       = 10 log10(‖W‖² / ‖ΔW‖²) dB                                 blind to the data

F is the empirical diagonal Fisher from the hand-written backward (``llm.backward``): g_w is the
gradient of window w's mean loss, and T rescales it to a per-token Fisher as if tokens were
uncorrelated (so ½ΣFΔW² is a second-order guess at ΔKL, up to that assumption). The proxies are
judged by how well they *rank* the layers against ΔKL (Spearman ρ, ``spearman``); ΔKL itself is
what the allocation (``allocate.py``) adds up, by HIGGS's linearity assumption: the model's error
is close to the sum of the per-layer errors (checked by ``measure_together``).

Cheap by construction: one FP32 pass collects every Linear's H (on the same calibration windows
``compare`` uses), one FP32 pass over a smaller KL subset caches each block's input and the
reference log-probabilities, and a candidate in block i re-runs only blocks i…n−1. Single-layer
GPTQ here uses the *FP* model's H (not sequential: no earlier layer is quantized), which is the
point — each layer's cost in isolation. A candidate's stored bits are the bytes its quantized
Linear reports (``nbytes``, what ``Model.bits_per_weight`` counts), never a formula.

Refs: Dong et al. 2019/2020 (HAWQ, HAWQ-V2: Hessian-aware mixed precision); Kim et al. 2023
(SqueezeLLM: Fisher-weighted sensitivity); Malinovskii et al. 2025 (HIGGS: the linearity
theorem, bits by dynamic programming); turboderp's EXL2 (per-layer bits against measured error).
Shapes: L layers, S schemes, B windows, T positions, d model width, O out, I in features.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tinyquant.algos.calibrate import collect_stats
from tinyquant.llm.backward import loss_and_grads
from tinyquant.llm.checkpoint import tensors_sha256
from tinyquant.llm.data import calibration_samples
from tinyquant.llm.model import Config, block, embed, head
from tinyquant.llm.nll import log_softmax
from tinyquant.methods import build_linear
from tinyquant.metrics import sqnr_db
from tinyquant.qmodel import linear_names
from tinyquant.recipe import GPTQ, RTN, Rotation, Rule, Weights

__all__ = ["SCHEMES", "SweepConfig", "Sensitivity", "Sweep", "sweep", "sweep_cached",
           "spearman", "PROXIES"]  # fmt: skip

_ALL = ("blk.*",)


def _schemes() -> dict[str, Rule]:
    """The candidate menu: {2, 3, 4, 8} bits × {RTN, GPTQ} × {per row, groups of 64}; at 2–4
    bits per row also GPTQ with act-order and GPTQ on Hadamard-rotated weights; and the best
    2-bit recipe's scheme (rotated GPTQ with MSE grids, g64)."""
    out = {}
    for bits in (2, 3, 4, 8):
        for g in (None, 64):
            for method in (RTN(), GPTQ()):
                name = f"w{bits}-{method.name}" + (f"-g{g}" if g else "")
                out[name] = Rule(_ALL, Weights(f"uint{bits}", g), method)
    for bits in (2, 3, 4):
        w = Weights(f"uint{bits}")
        out[f"w{bits}-gptq-actorder"] = Rule(_ALL, w, GPTQ(act_order=True, static_groups=True))
        out[f"w{bits}-gptq-hadamard-row"] = Rule(_ALL, w, GPTQ(), rotation=Rotation(0))
    out["w2-gptq-hadamard"] = Rule(_ALL, Weights("uint2", 64), GPTQ(mse=True), rotation=Rotation(0))
    return out


SCHEMES: dict[str, Rule] = _schemes()  # name → rule (targets replaced per layer)
PROXIES = ("kl", "hessian", "fisher", "sqnr")  # the columns of a sweep


@dataclass(frozen=True)
class SweepConfig:
    """What the sweep measures on; the defaults take a few minutes on 2 cores."""

    schemes: tuple[str, ...] = tuple(SCHEMES)  # candidate schemes (names of SCHEMES)
    layers: tuple[str, ...] | None = None  # None: every block Linear
    calib_windows: int = 128  # windows for H (compare's calibration text)
    calib_length: int = 256  # bytes per calibration window
    calib_seed: int = 0  # which training windows are drawn
    kl_windows: int = 16  # the first windows of the calibration text, for ΔKL
    fisher_windows: int = 32  # the first windows, one gradient each, for the diagonal Fisher

    def __post_init__(self) -> None:
        object.__setattr__(self, "schemes", tuple(self.schemes))
        unknown = [s for s in self.schemes if s not in SCHEMES]
        if unknown or not self.schemes:
            raise ValueError(f"unknown scheme(s) {unknown}; choose from {', '.join(SCHEMES)}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        if not 1 <= self.kl_windows <= self.calib_windows:
            raise ValueError(f"kl_windows must be in [1, calib_windows={self.calib_windows}]")
        if not 1 <= self.fisher_windows <= self.calib_windows:
            raise ValueError(f"fisher_windows must be in [1, calib_windows={self.calib_windows}]")


@dataclass(frozen=True)
class Sensitivity:
    """The sweep's table: one row per layer, one column per scheme, for each proxy."""

    layers: tuple[str, ...]
    schemes: tuple[str, ...]
    n_weights: tuple[int, ...]  # (L,) weights per layer
    bits: np.ndarray  # (L, S) int64 stored bits of the candidate (8 · nbytes)
    kl: np.ndarray  # (L, S) measured ΔKL, nats per position
    hessian: np.ndarray  # (L, S) tr(ΔW H ΔWᵀ)
    fisher: np.ndarray  # (L, S) ½ Σ F ΔW²
    sqnr: np.ndarray  # (L, S) dB
    outlier_ratio: tuple[float, ...]  # (L,) max_j max|X_j| / median_j max|X_j| of the input
    key: str = ""  # checkpoint sha256 + settings (the cache key)
    config: dict = field(default_factory=dict)  # the SweepConfig, as JSON
    seconds: float = 0.0  # wall time of the sweep

    def cost(self, proxy: str) -> np.ndarray:
        """(L, S) cost to minimise under a proxy (sqnr is negated: higher dB is cheaper)."""
        if proxy not in PROXIES:
            raise ValueError(f"unknown proxy {proxy!r}; choose one of {', '.join(PROXIES)}")
        return -self.sqnr if proxy == "sqnr" else getattr(self, proxy)

    def bits_per_weight(self, choice) -> float:
        """Exact bits per weight of one scheme index per layer (``Model.bits_per_weight``)."""
        b = self.bits[np.arange(len(self.layers)), np.asarray(choice)]
        return float(b.sum() / sum(self.n_weights))

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("bits", "kl", "hessian", "fisher", "sqnr"):
            d[k] = getattr(self, k).tolist()
        return json.dumps(d, indent=0)

    @classmethod
    def from_json(cls, text: str) -> Sensitivity:
        d = json.loads(text)
        arrays = {k: np.asarray(d.pop(k), np.int64 if k == "bits" else np.float64)
                  for k in ("bits", "kl", "hessian", "fisher", "sqnr")}  # fmt: skip
        tup = {k: tuple(d.pop(k)) for k in ("layers", "schemes", "n_weights", "outlier_ratio")}
        return cls(**tup, **arrays, **d)


def spearman(a, b) -> float:
    """Spearman's ρ: Pearson correlation of the ranks (ties get their average rank).

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    ra, rb = _ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else math.nan


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # average rank over ties
        tie = x == v
        r[tie] = r[tie].mean()
    return r


class Sweep:
    """The state one sweep reuses: H of every Linear, the FP32 block inputs and log-probs on the
    KL subset, the diagonal Fisher. ``candidate`` and ``kl_of`` are its two questions."""

    def __init__(self, params: dict, cfg: Config, config: SweepConfig | None = None) -> None:
        self.params, self.cfg = params, cfg
        self.config = sc = config or SweepConfig()
        self.layers = tuple(sc.layers or linear_names(cfg))
        missing = [n for n in self.layers if n not in linear_names(cfg)]
        if missing:
            raise ValueError(f"unknown layer(s) {missing}; names look like 'blk.0.ffn_down.weight'")
        # 1) calibration text; every Linear's H = 2XᵀX/N on the FP32 model, in one pass
        calib = calibration_samples(sc.calib_windows, sc.calib_length, seed=sc.calib_seed)
        self.stats = collect_stats(params, cfg, calib, names=self.layers)
        # 2) the KL subset: each block's FP32 input, and the reference log-probs
        tok = calib[: sc.kl_windows]  # (B, T)
        self.xs = [embed(params, tok)]  # xs[i]: (B, T, d) input of block i
        for i in range(cfg.n_layers):
            self.xs.append(block(params, cfg, i, self.xs[-1]))
        self.ref_logp = log_softmax(head(params, cfg, self.xs[-1]))  # (B, T, V)
        self.p_ref = np.exp(self.ref_logp)
        # 3) the diagonal Fisher: one gradient per window of the mean loss, squared, averaged
        self.fisher = {n: np.zeros(params[n].shape, np.float64) for n in self.layers}
        T = sc.calib_length - 1
        for w in calib[: sc.fisher_windows]:
            _, g = loss_and_grads(params, cfg, w[None, :-1], w[None, 1:])
            for n in self.layers:
                self.fisher[n] += (g[n].astype(np.float64) ** 2) * (T / sc.fisher_windows)

    def candidate(self, layer: str, scheme: str):
        """The quantized Linear of ``layer`` under ``scheme`` (single-layer, FP H)."""
        rule = replace(SCHEMES[scheme], targets=(layer,))
        return build_linear(self.params[layer], rule, self.stats[layer])

    def kl_of(self, replaced: dict) -> float:
        """Mean KL(p_fp32 ‖ p) per position on the KL subset with ``replaced`` weights swapped
        in; only the blocks from the first replaced one on are re-run."""
        first = min(int(n.split(".")[1]) for n in replaced)
        params = self.params | replaced
        x = self.xs[first]
        for i in range(first, self.cfg.n_layers):
            x = block(params, self.cfg, i, x)
        logp = log_softmax(head(params, self.cfg, x))  # (B, T, V)
        kl = (self.p_ref * (self.ref_logp - logp)).sum(axis=-1, dtype=np.float64)  # (B, T)
        return float(np.maximum(kl, 0.0).mean())

    def measure(self, layer: str, scheme: str) -> dict:
        """Every proxy of one (layer, scheme) candidate, and its stored bits."""
        W = self.params[layer]  # (O, I)
        lin = self.candidate(layer, scheme)
        W_hat = lin.forward(np.eye(W.shape[1], dtype=np.float32)).T  # (O, I) as the Linear runs
        dW = W.astype(np.float64) - W_hat  # (O, I)
        H = self.stats[layer].H  # (I, I)
        return {
            "bits": 8 * int(lin.nbytes),
            "kl": self.kl_of({layer: lin}),
            "hessian": float(((dW @ H) * dW).sum()),  # tr(ΔW H ΔWᵀ)
            "fisher": float(0.5 * (self.fisher[layer] * dW * dW).sum()),
            "sqnr": sqnr_db(W, W_hat),
        }

    def measure_together(self, choice: dict[str, str]) -> float:
        """ΔKL of quantizing several layers at once ({layer: scheme}), with the same
        single-layer weights the sweep measured — what additivity is checked against."""
        return self.kl_of({n: self.candidate(n, s) for n, s in choice.items()})

    def outlier_ratio(self, layer: str) -> float:
        m = self.stats[layer].max_abs  # (I,)
        return float(m.max() / np.median(m))


def sweep_key(params: dict, config: SweepConfig) -> str:
    """sha256 of the checkpoint's tensors and the sweep's settings (the cache key)."""
    text = tensors_sha256(params) + json.dumps(asdict(config), sort_keys=True)
    text += json.dumps({s: repr(SCHEMES[s]) for s in config.schemes}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sweep(
    params: dict, cfg: Config, config: SweepConfig | None = None, progress: bool = False
) -> Sensitivity:
    """Measure every (layer, scheme) candidate of ``config`` (see the module docstring).

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> sc = SweepConfig(schemes=("w2-rtn", "w8-rtn"), layers=("blk.0.attn_v.weight",),
    ...                  calib_windows=2, calib_length=32, kl_windows=1, fisher_windows=1)
    >>> s = sweep(init_params(cfg), cfg, sc)
    >>> s.bits.tolist(), bool(s.kl[0, 0] > s.kl[0, 1] >= 0)
    ([[2816, 8960]], True)
    """
    sc = config or SweepConfig()
    t0 = time.perf_counter()
    sw = Sweep(params, cfg, sc)
    L, S = len(sw.layers), len(sc.schemes)
    cols = {k: np.zeros((L, S)) for k in ("bits", "kl", "hessian", "fisher", "sqnr")}
    bar = tqdm(total=L * S, desc="sensitivity", unit="candidate", disable=not progress)
    for li, layer in enumerate(sw.layers):
        for si, scheme in enumerate(sc.schemes):
            bar.set_postfix_str(f"{layer.removesuffix('.weight')} {scheme}", refresh=False)
            for k, v in sw.measure(layer, scheme).items():
                cols[k][li, si] = v
            bar.update()
    bar.close()
    return Sensitivity(
        layers=sw.layers,
        schemes=sc.schemes,
        n_weights=tuple(int(params[n].size) for n in sw.layers),
        bits=cols.pop("bits").astype(np.int64),
        **cols,
        outlier_ratio=tuple(sw.outlier_ratio(n) for n in sw.layers),
        key=sweep_key(params, sc),
        config=asdict(sc),
        seconds=time.perf_counter() - t0,
    )


def sweep_cached(
    params: dict,
    cfg: Config,
    config: SweepConfig | None = None,
    path: str | Path | None = None,
    progress: bool = False,
) -> tuple[Sensitivity, bool]:
    """``sweep``, read from ``path`` when it holds this sweep (same checkpoint and settings: the
    key), else measured and written there; returns (sweep, read_from_cache). The default path
    is ``~/.cache/tinyquant/sensitivity-<key>.json``, so a second budget costs no measurement."""
    sc = config or SweepConfig()
    key = sweep_key(params, sc)
    if path is None:
        path = Path.home() / ".cache" / "tinyquant" / f"sensitivity-{key[:16]}.json"
    path = Path(path)
    if path.is_file():
        s = Sensitivity.from_json(path.read_text())
        if s.key == key:
            return s, True
    s = sweep(params, cfg, sc, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(s.to_json())
    tmp.replace(path)
    return s, False
