"""AWQ: scale the salient input channels up before rounding, and the activations down to match.

For Linears sharing an input x (I,), a per-channel scale s > 0 changes nothing in full
precision, x Wᵀ = (x/s)(W·s)ᵀ, but rounding W·s protects the channels with large s. AWQ picks

    s = x̄^α / sqrt(max(x̄^α)·min(x̄^α)),   x̄_j = mean |x_j|,   α ∈ {0, 0.05, …, 0.95, 1.0}

minimising the MSE of the *block* output with Q(W·s)/s in place of W (q/k/v: the attention
output; gate/up: the MLP output; o and down: their own output). α = 0 gives s = 1, i.e. RTN, so
AWQ never loses to RTN on this objective. s is then folded into the previous op: the RMSNorm
weight (q/k/v, gate/up) or the previous Linear's rows (attn_output ← attn_v, ffn_down ← ffn_up).
A clip search per group follows (max ← absmax·(1 − i/20), i = 0..9, on partial dot products),
skipped for q and k. Default grid: 4-bit, group 128, asymmetric with a range not forced to
contain 0 (AWQ's ``pseudo_quantize_tensor``). Each block's input comes from the FP model.

Refs: Lin et al. 2023 "AWQ", §3.2 eq. (4)–(5); mit-han-lab/llm-awq ``auto_scale.py``
(grid, normalisation, block losses, folding) and ``auto_clip.py`` (clip grid, 512 tokens).
We add α = 1.0 to the grid (the reference stops at 0.95).
Shapes: N rows (tokens), I in features, O out features, g group size, G = I // g.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tinyquant.algos.calibrate import BlockCalib, calibrate_sequential
from tinyquant.algos.fold import fold_scales
from tinyquant.algos.qgrid import UINT_BITS, check_rows, fake_quantize_rows, quantize_rows
from tinyquant.llm.model import Config, attention, block, silu
from tinyquant.quant import QTensor, get_format, pack, per_group
from tinyquant.quant.checks import check_bits, check_int, check_real, check_shape, float_array

QKV, GU = ("attn_q", "attn_k", "attn_v"), ("ffn_gate", "ffn_up")
ALPHAS = tuple(i / 20 for i in range(20)) + (1.0,)  # the reference's 20 points, plus 1.0


def awq_fake_quantize(W: np.ndarray, bits: int = 4, group_size: int | None = 128) -> np.ndarray:
    """AWQ's grid (``qgrid`` convention "awq"): per group, scale = (max − min)/(2^b − 1), zero =
    clamp(−round(min/scale)), dequantized.

    As in the reference, the zero is clamped to [0, 2^b − 1], so a group whose values are all
    far from 0 on one side loses its top codes (the second example).

    >>> awq_fake_quantize(np.array([[-1.0, 0.0, 1.0, 2.0]]), 2, None).tolist()
    [[-1.0, 0.0, 1.0, 2.0]]
    >>> awq_fake_quantize(np.array([[1.0, 2.0, 3.0, 4.0]]), 2, None).tolist()
    [[1.0, 2.0, 3.0, 3.0]]
    """
    return fake_quantize_rows(W, bits, group_size, convention="awq")


def awq_quantize_tensor(
    W: np.ndarray, bits: int = 4, group_size: int | None = 128, scale_dtype: str = "float32"
) -> QTensor:
    """W on AWQ's grid as a packed QTensor (uint{bits} codes, ``scale_dtype`` scale, uint8 zero).

    >>> W = np.random.default_rng(0).normal(size=(4, 256)).astype(np.float32)
    >>> qt = awq_quantize_tensor(W, 4, 128)
    >>> bool(np.array_equal(qt.dequantize(), awq_fake_quantize(W, 4, 128))), qt.bits_per_weight
    (True, 4.3125)
    """
    c, s, z = quantize_rows(W, bits, group_size, convention="awq", scale_dtype=scale_dtype)
    f = get_format(f"uint{bits}")
    g = c.shape[1] // s.shape[1]
    return QTensor(pack(c, f.storage_bits), s.astype(scale_dtype), z.astype(np.uint8), f,
                   (1, g), np.shape(W))  # fmt: skip


@dataclass(frozen=True)
class ScaleSearch:
    """Result of one AWQ scale search."""

    s: np.ndarray  # (I,) the chosen per-input-channel scale
    alpha: float  # the chosen exponent
    losses: np.ndarray  # (len(alphas),) block-output MSE for each α


def search_scale(
    x_mean_abs: np.ndarray,
    weights: Sequence[np.ndarray],
    block_out: Callable[[list[np.ndarray]], np.ndarray],
    quantize: Callable[[np.ndarray], np.ndarray],
    alphas: Sequence[float] = ALPHAS,
) -> ScaleSearch:
    """Grid-search α: loss(α) = mean (block_out([Q(W·s)/s …]) − block_out(weights))².

    ``block_out`` maps the list of (effective) weights to the block output for the calibration
    inputs; ``quantize`` is the weight quantizer (e.g. ``awq_fake_quantize``).

    >>> x = np.random.default_rng(0).normal(size=(64, 8)) * np.array([8.0] + [1.0] * 7)
    >>> W = np.random.default_rng(1).normal(size=(4, 8))
    >>> r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T,
    ...                  lambda w: awq_fake_quantize(w, 2, None))
    >>> r.losses.shape, bool(r.losses.min() <= r.losses[0])
    ((21,), True)
    """
    xm = float_array(x_mean_abs, "x_mean_abs", ndim=1, what="(in_features,)", dtype=np.float64)
    if not weights:
        raise ValueError("weights is empty; pass the Linears that share this input")
    ws = []
    for k, w in enumerate(weights):  # dtypes kept: block_out sees the weights as given
        w = float_array(w, f"weights[{k}]", ndim=2, what="(out, in)", dtype=np.asarray(w).dtype)
        check_shape(w, f"weights[{k}]", (len(w), xm.size), f"x_mean_abs has {xm.size} channels")
        ws.append(w)
    weights = ws
    alphas = [check_real(a, "each of alphas", 0.0, 1.0) for a in alphas]
    if not alphas:
        raise ValueError("alphas is empty; pass at least one exponent, e.g. ALPHAS")
    ref = block_out(list(weights))
    xm = np.maximum(xm, 1e-12)
    losses, best, best_s, best_a = [], np.inf, np.ones_like(xm), 0.0
    for a in alphas:
        s = np.maximum(xm**a, 1e-4)  # (I,)
        s = s / np.sqrt(s.max() * s.min())
        eff = [quantize(w * s[None, :]) / s[None, :] for w in weights]  # Q(W·s)/s
        loss = float(np.mean((block_out(eff) - ref) ** 2))
        losses.append(loss)
        if loss < best:
            best, best_s, best_a = loss, s, a
    return ScaleSearch(best_s, best_a, np.array(losses))


def search_clip(
    W: np.ndarray,
    x: np.ndarray,
    bits: int = 4,
    group_size: int | None = 128,
    n_candidates: int = 20,
    max_shrink: float = 0.5,
    n_tokens: int = 512,
) -> np.ndarray:
    """Per (row, group) clip value max|w| · (1 − i/n), i < max_shrink·n (n = n_candidates),
    minimising the MSE of the group's partial dot products with the inputs x (N, I). Returns (O, G).

    >>> rng = np.random.default_rng(0)
    >>> W, x = rng.standard_t(2, size=(8, 64)), rng.normal(size=(100, 64))
    >>> m = search_clip(W, x, bits=3, group_size=32)
    >>> m.shape, bool(np.all(m <= np.abs(W).reshape(8, 2, 32).max(-1) + 1e-7))
    ((8, 2), True)
    """
    W, bits = check_rows(W, bits)
    O, I = W.shape
    g = per_group((O, I), I if group_size is None else group_size)[1]
    G = I // g
    x = float_array(x, "x")
    if x.shape[-1] != I:
        raise ValueError(f"x has shape {x.shape} but W has {I} in_features; pass x (N, {I})")
    x = x.reshape(-1, I)
    n_candidates = check_int(n_candidates, "n_candidates")
    max_shrink = check_real(max_shrink, "max_shrink", 0.0, 1.0)
    n_tokens = check_int(n_tokens, "n_tokens")
    x = x[:: max(1, len(x) // n_tokens)][:n_tokens]  # (n, I) the reference's token subsample
    Wg = W.reshape(O, G, g)
    xg = x.reshape(-1, G, g)  # (n, G, g)
    amax = np.abs(Wg).max(axis=-1)  # (O, G)
    best_err = np.full((O, G), np.inf)
    best = amax.copy()
    for k in range(G):
        ref = xg[:, k] @ Wg[:, k].T  # (n, O) partial dot products of group k
        for i in range(int(max_shrink * n_candidates)):
            m = amax[:, k] * (1 - i / n_candidates)  # (O,)
            wc = np.clip(Wg[:, k], -m[:, None], m[:, None])  # (O, g)
            q = awq_fake_quantize(wc, bits, None)
            err = np.mean((xg[:, k] @ q.T - ref) ** 2, axis=0)  # (O,)
            better = err < best_err[:, k]
            best_err[better, k] = err[better]
            best[better, k] = m[better]
    return best.astype(np.float32)


def apply_clip(W: np.ndarray, max_val: np.ndarray) -> np.ndarray:
    """Clamp each group of W (O, I) to [−max_val, max_val] (max_val (O, G)).

    >>> apply_clip(np.array([[3.0, -3.0, 1.0, 5.0]]), np.array([[2.0, 4.0]])).tolist()
    [[2.0, -2.0, 1.0, 4.0]]
    """
    W = float_array(W, "W", ndim=2, what="(out_features, in_features)", dtype=np.asarray(W).dtype)
    max_val = float_array(max_val, "max_val", ndim=2, what="(out_features, groups)")
    O, I = W.shape
    G = max_val.shape[1]
    if max_val.shape[0] != O or I % G or np.any(max_val < 0):
        raise ValueError(
            f"max_val {max_val.shape} must be (O, G) ≥ 0 with G dividing in_features {I} of "
            f"W {W.shape}; use search_clip(W, x, ...)"
        )
    m = max_val[:, :, None]
    return np.clip(W.reshape(O, G, I // G), -m, m).reshape(O, I).astype(W.dtype)


def _inputs(params: dict, cfg: Config, i: int, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every Linear's input (N, in) float64 when block i runs on x."""
    got: dict[str, np.ndarray] = {}
    block(params, cfg, i, x, record=lambda n, a: got.__setitem__(n, a.astype(np.float64)))
    return got


@dataclass(frozen=True)
class AWQLayerReport:
    """What AWQ chose for one block: α per scaled group and the loss curves."""

    alphas: dict[str, float]
    losses: dict[str, np.ndarray]


def awq_block(
    params: dict,
    cfg: Config,
    i: int,
    x: np.ndarray,
    bits: int = 4,
    group_size: int | None = 128,
    clip: bool = True,
    alphas: Sequence[float] = ALPHAS,
) -> tuple[dict, AWQLayerReport]:
    """AWQ on block i with FP block input x (B, T, d): returns (updated params, report).

    The updates are float weights: the four scalings folded in (attn_norm, attn_q/k/v,
    attn_v rows, attn_output, ffn_norm, ffn_gate/up, ffn_up rows, ffn_down) and the clipped
    weights; quantizing them (``awq_quantize_tensor``) is the recipe's last step.
    """
    check_bits(bits, allowed=UINT_BITS)
    if group_size is not None:
        per_group((1, cfg.d_model), group_size), per_group((1, cfg.d_ff), group_size)
    p = f"blk.{i}."
    P = {k: np.asarray(v, np.float64) for k, v in params.items() if k.startswith(p)}
    rec_x = _inputs(params, cfg, i, x)
    h1, att = rec_x[p + "attn_q.weight"], rec_x[p + "attn_output.weight"]  # (N, d)
    h2, m = rec_x[p + "ffn_gate.weight"], rec_x[p + "ffn_down.weight"]  # (N, d), (N, F)

    def q(w):
        return awq_fake_quantize(w, bits, group_size).astype(np.float64)

    h1_3d = h1.reshape(x.shape)  # (B, T, d) the normed attention input

    def attn_out(ws):  # the attention sub-layer's output with q/k/v replaced
        trial = {p + n + ".weight": w for n, w in zip(QKV, ws, strict=True)}
        att_trial = attention(trial, cfg, i, h1_3d).reshape(-1, h1.shape[1])  # (N, d)
        return att_trial @ P[p + "attn_output.weight"].T

    def mlp_out(ws):  # the MLP's output with gate/up replaced
        return (silu(h2 @ ws[0].T) * (h2 @ ws[1].T)) @ P[p + "ffn_down.weight"].T

    wq, wk, wv = P[p + "attn_q.weight"], P[p + "attn_k.weight"], P[p + "attn_v.weight"]
    wo, wg, wu, wd = (
        P[p + n + ".weight"] for n in ("attn_output", "ffn_gate", "ffn_up", "ffn_down")
    )
    mean_abs = lambda a: np.abs(a).mean(axis=0)  # noqa: E731
    r_qkv = search_scale(mean_abs(h1), [wq, wk, wv], attn_out, q, alphas)
    r_o = search_scale(mean_abs(att), [wo], lambda ws: att @ ws[0].T, q, alphas)
    r_gu = search_scale(mean_abs(h2), [wg, wu], mlp_out, q, alphas)
    r_d = search_scale(mean_abs(m), [wd], lambda ws: m @ ws[0].T, q, alphas)

    # fold: x/s into the previous op, W·s into the Linears (exact in full precision)
    out = fold_scales(params, i, r_qkv.s, r_o.s, r_gu.s, r_d.s)
    if clip:
        inputs = {"attn_v": h1 / r_qkv.s, "attn_output": att / r_o.s, "ffn_gate": h2 / r_gu.s,
                  "ffn_up": h2 / r_gu.s, "ffn_down": m / r_d.s}  # fmt: skip
        for n, xin in inputs.items():  # q and k are not clipped (their errors meet in softmax)
            w = out[p + n + ".weight"]
            out[p + n + ".weight"] = apply_clip(w, search_clip(w, xin, bits, group_size))
    names = {"qkv": r_qkv, "o": r_o, "gate_up": r_gu, "down": r_d}
    report = AWQLayerReport({k: v.alpha for k, v in names.items()},
                            {k: v.losses for k, v in names.items()})  # fmt: skip
    return out, report


def awq_model(
    params: dict,
    cfg: Config,
    tokens: np.ndarray,
    bits: int = 4,
    group_size: int | None = 128,
    clip: bool = True,
    batch_size: int = 8,
) -> tuple[dict, dict[int, AWQLayerReport]]:
    """AWQ on every block, each block's input from the FP model (as the reference does).

    Runs on the sequential calibration seam (``calibrate_sequential`` with FP inputs, one call
    per block). Returns (float params with the scales folded in and the weights clipped,
    report per block); quantize the block Linears of the result with ``awq_quantize_tensor``.
    ``tokens`` (B, T): the reference uses 128 × 512; 16 × 256 runs in seconds here.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config(d_model=64, n_layers=1, n_heads=2, d_ff=128, context=16)
    >>> p = init_params(cfg, seed=0)
    >>> q, rep = awq_model(p, cfg, np.zeros((2, 8), np.int64), bits=4, group_size=64)
    >>> sorted(rep[0].alphas), q["blk.0.attn_norm.weight"].shape
    (['down', 'gate_up', 'o', 'qkv'], (64,))
    """
    check_bits(bits, allowed=UINT_BITS)  # before any calibration runs
    if group_size is not None:
        per_group((1, cfg.d_model), group_size), per_group((1, cfg.d_ff), group_size)
    reports: dict[int, AWQLayerReport] = {}

    def search_block(ctx: BlockCalib) -> dict:
        upd, reports[ctx.layer] = awq_block(ctx.params, cfg, ctx.layer, ctx.x, bits, group_size,
                                            clip)  # fmt: skip
        return upd

    out = calibrate_sequential(params, cfg, tokens, search_block, true_sequential=False,
                               hessian=False, fp_inputs=True, batch_size=batch_size)  # fmt: skip
    return out, reports
