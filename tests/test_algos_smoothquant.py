"""SmoothQuant: smoothing is exact in full precision and shrinks the W8A8 error on outliers."""

import numpy as np
import pytest

from tinyquant.algos.calibrate import collect_stats
from tinyquant.algos.smoothquant import (
    apply_smoothing,
    search_alpha,
    smooth_scales,
    w8a8_error,
)
from tinyquant.llm.model import Config, forward, init_params

CFG = Config(d_model=64, n_layers=2, n_heads=2, d_ff=128, context=32)


def test_scales_follow_the_formula_with_the_max_over_all_fed_weights():
    act = np.array([4.0, 9.0])
    w1, w2 = np.array([[1.0, -2.0]]), np.array([[-3.0, 1.0]])
    s = smooth_scales(act, [w1, w2], alpha=0.5)
    np.testing.assert_allclose(s, [2.0 / np.sqrt(3.0), 3.0 / np.sqrt(2.0)])


def test_smoothing_alone_leaves_the_fp_model_output_unchanged_in_float64():
    params = init_params(CFG, seed=0, dtype=np.float64)
    toks = np.random.default_rng(0).integers(0, 256, size=(3, 16))
    st = collect_stats(params, CFG, toks, hessian=False)
    smoothed = dict(params)
    for i in range(CFG.n_layers):
        for norm, lins in (
            ("attn_norm", ("attn_q", "attn_k", "attn_v")),
            ("ffn_norm", ("ffn_gate", "ffn_up")),
        ):
            act = st[f"blk.{i}.{lins[0]}.weight"].max_abs
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


def test_alpha_search_is_never_worse_than_no_smoothing():
    rng = np.random.default_rng(2)
    x = rng.standard_t(3, size=(256, 32))
    W = rng.normal(size=(16, 32))
    a, errs = search_alpha(x, [W])
    assert errs.min() <= w8a8_error(x, [W], smooth_scales(np.abs(x).max(0), [W], 0.0)) + 1e-15
    assert errs[0] == pytest.approx(w8a8_error(x, [W], smooth_scales(np.abs(x).max(0), [W], 0.0)))


def test_alpha_outside_zero_one_is_a_clear_error():
    with pytest.raises(ValueError, match="alpha"):
        smooth_scales(np.ones(2), [np.ones((1, 2))], 1.5)
