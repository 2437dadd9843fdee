"""AWQ's specification: α = 0 is RTN, the search never loses on its own objective, folding is exact."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from spec_strategies import roundtrip_tolerance, tensors

from tinyquant.algos.awq import (
    apply_clip,
    awq_block,
    awq_fake_quantize,
    fold_scales,
    search_clip,
    search_scale,
)
from tinyquant.algos.qgrid import fake_quantize_rows
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


def loss(x, W, Wq):
    """AWQ's objective: mean squared output error of the layer on its calibration inputs."""
    return np.mean((x @ Wq.T - x @ W.T) ** 2)


@settings(max_examples=20)
@given(st.integers(0, 2**16))
def test_alpha_zero_is_round_to_nearest(seed):
    x, W = salient_problem(seed)
    r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T, quant, alphas=[0.0])
    np.testing.assert_array_equal(r.s, np.ones(64))
    assert r.losses[0] == pytest.approx(loss(x, W, quant(W)), rel=1e-12)


@settings(max_examples=20)
@given(st.integers(0, 2**16), st.sampled_from([(2, 32), (3, 32), (4, None), (4, 16)]))
def test_awq_never_loses_to_rtn_on_its_own_objective(seed, bits_group):
    x, W = salient_problem(seed)
    bits, g = bits_group

    def q(w):
        return awq_fake_quantize(w, bits, g)

    r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T, q)
    awq_loss = loss(x, W, q(W * r.s) / r.s)
    assert awq_loss <= loss(x, W, q(W))
    assert awq_loss == pytest.approx(r.losses.min(), rel=1e-9)


def test_salient_channels_make_awq_strictly_better_than_rtn():
    x, W = salient_problem(7)
    r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T, quant)
    assert r.alpha > 0 and r.losses.min() < 0.9 * r.losses[0]


@given(tensors(group_sizes=(4, 8, 16), allow_subnormal=False), st.sampled_from([2, 3, 4, 8]))
def test_awqs_grid_loses_at_most_half_a_step_inside_its_range(xg, bits):
    x, g = xg
    x = np.clip(x, -1e6, 1e6)  # flat |c| ≥ 2^24: qgrid’s ±1 widening rounds away, scale 0
    xb = x.reshape(-1, g).astype(np.float64)
    lo, hi = xb.min(1, keepdims=True), xb.max(1, keepdims=True)
    step = np.where(hi > lo, (hi - lo) / (2**bits - 1), 1.0)  # flat groups: range ±1
    assume(step.min() >= np.finfo(np.float32).tiny)  # a subnormal step underflows to scale 0
    xq = awq_fake_quantize(x, bits, g)
    # the zero is clamped to [0, maxq]: a group entirely on one side of 0 loses its far end
    inside = (lo <= 0) & (hi >= 0)
    err = np.abs(xb - xq.reshape(-1, g).astype(np.float64))
    tol = roundtrip_tolerance(xb, np.broadcast_to(step, xb.shape)) + 4e-7 * np.abs(lo)
    assert np.all((err <= tol)[np.broadcast_to(inside, xb.shape)])


@given(tensors(group_sizes=(4, 8, 16), allow_subnormal=False), st.sampled_from([2, 3, 4]))
def test_awqs_grid_equals_the_gptq_grid_when_every_group_straddles_zero_exactly(xg, bits):
    x, g = xg
    xb = x.reshape(-1, g).copy()
    xb[:, 0] = -np.abs(xb).max(1)  # min = −max|x| and max = +max|x|: both ranges are the same
    xb[:, -1] = np.abs(xb).max(1)
    x = xb.reshape(x.shape)
    assume(np.abs(xb).max(1).min() >= 2**-100)  # a normal float32 step
    np.testing.assert_array_equal(
        awq_fake_quantize(x, bits, g), fake_quantize_rows(x, bits, g, symmetric=False)
    )


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


@pytest.mark.parametrize("seed", range(3))
def test_clip_search_never_loses_to_no_clip_on_partial_dot_products(seed):
    rng = np.random.default_rng(3 + seed)
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
