"""The memory calculator reproduces hand-checked facts; its byte counts are tinyquant's own."""

import dataclasses
import json
import math

import gguf
import numpy as np
import pytest

from tinyquant.cli import main
from tinyquant.devices import DEVICES, get_device
from tinyquant.memory import (
    SCHEMES,
    codec_nbytes,
    estimate,
    kv_bytes,
    plot_memory,
    weight_bytes,
)
from tinyquant.model_configs import MODELS, get_model
from tinyquant.quant import quantize_codebook, quantize_mx, quantize_tensor

KiB, MiB, GiB = 2**10, 2**20, 2**30


# -- parameters ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count_from_the_config_matches_the_published_count_to_its_digits(name):
    m = get_model(name)
    d = len(m.published.partition(".")[2])
    b = m.params / 1e9  # published counts are rounded (or truncated: Qwen's 7.6156 → "7.61")
    assert m.published in (f"{b:.{d}f}", f"{math.floor(b * 10**d) / 10**d:.{d}f}")


def test_qwen_non_embedding_count_matches_the_model_card():
    m = get_model("qwen2.5-7b")
    assert f"{(m.params - 2 * m.vocab * m.hidden) / 1e9:.2f}" == "6.53"


def test_llama_2_counts_are_exact_to_the_parameter():
    # hand sum: 32 · (4·4096² + 3·4096·11008 + 2·4096) + 2·32000·4096 + 4096
    assert get_model("llama-2-7b").params == 6_738_415_616
    assert get_model("llama-2-70b").params == 68_976_648_192


@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.published_active])
def test_moe_active_parameters_match_the_model_card(name):
    m = get_model(name)
    read = weight_bytes(m, "fp16")["read_per_token"] / 2  # params streamed per token
    digits = len(m.published_active.partition(".")[2])
    # gpt-oss counts exclude the embedding (as read_per_token does); Mistral's includes it
    active = read + (m.vocab * m.hidden if name.startswith("mixtral") else 0)
    assert abs(active / 1e9 - float(m.published_active)) <= 0.5 * 10**-digits


# -- weights ------------------------------------------------------------------------------------
def test_llama_2_7b_fp16_weights_are_13_48_gb():
    assert round(weight_bytes("llama-2-7b", "fp16")["total"] / 1e9, 2) == 13.48


@pytest.mark.parametrize(
    "model, scheme, gb",
    [("llama-2-7b", "int8", 6.74), ("llama-2-7b", "int4-g128", 3.47),
     ("llama-2-70b", "fp16", 137.95), ("llama-2-70b", "int4-g128", 35.57)],
)  # fmt: skip
def test_interview_weight_sizes_when_every_tensor_takes_the_scheme(model, scheme, gb):
    assert round(weight_bytes(model, scheme, all_tensors=True)["total"] / 1e9, 2) == gb


def test_llama_2_70b_int8_is_one_byte_per_weight_plus_a_fp16_scale_per_row_and_fp16_norms():
    rows = 2 * 32000 + 80 * (8192 + 1024 + 1024 + 8192 + 28672 + 28672 + 8192)  # q k v o g u d
    norms = (2 * 80 + 1) * 8192
    want = 68_976_648_192 + 2 * rows + norms  # 68.99 GB; "68.98" counts 8 bits flat
    assert weight_bytes("llama-2-70b", "int8", all_tensors=True)["total"] == want


def test_q4_k_m_like_70b_is_the_size_of_the_real_file():
    w = weight_bytes("llama-2-70b", "q4_k_m-like")  # the GGUF file is 41.38 GB ≈ 4.8 bpw
    assert round(w["total"] / 1e9, 2) == 41.38 and round(w["bits_per_weight"], 1) == 4.8


@pytest.mark.parametrize("name, gib", [("gpt-oss-120b", 60.8), ("gpt-oss-20b", 12.8)])
def test_gpt_oss_mxfp4_checkpoint_size_matches_the_model_card(name, gib):
    assert round(weight_bytes(name, "mxfp4-moe")["total"] / GiB, 1) == gib


@pytest.mark.parametrize(
    "codec, fmt, block, symmetric",
    [("int8-row", "int8", (1, 512), True), ("int4-g128", "int4", (1, 128), True),
     ("uint2-g64", "uint2", (1, 64), False)],
)  # fmt: skip
def test_affine_codec_bytes_equal_a_real_qtensor(codec, fmt, block, symmetric):
    w = np.random.default_rng(0).standard_normal((48, 512)).astype(np.float32)
    qt = quantize_tensor(w, fmt, block, symmetric=symmetric, scale_dtype="float16")
    assert codec_nbytes(codec, 48, 512) == qt.nbytes


@pytest.mark.parametrize("shape", [(64, 4096), (48, 1024), (3, 640)])
def test_nf4_double_quant_bytes_equal_a_real_qtensor(shape):
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    assert codec_nbytes("nf4-dq", *shape) == quantize_codebook(w, "nf4", double_quant=True).nbytes


def test_mxfp4_codec_bytes_equal_a_real_mxtensor():
    w = np.random.default_rng(2).standard_normal((16, 2880)).astype(np.float32)
    assert codec_nbytes("mxfp4", 16, 2880) == quantize_mx(w, "mxfp4").nbytes


@pytest.mark.parametrize("codec, qtype", [("q4_k", "Q4_K"), ("q6_k", "Q6_K"), ("mxfp4", "MXFP4")])
def test_llama_cpp_block_bytes_equal_gguf_constants(codec, qtype):
    k, nbytes = gguf.constants.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    assert codec_nbytes(codec, 1, k) == nbytes


@pytest.mark.parametrize(
    "codec, bpw",
    [("fp16", 16), ("int4-g128", 4.125), ("q4_k", 4.5), ("q6_k", 6.5625), ("mxfp4", 4.25),
     ("uint2-g64", 2.375)],
)  # fmt: skip
def test_bits_per_weight_include_the_scales(codec, bpw):
    assert 8 * codec_nbytes(codec, 256, 4096) / (256 * 4096) == bpw


def test_every_scheme_runs_on_every_model_and_costs_less_than_fp16():
    for name in MODELS:
        fp16 = weight_bytes(name, "fp16")["total"]
        for s in SCHEMES:
            w = weight_bytes(name, s)
            assert 0 < w["read_per_token"] <= w["total"] <= fp16


# -- KV cache -----------------------------------------------------------------------------------
def test_llama_2_70b_kv_is_320_kib_per_token_thanks_to_gqa_and_2_5_mib_without():
    m = get_model("llama-2-70b")
    assert kv_bytes(m, 1) == 320 * KiB
    assert kv_bytes(dataclasses.replace(m, kv_heads=m.heads), 1) == 2.5 * MiB


def test_llama_2_70b_8k_batch_32_fp16_kv_is_85_9_gb_more_than_its_int4_weights():
    kv = kv_bytes("llama-2-70b", 8192, 32)
    assert round(kv / 1e9, 1) == 85.9
    assert kv > weight_bytes("llama-2-70b", "int4-g128")["total"]


def test_llama_2_7b_kv_is_512_kib_per_token_and_2_gib_at_4k():
    assert kv_bytes("llama-2-7b", 1) == 512 * KiB and kv_bytes("llama-2-7b", 4096) == 2 * GiB


def test_kv_bytes_halve_from_fp16_to_fp8_and_int_formats_pay_one_fp16_scale_per_head_vector():
    fp16, fp8 = kv_bytes("llama-3.1-8b", 1000, 2), kv_bytes("llama-3.1-8b", 1000, 2, "fp8")
    assert fp8 * 2 == fp16
    assert kv_bytes("llama-3.1-8b", 1000, 2, "int4") == fp16 * (4 + 16 / 128) / 16


def test_sliding_window_layers_stop_growing_at_their_window():
    m = get_model("gpt-oss-120b")  # 18 layers of 128 tokens, 18 of full attention
    per = 2 * m.kv_heads * m.head_dim * 2
    assert kv_bytes(m, 8192) == per * (18 * 128 + 18 * 8192)
    assert kv_bytes("mistral-7b", 8192) == kv_bytes("mistral-7b", 4096)


# -- speed, roofline, fit -------------------------------------------------------------------------
def test_decode_ceiling_is_bandwidth_over_weights_read_plus_kv():
    e = estimate("llama-2-7b", "fp16", 4096, device="h100", all_tensors=True)
    streamed = (6_738_415_616 - 32000 * 4096) * 2  # the embedding table is gathered, not read
    assert e["decode"]["batch1_tokens_per_s"] == pytest.approx(3.35e12 / (streamed + 2 * GiB))
    assert e["decode"]["weights_only_tokens_per_s"] == pytest.approx(3.35e12 / streamed)


def test_decode_is_faster_with_fewer_bytes_per_weight_in_the_memory_bound_regime():
    tps = [estimate("llama-2-7b", s, 4096)["decode"]["batch1_tokens_per_s"]
           for s in ("fp16", "int8", "int4-g128")]  # fmt: skip
    assert tps[0] < tps[1] < tps[2] < 2 * tps[1]  # KV reads keep INT4 far from 4× FP16


@pytest.mark.parametrize("name, ridge", [("h100", 295), ("a100", 153)])
def test_roofline_ridge_points(name, ridge):
    assert round(DEVICES[name].flops / DEVICES[name].bandwidth) == ridge


def test_batch_1_decode_is_memory_bound_everywhere():
    for d in DEVICES:
        assert estimate("llama-3.1-8b", "fp16", 1024, device=d)["roofline"]["bound"] == "memory"


def test_fit_answers_how_many_80_gb_gpus():
    assert estimate("llama-2-7b", "fp16", 4096)["fits"]
    e = estimate("llama-2-70b", "fp16", 4096)
    assert not e["fits"] and e["devices_needed"] == 2
    assert estimate("llama-2-70b", "int4-g128", 4096)["fits"]


def test_a_given_bandwidth_overrides_the_cpu_measurement():
    d = get_device("cpu", bandwidth=50e9)
    assert d.bandwidth == 50e9 and d.memory > 0 and d.flops > 0


# -- errors and the command -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [({"model": "llama-5"}, "unknown model 'llama-5'"), ({"scheme": "int3"}, "unknown scheme"),
     ({"device": "tpu"}, "unknown device 'tpu'"), ({"context": 0}, "context must be a positive"),
     ({"batch": -1}, "batch must be a positive"), ({"kv": "fp4"}, "unknown KV format")],
)  # fmt: skip
def test_bad_arguments_are_one_line_value_errors(kwargs, match):
    args = {"model": "llama-2-7b", "scheme": "fp16", "context": 128} | kwargs
    with pytest.raises(ValueError, match=match) as err:
        estimate(**args)
    assert "\n" not in str(err.value)


def test_cli_prints_the_breakdown_and_one_json_document(capsys):
    argv = ["memory", "--model", "llama-2-70b", "--scheme", "int4-g128", "--context", "8192",
            "--batch", "32", "--device", "h100"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "320.0 KiB/token" in text and "85.90 GB" in text and "does NOT fit" in text
    assert main(argv + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kv_bytes"] == 85_899_345_920 and doc["devices_needed"] == 2


def test_cli_lists_and_reports_bad_input_on_one_line(capsys):
    assert main(["memory", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in [*MODELS, *SCHEMES, *DEVICES])
    assert main(["memory", "--model", "llama-2-7b", "--context", "-5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "context must be a positive integer" in err


def test_plot_writes_a_png(tmp_path):
    out = plot_memory("llama-2-70b", str(tmp_path / "mem.png"), batch=8, device="h100")
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
