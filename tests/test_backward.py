"""Finite-difference gradient checks (float64) for every layer's backward and the whole model."""

import numpy as np
import pytest

from tinyquant.llm import backward as bw
from tinyquant.llm.model import Config, forward, init_params, rope_tables

H = 1e-6
TOL = 1e-5


def numerical_grad(f, x, idx, h=H):
    """Central difference of scalar f() w.r.t. x[idx] (x modified in place, then restored)."""
    old = x[idx]
    x[idx] = old + h
    fp = f()
    x[idx] = old - h
    fm = f()
    x[idx] = old
    return (fp - fm) / (2 * h)


def rel_err(a, b):
    return abs(a - b) / max(abs(a) + abs(b), 1e-8)


def check(f, x, analytic, rng, n=12):
    """Max relative error between analytic[idx] and the numerical gradient over n sampled entries."""
    worst = 0.0
    for _ in range(n):
        idx = tuple(int(rng.integers(0, s)) for s in x.shape)
        worst = max(worst, rel_err(numerical_grad(f, x, idx), analytic[idx]))
    return worst


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_linear_backward_matches_finite_differences(rng):
    x, w = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    r = rng.standard_normal((5, 3))  # random projection: L = sum(r * y)
    y, c = bw.linear_fwd(x, w)
    dx, dw = bw.linear_bwd(r, c)
    f = lambda: float(np.sum(r * bw.linear_fwd(x, w)[0]))  # noqa: E731
    assert check(f, x, dx, rng) < TOL
    assert check(f, w, dw, rng) < TOL


def test_rmsnorm_backward_matches_finite_differences(rng):
    x, w = rng.standard_normal((6, 8)), rng.standard_normal(8)
    r = rng.standard_normal((6, 8))
    _, c = bw.rmsnorm_fwd(x, w, 1e-5)
    dx, dw = bw.rmsnorm_bwd(r, c)
    f = lambda: float(np.sum(r * bw.rmsnorm_fwd(x, w, 1e-5)[0]))  # noqa: E731
    assert check(f, x, dx, rng) < TOL
    assert check(f, w, dw, rng) < TOL


def test_rope_backward_matches_finite_differences(rng):
    from tinyquant.llm.model import apply_rope

    cos, sin = rope_tables(np.arange(5), 6, 10000.0, np.float64)
    x, r = rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 5, 6))
    dx = bw.rope_bwd(r, cos, sin)
    f = lambda: float(np.sum(r * apply_rope(x, cos, sin)))  # noqa: E731
    assert check(f, x, dx, rng) < TOL


def test_attention_backward_matches_finite_differences(rng):
    q, k, v = (rng.standard_normal((2, 2, 5, 4)) for _ in range(3))
    r = rng.standard_normal((2, 2, 5, 4))
    _, c = bw.attention_fwd(q, k, v)
    dq, dk, dv = bw.attention_bwd(r, c)
    f = lambda: float(np.sum(r * bw.attention_fwd(q, k, v)[0]))  # noqa: E731
    assert check(f, q, dq, rng) < TOL
    assert check(f, k, dk, rng) < TOL
    assert check(f, v, dv, rng) < TOL


def test_swiglu_backward_matches_finite_differences(rng):
    g, u, r = (rng.standard_normal((4, 6)) for _ in range(3))
    _, c = bw.swiglu_fwd(g, u)
    dg, du = bw.swiglu_bwd(r, c)
    f = lambda: float(np.sum(r * bw.swiglu_fwd(g, u)[0]))  # noqa: E731
    assert check(f, g, dg, rng) < TOL
    assert check(f, u, du, rng) < TOL


def test_cross_entropy_backward_matches_finite_differences(rng):
    z, t = rng.standard_normal((5, 7)), rng.integers(0, 7, 5)
    dz = bw.cross_entropy_bwd(bw.cross_entropy_fwd(z, t)[1])
    f = lambda: bw.cross_entropy_fwd(z, t)[0]  # noqa: E731
    assert check(f, z, dz, rng) < TOL


def _small_model(rng):
    cfg = Config(d_model=16, n_layers=2, n_heads=2, d_ff=24, context=8)
    params = init_params(cfg, seed=1, dtype=np.float64)
    for k in params:  # move norms off 1 and enlarge weights so every path carries gradient
        params[k] = params[k] + 0.1 * rng.standard_normal(params[k].shape)
    x, y = rng.integers(0, 256, (2, 8)), rng.integers(0, 256, (2, 8))
    return cfg, params, x, y


def test_training_loss_equals_the_served_forward_loss(rng):
    cfg, params, x, y = _small_model(rng)
    loss, _ = bw.loss_and_grads(params, cfg, x, y)
    logits = forward(params, x, cfg).reshape(-1, cfg.vocab_size)
    assert abs(loss - bw.cross_entropy_fwd(logits, y.reshape(-1))[0]) < 1e-12


@pytest.mark.parametrize(
    "name",
    [
        "token_embd.weight",
        "blk.0.attn_norm.weight",
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.attn_v.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_norm.weight",
        "blk.0.ffn_gate.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",
        "blk.1.attn_q.weight",
        "blk.1.ffn_down.weight",
        "output_norm.weight",
        "output.weight",
    ],
)
def test_model_gradient_matches_finite_differences_for_every_tensor(rng, name):
    cfg, params, x, y = _small_model(rng)
    _, grads = bw.loss_and_grads(params, cfg, x, y)
    f = lambda: bw.loss_and_grads(params, cfg, x, y)[0]  # noqa: E731
    w = params[name]
    worst = 0.0
    for _ in range(6):
        idx = tuple(int(rng.integers(0, s)) for s in w.shape)
        if name == "token_embd.weight":  # only rows of tokens that occur have a gradient
            idx = (int(x.reshape(-1)[rng.integers(0, x.size)]), idx[1])
        worst = max(worst, rel_err(numerical_grad(f, w, idx), grads[name][idx]))
    assert worst < TOL


def test_every_parameter_receives_a_gradient_of_its_own_shape(rng):
    cfg, params, x, y = _small_model(rng)
    _, grads = bw.loss_and_grads(params, cfg, x, y)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in params.items()}


def test_float32_training_step_stays_float32():
    cfg = Config.tiny()
    params = init_params(cfg)
    x = np.zeros((2, 8), dtype=np.int64)
    _, grads = bw.loss_and_grads(params, cfg, x, x)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}


def test_adamw_does_not_decay_norms_or_embeddings():
    params = {
        "token_embd.weight": np.ones(3),
        "a.attn_norm.weight": np.ones(3),
        "a.weight": np.ones(3),
    }
    zero = {k: np.zeros(3) for k in params}
    bw.AdamW(weight_decay=0.5).step(params, zero, lr=0.1)
    assert params["token_embd.weight"].tolist() == [1.0] * 3
    assert params["a.attn_norm.weight"].tolist() == [1.0] * 3
    assert np.allclose(params["a.weight"], 0.95)


def test_gradient_clipping_bounds_the_global_norm():
    g = {"a": np.full(4, 3.0), "b": np.full(9, 4.0)}
    before = bw.clip_grads(g, 2.0)
    after = np.sqrt(sum(np.sum(v**2) for v in g.values()))
    assert before > 2.0 and abs(after - 2.0) < 1e-9


def test_distillation_backward_matches_finite_differences(rng):
    z = rng.standard_normal((5, 7))
    t = rng.standard_normal((5, 7))
    t_logp = t - np.log(np.exp(t).sum(-1, keepdims=True))
    dz = bw.distill_bwd(bw.distill_fwd(z, t_logp)[1])
    f = lambda: bw.distill_fwd(z, t_logp)[0]  # noqa: E731
    assert check(f, z, dz, rng) < TOL


def test_distillation_to_itself_is_zero_and_the_model_gradient_matches_finite_differences(rng):
    cfg = Config.tiny()
    p = init_params(cfg, seed=0, dtype=np.float64)
    x = rng.integers(0, cfg.vocab_size, (2, 6))
    logits = forward(p, x, cfg).reshape(12, -1)
    t_logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    loss0, _ = bw.loss_and_grads(p, cfg, x, x, teacher_logp=t_logp)
    assert abs(loss0) < 1e-12
    t_logp = np.log(rng.dirichlet(np.ones(cfg.vocab_size), 12))
    _, g = bw.loss_and_grads(p, cfg, x, x, teacher_logp=t_logp)
    w = p["blk.1.ffn_up.weight"]
    f = lambda: bw.loss_and_grads(p, cfg, x, x, teacher_logp=t_logp)[0]  # noqa: E731
    assert check(f, w, g["blk.1.ffn_up.weight"], rng, n=6) < 1e-4  # small entries: looser
