"""Calibration statistics against direct computation on the recorded inputs."""

import numpy as np

from tinyquant.algos.calibrate import calibrate_sequential, collect_stats
from tinyquant.llm.model import Config, forward, init_params

CFG = Config.tiny()


def tokens(seed=0, B=5, T=16):
    return np.random.default_rng(seed).integers(0, 256, size=(B, T))


def raw_inputs(params, toks):
    xs = {}
    forward(
        params, toks, CFG, record=lambda n, x: xs.setdefault(n, []).append(x.astype(np.float64))
    )
    return {n: np.concatenate(v) for n, v in xs.items()}


def test_running_hessian_over_batches_equals_two_xtx_over_n_of_all_rows():
    params, toks = init_params(CFG, seed=1), tokens()
    st = collect_stats(params, CFG, toks, batch_size=2)  # 3 uneven batches
    X = raw_inputs(params, toks)["blk.1.ffn_down.weight"]
    np.testing.assert_allclose(st["blk.1.ffn_down.weight"].H, 2 * X.T @ X / len(X), rtol=1e-10)
    np.testing.assert_allclose(st["blk.1.ffn_down.weight"].mean_abs, np.abs(X).mean(0), rtol=1e-10)
    np.testing.assert_array_equal(st["blk.1.ffn_down.weight"].max_abs, np.abs(X).max(0))


def test_histogram_counts_every_recorded_value():
    params, toks = init_params(CFG, seed=1), tokens()
    st = collect_stats(params, CFG, toks, hist_edges=np.linspace(-1e3, 1e3, 11))
    assert st["blk.0.attn_q.weight"].hist.sum() == toks.size * CFG.d_model


def test_sequential_calibration_sees_the_outputs_of_the_quantized_blocks_before_it():
    params, toks = init_params(CFG, seed=2), tokens(1)
    seen = {}

    def crush(ctx):  # a crude "quantizer": round weights to 0.05
        seen.update({n: ctx.stats[n] for n in ctx.names})
        return {n: np.round(ctx.params[n] / 0.05) * 0.05 for n in ctx.names}

    q = calibrate_sequential(params, CFG, toks, crush)
    # oracle: block 1's inputs in the model where block 0 is quantized, block 1 not yet
    partial = dict(params)
    partial.update({n: q[n] for n in q if n.startswith("blk.0.")})
    X = raw_inputs(partial, toks)["blk.1.attn_q.weight"]
    np.testing.assert_allclose(seen["blk.1.attn_q.weight"].H, 2 * X.T @ X / len(X), rtol=1e-6)
    X_fp = raw_inputs(params, toks)["blk.1.attn_q.weight"]
    assert not np.allclose(seen["blk.1.attn_q.weight"].H, 2 * X_fp.T @ X_fp / len(X_fp), rtol=1e-6)


def test_true_sequential_calibrates_o_after_q_k_v_are_quantized():
    params, toks = init_params(CFG, seed=3), tokens(2)
    seen = {}

    def crush(ctx):
        seen.update({n: ctx.stats[n] for n in ctx.names})
        return {n: np.round(ctx.params[n] / 0.05) * 0.05 for n in ctx.names}

    q = calibrate_sequential(params, CFG, toks, crush)
    partial = dict(params)
    partial.update(
        {f"blk.0.{n}.weight": q[f"blk.0.{n}.weight"] for n in ("attn_q", "attn_k", "attn_v")}
    )
    X = raw_inputs(partial, toks)["blk.0.attn_output.weight"]
    np.testing.assert_allclose(seen["blk.0.attn_output.weight"].H, 2 * X.T @ X / len(X), rtol=1e-6)
