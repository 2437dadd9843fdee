"""The model: shapes, causality, KV-cache decoding, the record hook, the linear seam, generate."""

import numpy as np
import pytest

from tinyquant.llm.generate import generate
from tinyquant.llm.model import (
    Config,
    block,
    embed,
    forward,
    head,
    init_params,
    linear,
    new_cache,
    param_shapes,
)

CFG = Config.tiny()


@pytest.fixture(scope="module")
def params():
    p = init_params(CFG, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    for k in p:  # larger random weights: attention patterns become non-trivial
        p[k] = p[k] + 0.2 * rng.standard_normal(p[k].shape)
    return p


def test_default_config_has_the_agreed_shapes():
    shapes = param_shapes(Config())
    assert shapes["token_embd.weight"] == (256, 256)
    assert shapes["blk.3.ffn_down.weight"] == (256, 768)
    assert shapes["blk.0.ffn_gate.weight"] == (768, 256)
    assert shapes["output.weight"] == (256, 256)
    assert len(shapes) == 3 + 4 * 9  # embedding, final norm, output + 9 per block


def test_config_rejects_heads_that_do_not_divide_d_model():
    with pytest.raises(ValueError, match="n_heads"):
        Config(d_model=30, n_heads=4)


def test_forward_accepts_one_sequence_or_a_batch(params):
    t = np.arange(10) % 256
    one = forward(params, t, CFG)
    two = forward(params, np.stack([t, t]), CFG)
    assert one.shape == (1, 10, 256) and two.shape == (2, 10, 256)
    assert np.allclose(one[0], two[1])


def test_changing_later_tokens_never_changes_earlier_logits(params):
    rng = np.random.default_rng(1)
    t = rng.integers(0, 256, 20)
    base = forward(params, t, CFG)[0]
    for pos in (0, 7, 19):
        u = t.copy()
        u[pos:] = rng.integers(0, 256, 20 - pos)
        out = forward(params, u, CFG)[0]
        assert np.array_equal(out[:pos], base[:pos])
        if pos < 19:
            assert not np.allclose(out[pos:], base[pos:])


def test_kv_cache_decoding_reproduces_the_full_forward(params):
    rng = np.random.default_rng(2)
    t = rng.integers(0, 256, (2, CFG.context))
    full = forward(params, t, CFG)
    cache = new_cache(CFG, batch=2, dtype=np.float64)
    parts = [forward(params, t[:, :5], CFG, cache=cache)]  # prefill 5, then one at a time
    parts += [forward(params, t[:, j : j + 1], CFG, cache=cache) for j in range(5, CFG.context)]
    assert np.max(np.abs(np.concatenate(parts, axis=1) - full)) <= 1e-5


def test_kv_cache_decoding_in_float32_matches_within_1e_5():
    p = init_params(CFG, seed=0)
    t = np.arange(CFG.context) * 7 % 256
    full = forward(p, t, CFG)
    cache = new_cache(CFG, batch=1)
    steps = [forward(p, t[j : j + 1], CFG, cache=cache) for j in range(CFG.context)]
    assert np.max(np.abs(np.concatenate(steps, axis=1) - full)) <= 1e-5


def test_forward_is_a_loop_of_embed_block_head(params):
    t = np.arange(12)[None, :]
    x = embed(params, t)
    for i in range(CFG.n_layers):
        x = block(params, CFG, i, x)
    assert np.array_equal(head(params, CFG, x), forward(params, t, CFG))


def test_record_sees_every_linear_input_once_with_its_weight_name(params):
    seen = {}
    t = np.arange(6)[None, :].repeat(2, axis=0)
    forward(params, t, CFG, record=lambda name, x: seen.setdefault(name, []).append(x.copy()))
    linears = {k for k, s in param_shapes(CFG).items() if len(s) == 2 and k != "token_embd.weight"}
    assert set(seen) == linears
    for name, xs in seen.items():
        assert len(xs) == 1
        assert xs[0].shape == (12, params[name].shape[1])
    q, k = seen["blk.0.attn_q.weight"][0], seen["blk.0.attn_k.weight"][0]
    assert np.array_equal(q, k)


def test_every_linear_goes_through_the_linear_seam(params):
    class Doubling:
        """A stand-in quantized Linear: 2 · x Wᵀ."""

        def __init__(self, w):
            self.w = w

        def forward(self, x):
            return 2.0 * (x @ self.w.T)

    t = np.arange(8)
    names = [k for k, s in param_shapes(CFG).items() if len(s) == 2 and k != "token_embd.weight"]
    for name in names:
        doubled = dict(params)
        doubled[name] = Doubling(params[name])
        scaled = dict(params)
        scaled[name] = 2.0 * params[name]
        assert np.allclose(forward(doubled, t, CFG), forward(scaled, t, CFG))
    assert np.array_equal(linear(np.eye(2), np.ones((3, 2))), np.ones((2, 3)))


def test_forward_works_in_float32_and_float64():
    p32 = init_params(CFG, seed=0)
    p64 = {k: v.astype(np.float64) for k, v in p32.items()}
    t = np.arange(16)
    y32, y64 = forward(p32, t, CFG), forward(p64, t, CFG)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    assert np.max(np.abs(y32 - y64)) < 1e-4


def test_forward_rejects_more_tokens_than_the_context(params):
    with pytest.raises(ValueError, match="context"):
        forward(params, np.zeros(CFG.context + 1, dtype=int), CFG)


def test_generate_is_deterministic_for_a_seed(params):
    a = generate(params, CFG, "ab", 20, seed=5)
    assert a == generate(params, CFG, "ab", 20, seed=5)
    assert a != generate(params, CFG, "ab", 20, seed=6)


def greedy_without_cache(params, cfg, prompt: bytes, n: int) -> list[int]:
    """Oracle: argmax of a full forward over the window, sliding to the last context // 2
    bytes whenever the window is full, as ``generate`` documents."""
    seq, window = list(prompt), list(prompt)
    for _ in range(n):
        nxt = int(np.argmax(forward(params, np.array(window), cfg)[0, -1]))
        seq.append(nxt)
        window = seq[-(cfg.context // 2) :] if len(window) >= cfg.context else window + [nxt]
    return seq[len(prompt) :]


@pytest.mark.parametrize("prompt", [b"x", b"ROMEO: but soft"])
def test_cached_greedy_generation_past_the_context_equals_a_sliding_recomputation(params, prompt):
    from tinyquant.llm.data import decode

    n = CFG.context * 3
    out = generate(params, CFG, prompt, n, top_k=1)
    assert out == decode(np.array(greedy_without_cache(params, CFG, prompt, n), np.uint8))


def test_generate_with_top_k_1_is_greedy(params):
    out = generate(params, CFG, "hello", 1, top_k=1, temperature=0.5)
    greedy = int(np.argmax(forward(params, np.frombuffer(b"hello", np.uint8), CFG)[0, -1]))
    assert out == bytes([greedy]).decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "x" * 33}, "longer than the context"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 257}, "top_k"),
        ({"prompt": ""}, "empty"),
    ],
)
def test_generate_rejects_bad_input_with_a_clear_message(params, kwargs, message):
    args = {"prompt": "ab", "temperature": 1.0, "top_k": None} | kwargs
    with pytest.raises(ValueError, match=message):
        generate(
            params, CFG, args["prompt"], 3, temperature=args["temperature"], top_k=args["top_k"]
        )


def _gqa_config(n_kv_heads: int = 2) -> Config:
    return Config(vocab_size=256, d_model=64, n_layers=2, n_heads=8, n_kv_heads=n_kv_heads,
                  d_ff=96, context=32)  # fmt: skip


def test_grouped_query_attention_equals_multi_head_attention_with_each_kv_head_repeated():
    cfg = _gqa_config()
    p = init_params(cfg, seed=1)
    mha = Config(**{**cfg.to_dict(), "n_kv_heads": cfg.n_heads})
    p2 = dict(p)
    for i in range(cfg.n_layers):
        for n in ("attn_k", "attn_v"):  # kv head j serves query heads 4j … 4j+3 (llama.cpp's order)
            w = p[f"blk.{i}.{n}.weight"].reshape(cfg.n_kv_heads, cfg.head_dim, cfg.d_model)
            p2[f"blk.{i}.{n}.weight"] = np.repeat(w, 4, axis=0).reshape(cfg.d_model, cfg.d_model)
    toks = np.arange(20) * 7 % 256
    np.testing.assert_allclose(forward(p, toks, cfg), forward(p2, toks, mha), rtol=0, atol=1e-6)
    assert p["blk.0.attn_k.weight"].shape == (cfg.kv_dim, cfg.d_model) == (16, 64)


def test_grouped_query_decoding_with_the_cache_equals_the_full_forward():
    cfg = _gqa_config(n_kv_heads=1)
    p = init_params(cfg, seed=2)
    toks = np.arange(24) * 5 % 256
    cache = new_cache(cfg)
    assert cache.k[0].shape == (1, 1, cfg.context, cfg.head_dim)  # Hkv heads cached, not H
    steps = [forward(p, toks[:8], cfg, cache=cache)[0]]
    steps += [forward(p, toks[t : t + 1], cfg, cache=cache)[0] for t in range(8, 24)]
    np.testing.assert_allclose(np.concatenate(steps), forward(p, toks, cfg)[0], atol=1e-5)


def test_n_kv_heads_must_divide_n_heads_and_training_says_it_has_no_gqa():
    with pytest.raises(ValueError, match="n_kv_heads 3 does not divide n_heads 8"):
        _gqa_config(n_kv_heads=3)
    from tinyquant.llm.backward import loss_and_grads

    cfg = _gqa_config()
    with pytest.raises(ValueError, match="grouped-query"):
        loss_and_grads(init_params(cfg), cfg, np.zeros((1, 4), int), np.zeros((1, 4), int))
