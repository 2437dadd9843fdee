"""AWQ: α = 0 is RTN, folding is exact, and the search never loses to RTN on its objective."""

import numpy as np
import pytest

from tinyquant.algos.awq import (
    apply_clip,
    awq_block,
    awq_fake_quantize,
    fold_scales,
    search_clip,
    search_scale,
)
from tinyquant.llm.model import Config, embed, forward, init_params

CFG = Config(d_model=64, n_layers=2, n_heads=2, d_ff=128, context=32)


def salient_problem(seed):
    rng = np.random.default_rng(seed)
    mag = np.exp(rng.normal(0, 1.5, size=64))  # a few channels much larger than the rest
    x = rng.normal(size=(256, 64)) * mag
    W = rng.normal(size=(32, 64))
    return x, W


def quant(w):
    return awq_fake_quantize(w, 3, 32)


def test_alpha_zero_reproduces_round_to_nearest():
    x, W = salient_problem(0)
    r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T, quant, alphas=[0.0])
    np.testing.assert_array_equal(r.s, np.ones(64))
    rtn_loss = np.mean((x @ quant(W).T - x @ W.T) ** 2)
    assert r.losses[0] == pytest.approx(rtn_loss, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_awq_never_loses_to_rtn_on_its_own_objective(seed):
    x, W = salient_problem(seed)
    r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T, quant)
    awq_loss = np.mean((x @ (quant(W * r.s) / r.s).T - x @ W.T) ** 2)
    rtn_loss = np.mean((x @ quant(W).T - x @ W.T) ** 2)
    assert awq_loss <= rtn_loss
    assert awq_loss == pytest.approx(r.losses.min(), rel=1e-9)


def test_salient_channels_make_awq_strictly_better_than_rtn():
    x, W = salient_problem(7)
    r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T, quant)
    assert r.alpha > 0 and r.losses.min() < 0.9 * r.losses[0]


def test_the_grid_has_twenty_points_plus_one():
    x, W = salient_problem(1)
    r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T, quant)
    assert len(r.losses) == 21


def test_folding_scales_leaves_the_fp_model_output_unchanged_in_float64():
    params = init_params(CFG, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 256, size=(2, 16))
    ref = forward(params, toks, CFG)
    folded = dict(params)
    for i in range(CFG.n_layers):
        s = [np.exp(rng.normal(size=n)) for n in (64, 64, 64, 128)]
        folded.update(fold_scales(folded, i, *s))
    assert not np.allclose(folded["blk.1.ffn_up.weight"], params["blk.1.ffn_up.weight"])
    np.testing.assert_allclose(forward(folded, toks, CFG), ref, rtol=1e-10, atol=1e-12)


def test_clip_search_never_loses_to_no_clip_on_partial_dot_products():
    rng = np.random.default_rng(3)
    W, x = rng.standard_t(2, size=(16, 64)), rng.normal(size=(300, 64))
    m = search_clip(W, x, bits=3, group_size=32)
    xs = x[:: max(1, len(x) // 512)][:512]

    def err(Wc):
        q = np.concatenate(
            [awq_fake_quantize(Wc[:, k * 32 : (k + 1) * 32], 3, None) for k in range(2)], 1
        )
        return np.mean((xs @ q.T - xs @ W.T) ** 2)

    assert err(apply_clip(W, m)) <= err(W)


def test_awq_block_without_clip_is_an_exact_reparametrisation_of_the_fp_block():
    params = init_params(CFG, seed=1, dtype=np.float64)
    toks = np.random.default_rng(1).integers(0, 256, size=(2, 16))
    upd, rep = awq_block(params, CFG, 0, embed(params, toks), bits=3, group_size=32, clip=False)
    new = dict(params, **upd)
    np.testing.assert_allclose(
        forward(new, toks, CFG), forward(params, toks, CFG), rtol=1e-9, atol=1e-12
    )
    assert set(rep.alphas) == {"qkv", "o", "gate_up", "down"}
