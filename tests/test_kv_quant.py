"""The quantized KV cache: decoding through it equals the full forward on the same fake-quantized
keys and values; KIVI's streaming rule; bytes counted from the stored blocks; 8 bits is free."""

import numpy as np
import pytest

from tinyquant.evaluate import EvalSample, Evaluator
from tinyquant.kv_quant import KVQuant, QuantKVCache, kv_cache, parse_kv
from tinyquant.llm.model import Config, forward, init_params, new_cache

CFG = Config(d_model=32, n_layers=2, n_heads=2, d_ff=64, context=48)  # head dim 16


@pytest.fixture(scope="module")
def params():
    p = init_params(CFG, seed=3, dtype=np.float64)
    for k in p:  # larger weights than at init: attention is not uniform, outliers matter
        if k.endswith(("attn_q.weight", "attn_k.weight")):
            p[k] = p[k] * 20
    return p


def tokens(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, CFG.context))


SPECS = [
    KVQuant("int4", group_size=8, residual=16),
    KVQuant("int2", group_size=8, residual=0),
    KVQuant("int2", group_size=8, residual=16, pre_rope=True),
    KVQuant("int4", key_axis="token", group_size=8, residual=5),
    KVQuant("fp8", key_axis="token", group_size=16, residual=0, pre_rope=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_decoding_token_by_token_equals_scoring_the_window_in_one_call(params, spec):
    t = tokens()
    one = forward(params, t, CFG, cache=QuantKVCache(spec, CFG, 2, np.float64))
    cache = QuantKVCache(spec, CFG, 2, np.float64)
    steps = [forward(params, t[:, j : j + 1], CFG, cache=cache) for j in range(CFG.context)]
    assert np.isfinite(one).all()  # flushed full-precision entries are NaN: never read
    assert np.max(np.abs(np.concatenate(steps, axis=1) - one)) <= 1e-9


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_a_prefill_then_decoding_sees_what_token_by_token_decoding_sees(params, spec):
    t = tokens(seed=1)
    cache = QuantKVCache(spec, CFG, 2, np.float64)
    steps = [forward(params, t[:, j : j + 1], CFG, cache=cache) for j in range(CFG.context)]
    cache = QuantKVCache(spec, CFG, 2, np.float64)
    parts = [
        forward(params, t[:, :13], CFG, cache=cache),
        forward(params, t[:, 13:30], CFG, cache=cache),
    ]
    parts += [forward(params, t[:, j : j + 1], CFG, cache=cache) for j in range(30, CFG.context)]
    assert np.max(np.abs(np.concatenate(parts, axis=1) - np.concatenate(steps, axis=1))) <= 1e-9


class FakeQuantOutput:
    """Oracle: a Linear whose output (B, T, H·hd) is fake-quantized per token and head — what a
    pre-RoPE, per-token, residual-0 cache stores, applied through the model's linear seam."""

    def __init__(self, w, spec, role):
        self.w, self.spec, self.role = w, spec, role

    def forward(self, x):
        B, T, _ = x.shape
        y = (x @ self.w.T).reshape(B, T, CFG.n_heads, CFG.head_dim).transpose(0, 2, 1, 3)
        yq = self.spec.quantize(y, self.role).dequantize().astype(np.float64)
        return yq.transpose(0, 2, 1, 3).reshape(B, T, -1)


@pytest.mark.parametrize("fmt", ["int8", "int4", "int2", "fp8"])
def test_decoding_with_the_quantized_cache_equals_the_full_forward_on_fake_quantized_kv(
    params, fmt
):
    spec = KVQuant(fmt, key_axis="token", group_size=8, residual=0, pre_rope=True)
    fake = dict(params)
    for i in range(CFG.n_layers):
        for role, name in (("k", "attn_k"), ("v", "attn_v")):
            key = f"blk.{i}.{name}.weight"
            fake[key] = FakeQuantOutput(params[key], spec, role)
    t = tokens(seed=2)
    oracle = forward(fake, t, CFG)  # no cache: plain attention on fake-quantized K, V
    cache = QuantKVCache(spec, CFG, 2, np.float64)
    steps = [forward(params, t[:, j : j + 1], CFG, cache=cache) for j in range(CFG.context)]
    assert np.max(np.abs(np.concatenate(steps, axis=1) - oracle)) <= 1e-9
    assert not np.allclose(oracle, forward(params, t, CFG), atol=1e-6)  # the oracle is quantized


def test_kivi_keys_wait_in_full_precision_until_a_whole_flush_and_values_leave_the_window(params):
    spec = KVQuant("int2", group_size=8, residual=16)
    cache = QuantKVCache(spec, CFG, 1, np.float64)
    seen = []
    for j in range(40):
        forward(params, tokens(1)[:, j : j + 1], CFG, cache=cache)
        seen.append(cache.n_quantized())
    assert [k for k, _ in seen] == [(n + 1) // 16 * 16 for n in range(40)]
    assert [v for _, v in seen] == [max(0, n + 1 - 16) for n in range(40)]


def test_cache_bytes_are_the_codes_plus_an_fp16_scale_and_a_byte_of_zero_per_group(params):
    cfg = Config(d_model=128, n_layers=2, n_heads=2, d_ff=64, context=64)  # head dim 64
    p = init_params(cfg, seed=0)
    cache = QuantKVCache(KVQuant("int4", key_axis="token", group_size=32, residual=0), cfg)
    forward(p, np.arange(64), cfg, cache=cache)
    per_vector = 64 * 4 // 8 + 64 // 32 * (2 + 1)  # 32 B of codes + 2 groups × (scale, zero)
    assert cache.nbytes() == 64 * cfg.n_heads * 2 * cfg.n_layers * per_vector
    fp = QuantKVCache(KVQuant("int4", key_axis="token", group_size=32, residual=64), cfg)
    forward(p, np.arange(64), cfg, cache=fp)
    assert fp.nbytes() == 64 * cfg.n_heads * 2 * cfg.n_layers * 64 * 2  # all residual, FP16


def test_per_channel_keys_need_the_residual_to_be_a_whole_number_of_groups():
    with pytest.raises(ValueError, match="multiple of group_size"):
        KVQuant("int4", group_size=32, residual=48)
    with pytest.raises(ValueError, match="cannot read"):
        parse_kv("int4-kchannel")
    with pytest.raises(ValueError, match="does not divide the head dim"):
        QuantKVCache(KVQuant("int4", group_size=24, residual=0), Config())


def test_every_spec_name_parses_back_to_its_spec():
    for spec in SPECS + [KVQuant(), KVQuant("int8", key_axis="token", group_size=64, residual=0)]:
        assert parse_kv(spec.name) == spec


def test_the_full_precision_cache_scores_exactly_like_plain_attention(params):
    ev = Evaluator(params, CFG, EvalSample(n_windows=4, length=CFG.context, n_boot=20))
    r = ev.evaluate(params, kv_cache=lambda B: new_cache(CFG, B, np.float64))
    assert r.delta_ppl_pct == 0.0 and r.kl == 0.0 and r.top1 == 1.0


@pytest.fixture(scope="module")
def shipped():
    import tinyquant as tq

    m = tq.load()
    return m, Evaluator(m.params, m.cfg, EvalSample(n_windows=64, n_boot=1000))


def test_an_8_bit_kv_cache_changes_perplexity_by_less_than_its_interval(shipped):
    m, ev = shipped
    r = ev.evaluate(m.params, kv_cache=kv_cache("int8", m.cfg))
    lo, hi = r.delta_ppl_ci95
    assert lo <= 0.0 <= hi and abs(r.delta_ppl_pct) < hi - lo, r.delta_ppl_ci95


def test_a_2_bit_kv_cache_costs_perplexity_the_interval_resolves(shipped):
    m, ev = shipped
    r = ev.evaluate(m.params, kv_cache=kv_cache("int2-r0", m.cfg))
    assert r.delta_ppl_ci95[0] > 0.0  # a test that could fail: 2 bits with no residual is seen
