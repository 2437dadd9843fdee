"""K-quants and Q5_0/Q5_1 against their oracles: gguf-py (layouts, Q5 quantizers) and llama.cpp."""

import gguf
import numpy as np
import pytest
from gguf import quants
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from spec_strategies import tensors

from tinyquant.export.mix import tensor_types
from tinyquant.quant.gguf_blocks import GGUF_BLOCK_BYTES, dequantize_gguf, quantize_gguf
from tinyquant.quant.kquants import KQUANT_BLOCK_BYTES, dequantize_kquant, quantize_kquant

K = {k: gguf.GGMLQuantizationType[k.upper()] for k in KQUANT_BLOCK_BYTES}
Q5 = {k: gguf.GGMLQuantizationType[k.upper()] for k in ("q5_0", "q5_1")}


def test_block_sizes_are_ggml_s_and_give_the_documented_bits_per_weight():
    bpw = {k: 8 * b / 256 for k, b in KQUANT_BLOCK_BYTES.items()}
    assert bpw == {"q2_k": 2.625, "q3_k": 3.4375, "q4_k": 4.5, "q5_k": 5.5, "q6_k": 6.5625}
    for k, t in {**K, **Q5}.items():
        n, size = gguf.GGML_QUANT_SIZES[t]
        assert size == {**KQUANT_BLOCK_BYTES, **GGUF_BLOCK_BYTES}[k] and n in (32, 256)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # random fp16 fields: inf·0 in both
@given(st.sampled_from(list(K)), st.integers(1, 3), st.data())
def test_dequantize_equals_gguf_py_on_arbitrary_block_bytes(kind, nb, data):
    raw = data.draw(hnp.arrays(np.uint8, (2, nb * KQUANT_BLOCK_BYTES[kind])))
    ours = dequantize_kquant(raw, kind, 256 * nb)
    ref = quants.dequantize(raw, K[kind])
    np.testing.assert_array_equal(ours, ref)  # NaN where an fp16 field is NaN, in both


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@given(st.sampled_from(list(Q5)), st.integers(1, 3), st.data())
def test_q5_dequantize_equals_gguf_py_on_arbitrary_block_bytes(kind, nb, data):
    raw = data.draw(hnp.arrays(np.uint8, (2, nb * GGUF_BLOCK_BYTES[kind])))
    np.testing.assert_array_equal(
        dequantize_gguf(raw, kind, 32 * nb), quants.dequantize(raw, Q5[kind])
    )


@given(tensors(group_sizes=(32,), max_groups=3), st.sampled_from(list(Q5)))
def test_q5_bytes_equal_gguf_py_s_reference_quantizer(xg, kind):
    x, _ = xg
    x = np.clip(x, -6e4, 6e4)  # FP16 scales must stay finite
    b = x.reshape(-1, 32)
    d = (np.abs(b).max(1) / 16) if kind == "q5_0" else (b.max(1) - b.min(1)) / 31
    assume(np.all((d == 0) | (d >= np.finfo(np.float32).tiny)))  # ggml's 1/d must not overflow
    np.testing.assert_array_equal(quantize_gguf(x, kind), quants.quantize(x, Q5[kind]))


@pytest.mark.parametrize("kind", list(KQUANT_BLOCK_BYTES))
def test_zero_rows_quantize_to_zero_and_back_with_or_without_imatrix(kind):
    x = np.zeros((2, 512), np.float32)
    for im in (None, np.ones(512, np.float32)):
        b = quantize_kquant(x, kind, im)
        assert b.shape == (2, 2 * KQUANT_BLOCK_BYTES[kind])
        assert not dequantize_kquant(b, kind, 512).any()


@pytest.mark.parametrize("kind", ["q2_k", "q3_k", "q4_k", "q5_k"])
def test_an_imatrix_lowers_the_error_it_weights(kind):
    """Σ_j imatrix_j (x − x̂)²: the *_impl quantizers minimise it, the plain ones do not see it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 512)).astype(np.float32)
    im = np.exp(rng.standard_normal(512) * 2).astype(np.float32)  # importance spread ~100×
    err = {}
    for name, w in (("plain", None), ("imatrix", im)):
        xh = dequantize_kquant(quantize_kquant(x, kind, w), kind, 512)
        err[name] = float(((x - xh) ** 2 * im).sum())
    assert err["imatrix"] < 0.9 * err["plain"], err


def test_row_lengths_that_256_does_not_divide_take_llama_cpp_s_fallbacks():
    sh = {"blk.0.attn_v.weight": (8, 256), "blk.0.ffn_down.weight": (8, 96),
          "blk.0.attn_output.weight": (8, 40), "output.weight": (8, 96)}  # fmt: skip
    assert tensor_types(sh, "Q4_K_M", 1, 1) == {
        "blk.0.attn_v.weight": "Q6_K",  # use_more_bits(0, 1)
        "blk.0.ffn_down.weight": "Q8_0",  # Q6_K → Q8_0
        "blk.0.attn_output.weight": "F16",  # Q4_K → Q5_0 does not fit 40 either
        "output.weight": "Q8_0",  # output: 96 % 256 ≠ 0 goes straight to Q8_0
    }
    assert tensor_types(sh, "Q2_K", 1, 1)["blk.0.ffn_down.weight"] == "Q4_0"  # Q3_K → Q4_0
    assert tensor_types(sh, "Q5_K_M", 1, 1)["blk.0.attn_v.weight"] == "Q6_K"
    with pytest.raises(ValueError, match="unknown GGUF type"):
        tensor_types(sh, "IQ2_XXS", 1, 1)


def test_q4_k_m_on_the_shipped_shape_is_the_mix_llama_quantize_prints():
    sh = {"token_embd.weight": (256, 256), "output.weight": (256, 256)}
    for i in range(4):
        for n, s in [("attn_q", (256, 256)), ("attn_v", (256, 256)), ("ffn_down", (256, 768))]:
            sh[f"blk.{i}.{n}.weight"] = s
    t = tensor_types(sh, "Q4_K_M", 4, 4)
    six = sorted(n for n, v in t.items() if v == "Q6_K")
    assert six == ["blk.2.attn_v.weight", "blk.2.ffn_down.weight", "blk.3.attn_v.weight",
                   "blk.3.ffn_down.weight", "output.weight"]  # fmt: skip
    assert t["token_embd.weight"] == "Q4_K"


def _one_tensor_model(x):
    """A 1-layer llama whose ffn_up holds ``x`` (rows of 256), everything else small noise."""
    from tinyquant.llm.model import Config, init_params

    cfg = Config(vocab_size=256, d_model=256, n_layers=1, n_heads=1, d_ff=256, context=16)
    params = {n: np.asarray(v, np.float32) for n, v in init_params(cfg).items()}
    up = params["blk.0.ffn_up.weight"]
    up.reshape(-1)[: x.size] = x.reshape(-1)
    return params, cfg


@pytest.mark.slow
@settings(max_examples=12)
@given(tensors(max_rows=2, group_sizes=(256,), max_groups=1, allow_subnormal=False),
       st.sampled_from(["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"]), st.booleans())  # fmt: skip
def test_k_quant_bytes_equal_llama_cpp_s_quantizer_on_hard_tensors(tmp_path_factory, xg, ftype,
                                                                     use_im):  # fmt: skip
    lcp = pytest.importorskip("tinyquant.export.llamacpp")
    pytest.importorskip("llama_cpp")
    from tinyquant.export.gguf import export_gguf

    x, _ = xg
    x = np.clip(x, -6e4, 6e4)
    b = np.abs(x).max(-1)
    assume(np.all((b == 0) | ((b > 1e-30) & (b < 1e4))))  # fp16 super-scales stay normal
    params, cfg = _one_tensor_model(x)
    im = {"blk.0.ffn_up.weight": np.linspace(0.1, 3, 256, dtype=np.float32)} if use_im else None
    d = tmp_path_factory.mktemp("k")
    export_gguf(params, cfg, d / "f32.gguf", "F32")
    lcp.llama_cpp_quantize(d / "f32.gguf", d / "ref.gguf", ftype, im)
    ref = {t.name: t for t in gguf.GGUFReader(d / "ref.gguf").tensors}["blk.0.ffn_up.weight"]
    kind = ref.tensor_type.name.lower()
    ours = quantize_kquant(params["blk.0.ffn_up.weight"], kind, None if im is None else
                           im["blk.0.ffn_up.weight"])  # fmt: skip
    np.testing.assert_array_equal(ours.reshape(-1), np.asarray(ref.data).view(np.uint8).reshape(-1))
