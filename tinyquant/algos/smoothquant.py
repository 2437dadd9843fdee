"""SmoothQuant: move activation outliers into the weights so that both quantize to int8.

Per input channel j of the Linears fed by one RMSNorm,

    s_j = max|X_j|^α / max|W_:j|^(1−α)          (max over tokens; over all rows of q,k,v / gate,up)
    X ← X / s  (divide the RMSNorm weight by s),   W ← W · s  (scale W's input columns)

which leaves X Wᵀ unchanged and, with α = 0.5, splits the quantization difficulty evenly between
activations and weights. The paper applies it where x comes from a norm (before q/k/v and
gate/up); ``smooth_model`` also folds it, exactly, wherever AWQ folds its scales (``fold.py``):
into W_v's rows for attn_output's input and into W_up's rows for ffn_down's input — the latter
is where this model's largest activation outlier sits.
``search_alpha`` picks α per block by the W8A8 error of those Linears' outputs on calibration X.
W8A8 itself (levels O1/O2/O3) is a recipe on top: per-tensor/per-channel int8 W and per-token or
per-tensor (static, from ``static_act_scale``) int8 activations.

Refs: Xiao et al. 2022 "SmoothQuant", eq. (4) and §4 (O1–O3); mit-han-lab/smoothquant
``smooth.py`` (``smooth_ln_fcs``: max over the concatenated weights, clamp 1e-5).
Shapes: N tokens, I in features (d), O out features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyquant.algos.fold import PAIRS, fold_scales
from tinyquant.quant.activations import fake_quantize_activations
from tinyquant.quant.checks import check_int, check_real, check_shape, float_array

SMOOTHED = {"attn_norm": ("attn_q", "attn_k", "attn_v"), "ffn_norm": ("ffn_gate", "ffn_up")}


def smooth_scales(
    act_max: np.ndarray, weights: Sequence[np.ndarray], alpha: float = 0.5
) -> np.ndarray:
    """s (I,) = act_max^α / (max over the weights' rows of |W|)^(1−α), both clamped at 1e-5.

    >>> smooth_scales(np.array([16.0, 1.0]), [np.array([[1.0, 1.0]])], 0.5).tolist()
    [4.0, 1.0]
    """
    alpha = check_real(alpha, "alpha (the paper uses 0.5; 0.75–0.85 for GLM)", 0.0, 1.0)
    act_max = float_array(act_max, "act_max", ndim=1, what="(in_features,)", dtype=np.float64)
    weights = _check_weights(weights, act_max.size, "act_max")
    w_max = np.max([np.abs(w).max(axis=0) for w in weights], axis=0)
    w_max = np.maximum(w_max, 1e-5)  # (I,)
    a = np.maximum(act_max, 1e-5)
    return np.maximum(a**alpha / w_max ** (1 - alpha), 1e-5)


def _check_weights(weights: Sequence[np.ndarray], n: int, by: str) -> list[np.ndarray]:
    """Each weight a finite (O, n) float array, as float64; n in features implied by ``by``."""
    if isinstance(weights, np.ndarray) or len(weights) == 0:
        raise ValueError("weights must be a non-empty list of (out, in) arrays, e.g. [W_q, W_k]")
    out = []
    for k, w in enumerate(weights):
        w = float_array(w, f"weights[{k}]", ndim=2, what="(out, in)", dtype=np.float64)
        check_shape(w, f"weights[{k}]", (len(w), n), f"{by} has {n} input channels")
        out.append(w)
    return out


def apply_smoothing(params: dict, i: int, norm: str, s: np.ndarray) -> dict:
    """Fold s into block i: ``{norm}.weight`` /= s and the Linears it feeds *= s (columns).

    Returns the changed params (dtypes kept). Exact in full precision.

    >>> p = {"blk.0.ffn_norm.weight": np.ones(2), "blk.0.ffn_gate.weight": np.ones((3, 2)),
    ...      "blk.0.ffn_up.weight": np.ones((3, 2))}
    >>> new = apply_smoothing(p, 0, "ffn_norm", np.array([2.0, 4.0]))
    >>> new["blk.0.ffn_norm.weight"].tolist(), new["blk.0.ffn_up.weight"][0].tolist()
    ([0.5, 0.25], [2.0, 4.0])
    """
    if norm not in SMOOTHED:
        raise ValueError(f"norm must be one of {list(SMOOTHED)}, got {norm!r}")
    p = f"blk.{i}."
    s = float_array(s, "s", ndim=1, what="(in_features,)", dtype=np.float64)
    if not np.all(s > 0):
        raise ValueError("s must be positive (a zero or negative scale breaks x Wᵀ = (x/s)(W·s)ᵀ)")
    out = {}
    g = np.asarray(params[p + norm + ".weight"])
    out[p + norm + ".weight"] = (g / s).astype(g.dtype)
    for lin in SMOOTHED[norm]:
        w = np.asarray(params[p + lin + ".weight"])
        out[p + lin + ".weight"] = (w * s).astype(w.dtype)  # (O, I) · (I,)
    return out


def fake_quant_int8_per_token(x: np.ndarray) -> np.ndarray:
    """Symmetric int8 per row (absmax/127), dequantized: ``quant.activations``, per token.

    >>> fake_quant_int8_per_token(np.array([[127.0, 0.4, -64.2]])).tolist()
    [[127.0, 0.0, -64.0]]
    """
    return fake_quantize_activations(np.asarray(x, np.float32), "per_token")


def fake_quant_int8_per_channel(W: np.ndarray) -> np.ndarray:
    """Symmetric int8 per output row of W (O, I), dequantized (rows quantized like tokens).

    >>> fake_quant_int8_per_channel(np.array([[1.0, -0.5]])).tolist()[0][0]
    1.0
    """
    return fake_quant_int8_per_token(W)


def w8a8_error(x: np.ndarray, weights: Sequence[np.ndarray], s: np.ndarray) -> float:
    """Mean squared error of the outputs when x/s (per token) and W·s (per channel) are int8.

    >>> x = np.random.default_rng(0).normal(size=(16, 8)); W = np.ones((2, 8))
    >>> w8a8_error(x, [W], np.ones(8)) < 1e-3
    True
    """
    x = float_array(x, "x", ndim=2, what="(tokens, in_features)", dtype=np.float64)
    weights = _check_weights(weights, x.shape[1], "x")
    s = float_array(s, "s", ndim=1, what="(in_features,)", dtype=np.float64)
    check_shape(s, "s", (x.shape[1],), f"x has {x.shape[1]} input channels")
    xq = fake_quant_int8_per_token(x / s)
    err = 0.0
    for w in weights:
        w = np.asarray(w, np.float64)
        err += float(np.mean((xq @ fake_quant_int8_per_channel(w * s).T - x @ w.T) ** 2))
    return err / len(weights)


def search_alpha(
    x: np.ndarray,
    weights: Sequence[np.ndarray],
    alphas: Sequence[float] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2)),
) -> tuple[float, np.ndarray]:
    """The α whose smoothing gives the smallest W8A8 output error on x (N, I); (α, errors).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(256, 16)); x[:, 3] *= 60        # one outlier channel
    >>> a, errs = search_alpha(x, [rng.normal(size=(8, 16))])
    >>> a > 0, bool(errs.min() < errs[0])
    (True, True)
    """
    x = float_array(x, "x", ndim=2, what="(tokens, in_features)", dtype=np.asarray(x).dtype)
    alphas = tuple(alphas)
    if not alphas:
        raise ValueError("alphas is empty; pass at least one α in [0, 1]")
    act_max = np.abs(x).max(axis=0)
    errs = np.array([w8a8_error(x, weights, smooth_scales(act_max, weights, a)) for a in alphas])
    return float(alphas[int(np.argmin(errs))]), errs


def static_act_scale(act_max_tensor: float, qmax: int = 127) -> float:
    """Static per-tensor int8 activation scale from calibration (O3): max|X| / 127.

    >>> static_act_scale(254.0)
    2.0
    """
    amax = check_real(act_max_tensor, "act_max_tensor (calibrate on real text)", 0.0, open_lo=True)
    return amax / check_int(qmax, "qmax")


def smooth_model(
    params: dict, cfg, act_max: dict, alpha: float | dict = 0.5, pairs: tuple[str, ...] = PAIRS
) -> dict:
    """SmoothQuant on every block: returns new params with the scales folded (exact in FP).

    ``act_max[name]`` is max|X| per input channel of Linear ``name`` (``collect_stats(...)
    [name].max_abs``); ``alpha`` is one value or {(block, pair): α}; ``pairs`` chooses where
    to smooth: "qkv" and "gate_up" (the paper's, after the norms), "o" and "down".

    >>> from tinyquant.llm.model import Config, init_params
    >>> cfg = Config.tiny(); p = init_params(cfg, seed=0)
    >>> am = {f"blk.{i}.{n}.weight": np.ones(d) for i in range(2)
    ...       for n, d in (("attn_q", 32), ("attn_output", 32), ("ffn_gate", 32), ("ffn_down", 64))}
    >>> sorted(k for k, v in smooth_model(p, cfg, am).items() if v is not p[k])[:3]
    ['blk.0.attn_k.weight', 'blk.0.attn_norm.weight', 'blk.0.attn_output.weight']
    """
    unknown = set(pairs) - set(PAIRS)
    if unknown:
        raise ValueError(f"unknown smoothing pairs {sorted(unknown)}; choose from {PAIRS}")
    out = dict(params)
    for i in range(cfg.n_layers):
        s = {}
        for pair in pairs:
            lins = _LINEARS_OF[pair]
            a = alpha[i, pair] if isinstance(alpha, dict) else alpha
            weights = [params[f"blk.{i}.{n}.weight"] for n in lins]
            s[pair] = smooth_scales(act_max[f"blk.{i}.{lins[0]}.weight"], weights, a)
        out.update(fold_scales(out, i, s.get("qkv"), s.get("o"), s.get("gate_up"), s.get("down")))
    return out


_LINEARS_OF = {"qkv": ("attn_q", "attn_k", "attn_v"), "o": ("attn_output",),
               "gate_up": ("ffn_gate", "ffn_up"), "down": ("ffn_down",)}  # fmt: skip
