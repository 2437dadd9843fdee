"""GGUF export against llama.cpp itself: its forward pass and its own quantizer are the oracles.

llama-cpp-python (dev extras) builds llama.cpp from source; without it these tests skip.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from tinyquant.export.gguf import (
    decode_tensor,
    export_gguf,
    import_gguf,
    permute_qk,
    unpermute_qk,
)
from tinyquant.export.imatrix import compute_imatrix, read_imatrix, write_imatrix
from tinyquant.export.mix import FILE_TYPES
from tinyquant.llm.checkpoint import load_checkpoint
from tinyquant.llm.data import calibration_samples, encode
from tinyquant.llm.model import Config, forward, init_params, rmsnorm

gguf = pytest.importorskip("gguf")

TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"]
# byte ranges of each block's fields (ggml-common.h), to name the field where bytes differ
FIELDS = {
    "Q8_0": [("d", 0, 2), ("qs", 2, 34)],
    "Q4_0": [("d", 0, 2), ("qs", 2, 18)],
    "Q4_1": [("d", 0, 2), ("m", 2, 4), ("qs", 4, 20)],
    "Q5_0": [("d", 0, 2), ("qh", 2, 6), ("qs", 6, 22)],
    "Q5_1": [("d", 0, 2), ("m", 2, 4), ("qh", 4, 8), ("qs", 8, 24)],
    "Q2_K": [("scales", 0, 16), ("qs", 16, 80), ("d", 80, 82), ("dmin", 82, 84)],
    "Q3_K": [("hmask", 0, 32), ("qs", 32, 96), ("scales", 96, 108), ("d", 108, 110)],
    "Q4_K": [("d", 0, 2), ("dmin", 2, 4), ("scales", 4, 16), ("qs", 16, 144)],
    "Q5_K": [("d", 0, 2), ("dmin", 2, 4), ("scales", 4, 16), ("qh", 16, 48), ("qs", 48, 176)],
    "Q6_K": [("ql", 0, 128), ("qh", 128, 192), ("scales", 192, 208), ("d", 208, 210)],
}
PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"


@pytest.fixture(scope="module")
def model():
    params, cfg, _ = load_checkpoint()
    return params, cfg


@pytest.fixture(scope="module")
def f32_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "m_f32.gguf"
    export_gguf(*model, path, "F32")
    return path


@pytest.fixture(scope="module")
def imatrix(model):
    im, _ = compute_imatrix(*model, calibration_samples(4, 128, seed=1))
    return im


def _tensors(path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _compare_bytes(ref_path, our_path) -> int:
    """Assert equal types and bytes tensor by tensor; returns the number of blocks compared."""
    ref, ours = _tensors(ref_path), _tensors(our_path)
    assert sorted(ref) == sorted(ours)
    blocks = 0
    for name, r in ref.items():
        o = ours[name]
        msg = f"{name}: we wrote {o.tensor_type.name}, llama.cpp {r.tensor_type.name}"
        assert o.tensor_type == r.tensor_type, msg
        a, b = (np.asarray(t.data).view(np.uint8).ravel() for t in (r, o))
        size = gguf.GGML_QUANT_SIZES[r.tensor_type][1]
        a, b = a.reshape(-1, size), b.reshape(-1, size)
        blocks += a.shape[0]
        bad = np.flatnonzero((a != b).any(axis=1))
        if bad.size:
            k = int(bad[0])
            col = int(np.flatnonzero(a[k] != b[k])[0])
            field = next((f for f, lo, hi in FIELDS.get(r.tensor_type.name, []) if lo <= col < hi),
                         "value")  # fmt: skip
            pytest.fail(f"{name} ({r.tensor_type.name}): {bad.size} of {a.shape[0]} blocks differ; "
                        f"first block {k}, byte {col} in field {field}")  # fmt: skip
    return blocks


def test_permute_then_unpermute_is_the_identity_and_pairs_rows_per_head():
    w = np.arange(32.0).reshape(8, 4)  # 2 heads of head dim 4
    p = permute_qk(w, 2)
    assert np.array_equal(unpermute_qk(p, 2), w)
    assert p[:, 0].tolist() == [0, 8, 4, 12, 16, 24, 20, 28]  # rows (0, 2, 1, 3) of each head


def test_f32_export_imports_back_to_the_same_weights_and_config(model, f32_file):
    params, cfg = model
    back, cfg2, types = import_gguf(f32_file)
    assert all(np.array_equal(back[n], params[n]) for n in params) and set(back) == set(params)
    assert cfg2.n_layers == cfg.n_layers and cfg2.d_ff == cfg.d_ff and cfg2.context == cfg.context
    assert cfg2.norm_eps == np.float32(cfg.norm_eps) and cfg2.rope_theta == cfg.rope_theta
    assert set(types.values()) == {"F32"}


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q3_K_M", "Q5_1"])
def test_import_equals_gguf_py_dequantize_of_the_same_tensors(model, tmp_path, ftype):
    path = tmp_path / "m.gguf"
    export_gguf(*model, path, ftype)
    back, cfg, _ = import_gguf(path)
    for t in gguf.GGUFReader(path).tensors:
        ref = gguf.quants.dequantize(t.data, t.tensor_type).reshape(back[t.name].shape)
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            ref = unpermute_qk(ref, cfg.n_heads)
        assert np.array_equal(back[t.name], ref.astype(np.float32)), t.name


def test_llama_cpp_runs_our_f32_export_with_our_logits_and_greedy_text(model, f32_file):
    """Tolerance 1e-4 relative to max |logit|: both compute in float32 with a different
    summation order (ggml's SIMD dot products vs BLAS); an F32 KV cache keeps it at ~1e-6."""
    lcp = pytest.importorskip("tinyquant.export.llamacpp")
    pytest.importorskip("llama_cpp")
    params, cfg = model
    toks = encode(PROMPT)
    theirs = lcp.llama_cpp_logits(f32_file, toks)
    ours = forward(params, toks[None], cfg)[0]
    rel = np.abs(theirs - ours).max() / np.abs(ours).max()
    assert rel < 1e-4, rel
    assert np.array_equal(theirs.argmax(-1), ours.argmax(-1))  # greedy next byte everywhere


@pytest.mark.slow
def test_llama_cpp_greedy_continuation_equals_ours(model, f32_file):
    lcp = pytest.importorskip("tinyquant.export.llamacpp")
    pytest.importorskip("llama_cpp")
    params, cfg = model
    toks = list(encode("JULIET:\n"))
    ours = list(toks)
    for _ in range(60):
        ours.append(int(forward(params, np.array(ours)[None], cfg)[0, -1].argmax()))
    assert lcp.llama_cpp_greedy(f32_file, toks, 60) == ours


@pytest.mark.slow
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("ftype", TYPES)
def test_our_export_has_llama_quantize_bytes(model, f32_file, imatrix, tmp_path, ftype,
                                             with_imatrix):  # fmt: skip
    lcp = pytest.importorskip("tinyquant.export.llamacpp")
    pytest.importorskip("llama_cpp")
    im = imatrix if with_imatrix else None
    lcp.llama_cpp_quantize(f32_file, tmp_path / "ref.gguf", ftype, im)
    export_gguf(*model, tmp_path / "ours.gguf", ftype, imatrix=im)
    blocks = _compare_bytes(tmp_path / "ref.gguf", tmp_path / "ours.gguf")
    assert blocks >= 16128  # every block of every tensor (K-quant files: 16128 super-blocks)


def _edge_params(cfg: Config, seed: int = 0) -> dict:
    """Random weights with hard blocks written in: zeros, constants, one spike, ±tiny, ties."""
    rng = np.random.default_rng(seed)
    params = {n: rng.standard_normal(v.shape).astype(np.float32) * 0.05
              for n, v in init_params(cfg).items()}  # fmt: skip
    cases = [np.zeros(256), np.full(256, 0.3), np.full(256, -0.2), np.eye(1, 256, 17)[0],
             rng.standard_normal(256) * 1e-6, np.abs(rng.standard_normal(256)),
             -np.abs(rng.standard_normal(256)), np.round(rng.standard_normal(256) * 8) / 16,
             np.concatenate([np.zeros(128), rng.standard_normal(128)]),
             rng.standard_normal(256) * np.where(np.arange(256) % 16 == 0, 100.0, 1.0)]  # fmt: skip
    for w in params.values():
        if w.ndim == 2:
            flat = w.reshape(-1)
            for k, c in enumerate(cases):
                start = (k * 2 + 1) * 256
                if start + 256 <= flat.size:
                    flat[start : start + 256] = c
    return params


@pytest.mark.slow
@pytest.mark.parametrize("ftype", TYPES)
def test_edge_blocks_and_a_row_of_96_match_llama_quantize_with_its_fallbacks(tmp_path, ftype):
    """d_ff = 96 makes ffn_down rows of 96: K-quants fall back (Q4_K → Q5_0, Q6_K → Q8_0…)."""
    lcp = pytest.importorskip("tinyquant.export.llamacpp")
    pytest.importorskip("llama_cpp")
    cfg = Config(vocab_size=256, d_model=256, n_layers=2, n_heads=2, d_ff=96, context=64)
    params = _edge_params(cfg)
    export_gguf(params, cfg, tmp_path / "f32.gguf", "F32")
    im = {n: np.abs(np.sin(np.arange(w.shape[1]))).astype(np.float32) + 0.01
          for n, w in params.items() if w.ndim == 2 and n != "token_embd.weight"}  # fmt: skip
    for i, imx in enumerate([None, im]):
        lcp.llama_cpp_quantize(tmp_path / "f32.gguf", tmp_path / f"r{i}.gguf", ftype, imx)
        export_gguf(params, cfg, tmp_path / f"o{i}.gguf", ftype, imatrix=imx)
        _compare_bytes(tmp_path / f"r{i}.gguf", tmp_path / f"o{i}.gguf")


@pytest.mark.slow
@pytest.mark.parametrize("ftype", ["Q8_0", "Q6_K", "Q4_K_M", "Q2_K"])
def test_llama_cpp_runs_our_quantized_export_close_to_our_forward_on_its_weights(
    model, tmp_path, ftype
):
    """Our forward on the dequantized weights vs llama.cpp on the quantized file. llama.cpp's CPU
    matmul also quantizes the activations (to Q8_0 / Q8_K blocks) before the integer dot
    product, so the two differ by that 8-bit activation rounding: tolerance 5e-2 of max |logit|
    (measured 0.7–1.9e-2 over 256 validation bytes, Q4_0 … Q4_K_M), and the greedy next byte
    agrees at ≥ 95% of positions (measured 97.7–98.8%). The weights themselves are exact: the
    bytes equal llama.cpp's and our dequantization equals gguf-py's (tests above)."""
    lcp = pytest.importorskip("tinyquant.export.llamacpp")
    pytest.importorskip("llama_cpp")
    path = tmp_path / "m.gguf"
    export_gguf(*model, path, ftype)
    back, cfg, _ = import_gguf(path)
    toks = encode(PROMPT)
    theirs = lcp.llama_cpp_logits(path, toks, n_batch=1)  # batched decode segfaults here
    ours = forward(back, toks[None], cfg)[0]
    rel = np.abs(theirs - ours).max() / np.abs(ours).max()
    assert rel < 5e-2, rel
    assert (theirs.argmax(-1) == ours.argmax(-1)).mean() >= 0.95


def test_imatrix_is_the_mean_square_of_each_input_channel_and_survives_its_file(model, tmp_path):
    params, cfg = model
    toks = calibration_samples(2, 64, seed=3)
    im, n = compute_imatrix(params, cfg, toks)
    assert n == 128 and len(im) == 7 * cfg.n_layers + 1  # every Linear and the output head
    # oracle: attn_q of block 0 sees rmsnorm(embedding) — average its x² directly
    h = rmsnorm(params["token_embd.weight"][toks].astype(np.float64),
                params["blk.0.attn_norm.weight"], cfg.norm_eps).reshape(-1, cfg.d_model)  # fmt: skip
    assert np.allclose(im["blk.0.attn_q.weight"], (h * h).mean(axis=0), rtol=1e-5)
    write_imatrix(tmp_path / "im.gguf", im, n, 64)
    back = read_imatrix(tmp_path / "im.gguf")
    assert set(back) == set(im)
    assert all(np.allclose(back[k], im[k], rtol=1e-6) for k in im)


def test_bad_inputs_are_one_line_errors_and_leave_no_file(model, f32_file, tmp_path):
    params, cfg = model
    with pytest.raises(ValueError, match="unknown GGUF type 'Q7_K'") as e:
        export_gguf(params, cfg, tmp_path / "x.gguf", "Q7_K")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="does not fit this model"):
        export_gguf(params, cfg, tmp_path / "x.gguf", "Q4_K_M",
                    imatrix={"blk.0.attn_q.weight": np.ones(100, np.float32)})  # fmt: skip
    with pytest.raises(ValueError, match="does not exist"):
        export_gguf(params, cfg, tmp_path / "no" / "x.gguf", "F32")
    assert os.listdir(tmp_path) == []  # nothing partial left behind
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(f32_file.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="not a readable GGUF"):
        import_gguf(trunc)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match="not a readable GGUF"):
        import_gguf(junk)
    with pytest.raises(ValueError, match="not an imatrix"):
        read_imatrix(f32_file)
    im = tmp_path / "im.gguf"  # a GGUF file that is not a model (no architecture)
    write_imatrix(im, {"blk.0.attn_q.weight": np.ones(256, np.float32)}, 10, 10)
    with pytest.raises(ValueError, match="general.architecture"):
        import_gguf(im)
    with pytest.raises(ValueError, match="BF16 is not one tinyquant reads"):
        decode_tensor(np.zeros(4, np.uint8), "BF16", (2,))


def test_a_read_only_directory_is_a_one_line_error(model, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(ValueError, match="cannot write"):
            export_gguf(*model, ro / "m.gguf", "F32")
    finally:
        ro.chmod(0o700)


def test_a_failed_write_leaves_no_partial_file(model, tmp_path, monkeypatch):
    import tinyquant.export.gguf as g

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(g, "encode_tensor", boom)
    with pytest.raises(ValueError, match="No space left"):
        export_gguf(*model, tmp_path / "m.gguf", "Q8_0")
    assert os.listdir(tmp_path) == []


def test_every_file_type_names_a_default_we_write():
    assert set(TYPES) | {"F32", "F16"} == set(FILE_TYPES)


def test_cli_exports_a_file_that_imports_back(tmp_path, capsys):
    from tinyquant.cli import main

    out = tmp_path / "m.gguf"
    assert main(["export", "gguf", "--type", "Q8_0", "--out", str(out)]) == 0
    assert "Q8_0" in capsys.readouterr().out and out.exists()
    assert main(["import", "gguf", str(out)]) == 0
    assert "blk.3.ffn_down.weight        Q8_0" in capsys.readouterr().out
    assert main(["import", "gguf", str(tmp_path / "absent.gguf")]) == 2


@pytest.mark.parametrize("ftype", ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"])
def test_the_mixes_bits_per_weight_without_a_file_equal_the_written_files(model, tmp_path, ftype):
    from tinyquant.export.mix import mix_bits_per_weight
    from tinyquant.export.schemes import file_bits

    params, cfg = model
    export_gguf(params, cfg, tmp_path / "m.gguf", ftype)
    q_bytes, q_n, _ = file_bits(tmp_path / "m.gguf")
    shapes = {k: v.shape for k, v in params.items()}
    assert mix_bits_per_weight(shapes, ftype, cfg.n_heads, cfg.n_heads) == 8 * q_bytes / q_n


def test_a_grouped_query_model_round_trips_and_llama_cpp_runs_it_with_our_logits(tmp_path):
    """head_count_kv < head_count: attn_k is permuted per key/value head, not per query head."""
    cfg = Config(vocab_size=256, d_model=256, n_layers=2, n_heads=8, n_kv_heads=2, d_ff=256,
                 context=64)  # fmt: skip
    params = {k: v * (5.0 if v.ndim == 2 else 1.0) for k, v in init_params(cfg, seed=3).items()}
    export_gguf(params, cfg, tmp_path / "g.gguf", "F32")
    back, cfg_back, _ = import_gguf(tmp_path / "g.gguf")
    same = dataclasses.replace(cfg_back, norm_eps=cfg.norm_eps)  # ε is stored as float32
    assert same == cfg and all(np.array_equal(back[k], params[k]) for k in params)
    lcp = pytest.importorskip("tinyquant.export.llamacpp")
    pytest.importorskip("llama_cpp")
    toks = np.arange(40) * 7 % 256
    theirs = lcp.llama_cpp_logits(tmp_path / "g.gguf", toks)
    ours = forward(params, toks[None], cfg)[0]
    assert np.abs(theirs - ours).max() / np.abs(ours).max() < 1e-4
