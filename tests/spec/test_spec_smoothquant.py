"""SmoothQuant's specification: migration is exact in float64 and helps W8A8 on outlier channels."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyquant.algos.calibrate import collect_stats
from tinyquant.algos.smoothquant import apply_smoothing, search_alpha, smooth_scales, w8a8_error
from tinyquant.llm.model import Config, forward, init_params

CFG = Config(d_model=64, n_layers=2, n_heads=2, d_ff=128, context=32)


def outlier_problem(seed, I=32):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=(128, I)) * np.exp(rng.normal(0, 1.5, size=I))
    return x, rng.normal(size=(16, I)) * 0.05


@settings(max_examples=30)
@given(st.integers(0, 2**16), st.floats(0, 1))
def test_migration_leaves_x_times_w_transposed_unchanged_in_float64(seed, alpha):
    x, W = outlier_problem(seed)
    s = smooth_scales(np.abs(x).max(0), [W], alpha)
    np.testing.assert_allclose((x / s) @ (W * s).T, x @ W.T, rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(st.integers(0, 2**16))
def test_alpha_one_half_gives_activations_and_weights_the_same_per_channel_maximum(seed):
    # the paper's eq. (4) at α = 0.5: max|X_j / s_j| = max|W_j · s_j| = √(max|X_j| · max|W_j|)
    x, W = outlier_problem(seed)
    s = smooth_scales(np.abs(x).max(0), [W], 0.5)
    np.testing.assert_allclose(np.abs(x / s).max(0), np.abs(W * s).max(0), rtol=1e-12)


@settings(max_examples=20)
@given(st.integers(0, 2**16))
def test_alpha_zero_leaves_activations_alone_and_alpha_one_leaves_weights_alone(seed):
    x, W = outlier_problem(seed)
    act_max, w_max = np.abs(x).max(0), np.abs(W).max(0)
    np.testing.assert_allclose(smooth_scales(act_max, [W], 0.0), 1 / w_max, rtol=1e-12)
    np.testing.assert_allclose(smooth_scales(act_max, [W], 1.0), act_max, rtol=1e-12)


def test_smoothing_alone_leaves_the_fp_model_output_unchanged_in_float64():
    params = init_params(CFG, seed=0, dtype=np.float64)
    toks = np.random.default_rng(0).integers(0, 256, size=(3, 16))
    st_ = collect_stats(params, CFG, toks, hessian=False)
    smoothed = dict(params)
    for i in range(CFG.n_layers):
        for norm, lins in (
            ("attn_norm", ("attn_q", "attn_k", "attn_v")),
            ("ffn_norm", ("ffn_gate", "ffn_up")),
        ):
            act = st_[f"blk.{i}.{lins[0]}.weight"].max_abs
            s = smooth_scales(act, [params[f"blk.{i}.{n}.weight"] for n in lins], 0.5)
            smoothed.update(apply_smoothing(smoothed, i, norm, s))
    assert not np.allclose(smoothed["blk.0.attn_norm.weight"], params["blk.0.attn_norm.weight"])
    np.testing.assert_allclose(
        forward(smoothed, toks, CFG), forward(params, toks, CFG), rtol=1e-10, atol=1e-12
    )


def test_smoothing_reduces_w8a8_error_when_activations_have_outlier_channels():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(512, 64))
    x[:, [5, 17]] *= 80.0
    W = rng.normal(size=(32, 64)) * 0.05
    s = smooth_scales(np.abs(x).max(0), [W], 0.5)
    assert w8a8_error(x, [W], s) < 0.2 * w8a8_error(x, [W], np.ones(64))


@pytest.mark.parametrize("seed", range(3))
def test_the_alpha_search_returns_the_alpha_with_the_smallest_w8a8_error(seed):
    x, W = outlier_problem(seed)
    a, errs = search_alpha(x, [W])
    alphas = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    direct = [w8a8_error(x, [W], smooth_scales(np.abs(x).max(0), [W], b)) for b in alphas]
    np.testing.assert_allclose(errs, direct, rtol=1e-12)
    assert a == alphas[int(np.argmin(direct))]


def test_smoothing_all_four_fold_points_leaves_the_fp_model_logits_unchanged_in_float64():
    from tinyquant.algos.calibrate import collect_stats
    from tinyquant.algos.smoothquant import smooth_model
    from tinyquant.llm.model import Config, forward, init_params

    cfg = Config(d_model=32, n_layers=2, n_heads=2, d_ff=64, context=16)
    params = init_params(cfg, seed=4, dtype=np.float64)
    toks = np.random.default_rng(4).integers(0, 256, size=(3, 16))
    stats = collect_stats(params, cfg, toks, hessian=False)
    act_max = {n: st.max_abs * np.exp(np.arange(st.max_abs.size) % 5) for n, st in stats.items()}
    smoothed = smooth_model(params, cfg, act_max, 0.5)
    changed = [k for k in params if not np.array_equal(smoothed[k], params[k])]
    assert {"blk.0.attn_v.weight", "blk.0.ffn_up.weight", "blk.1.ffn_down.weight"} <= set(changed)
    np.testing.assert_allclose(forward(smoothed, toks, cfg), forward(params, toks, cfg),
                               rtol=1e-10, atol=1e-12)  # fmt: skip
