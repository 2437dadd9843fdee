"""Decode attention (kernels/attention.py) against its NumPy twin, llm.model.causal_attention."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyquant.kernels.attention import DECODE_MAX_T, decode_attention
from tinyquant.llm.model import causal_attention


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2),
    Hkv=st.integers(1, 3),
    G=st.sampled_from([1, 2, 4]),
    T=st.integers(1, DECODE_MAX_T),
    past=st.integers(0, 150),
    hd=st.sampled_from([4, 16, 32, 64, 128]),
    seed=st.integers(0, 2**16),
)
def test_decode_attention_equals_numpy_causal_attention_within_float32_rounding(
    B, Hkv, G, T, past, hd, seed
):
    rng = np.random.default_rng(seed)
    n, C = past + T, past + T + 5  # the cache has room beyond the filled positions
    q = rng.standard_normal((B, Hkv * G, T, hd), dtype=np.float32) * 3
    kc = rng.standard_normal((B, Hkv, C, hd), dtype=np.float32) * 3
    vc = rng.standard_normal((B, Hkv, C, hd), dtype=np.float32)
    kc[:, :, n:] = vc[:, :, n:] = np.nan  # positions past n must never be read
    ref = causal_attention(q, kc[:, :, :n], vc[:, :, :n])
    got = decode_attention(q, kc, vc, n)
    assert np.allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_the_cached_model_decodes_through_the_kernel_and_matches_the_full_forward():
    from tinyquant.llm.model import Config, forward, init_params, new_cache

    cfg = Config(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                 context=32)  # fmt: skip
    params = init_params(cfg, seed=1)
    toks = np.arange(12) * 5 % 64
    full = forward(params, toks, cfg)[0]  # (T, V) without a cache: the NumPy attention
    cache = new_cache(cfg)
    steps = [forward(params, toks[t : t + 1], cfg, cache=cache)[0, 0] for t in range(12)]
    assert np.allclose(np.stack(steps), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(q=np.zeros((1, 2, 1, 4))), "q must be a 4-D float32 array"),
        (dict(q=np.zeros((1, 3, 1, 4), np.float32)), "multiple of the key/value heads"),
        (dict(q=np.zeros((1, 2, 5, 4), np.float32)), "decode_attention takes 1"),
        (dict(n=9), "fit the cache"),
        (dict(n=0), "hold the 1 queries"),
        (dict(v_cache=np.zeros((1, 2, 7, 4), np.float32)), "differ in shape"),
    ],
)
def test_decode_attention_rejects_bad_input_with_a_clear_message(args, message):
    kw = dict(q=np.zeros((1, 2, 1, 4), np.float32), k_cache=np.zeros((1, 2, 8, 4), np.float32),
              v_cache=np.zeros((1, 2, 8, 4), np.float32), n=3)  # fmt: skip
    kw.update(args)
    with pytest.raises(ValueError, match=message):
        decode_attention(kw["q"], kw["k_cache"], kw["v_cache"], kw["n"])
