"""Quantized checkpoints: saved and loaded models compute the same logits bit for bit, and every
kind of broken file is a one-line error."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tinyquant.cli import main
from tinyquant.llm.data import calibration_samples
from tinyquant.llm.model import Config, init_params
from tinyquant.qmodel import Model, quantize_model

CFG = Config(d_model=128, n_layers=4, n_heads=2, d_ff=256, context=32)  # g128 divides I
TOKENS = np.arange(24) * 7 % 256
RECIPES = ["fp16", "bf16", "fp8-e4m3", "w8a8", "w8a8-o3", "w8a8-smoothquant", "llm.int8", "nf4",
           "w4-rtn-g128", "w4-gptq-actorder", "w4-awq", "w2-gptq-hadamard", "q4_k_m-like", "mxfp4",
           "mxfp4-hadamard", "nvfp4"]  # fmt: skip


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=2)


@pytest.fixture(scope="module")
def calib():
    return calibration_samples(4, CFG.context, seed=0)


@pytest.mark.parametrize("name", RECIPES)
def test_a_saved_model_loads_with_identical_logits_on_both_paths(name, params, calib, tmp_path):
    q = quantize_model(params, CFG, name, calib)
    q.save(tmp_path / "q.safetensors")
    back = Model.load(tmp_path / "q.safetensors")
    assert back.recipe == q.recipe and back.nbytes == q.nbytes
    assert np.array_equal(back.logits(TOKENS), q.logits(TOKENS))
    assert np.array_equal(back.with_path("int").logits(TOKENS), q.with_path("int").logits(TOKENS))


def _broken(params, tmp_path, edit):
    q = quantize_model(params, CFG, "w4-rtn")
    path = tmp_path / "q.safetensors"
    q.save(path)
    from tinyquant.llm.checkpoint import read_header

    meta = read_header(path)["__metadata__"]
    tensors = load_file(str(path))
    edit(meta, tensors)
    out = tmp_path / "broken.safetensors"
    save_file(tensors, str(out), metadata=meta)
    return out


def _layout(meta, fn):
    layout = json.loads(meta["layout"])
    fn(layout)
    meta["layout"] = json.dumps(layout)


def _unchecked(meta, tensors):
    from tinyquant.llm.checkpoint import tensors_sha256

    meta["sha256"] = tensors_sha256(tensors)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m, t: t.update({"blk.0.attn_q.weight.codes": t["blk.0.attn_q.weight.codes"][:, 1:]}),
         "checksum"),
        (lambda m, t: (t.update({"blk.0.attn_q.weight.codes": np.ascontiguousarray(
            t["blk.0.attn_q.weight.codes"][:, 1:])}), _unchecked(m, t)), "codes must be"),
        (lambda m, t: m.update({"recipe": '{"name": "x", "rules": [{"targets": ["*"], "oops": 1}]}'}),
         "oops"),
        (lambda m, t: _layout(m, lambda lay: lay["blk.0.attn_q.weight"]["qtensor"].update(
            {"fmt": "int5"})), "int5"),
        (lambda m, t: _layout(m, lambda lay: lay["blk.0.attn_q.weight"].update({"type": "Magic"})),
         "Magic"),
        (lambda m, t: _layout(m, lambda lay: lay.pop("blk.0.attn_q.weight")), "do not match"),
        (lambda m, t: m.update({"config": json.dumps(CFG.to_dict() | {"d_model": 32})}),
         "config implies"),
        (lambda m, t: m.update({"format": "something/1"}), "not a quantized"),
    ],
)  # fmt: skip
def test_a_broken_file_is_a_one_line_error(edit, message, params, tmp_path):
    path = _broken(params, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as err:
        Model.load(path)
    assert "\n" not in str(err.value)


def test_a_truncated_file_is_a_clear_error(params, tmp_path):
    q = quantize_model(params, CFG, "w4-rtn")
    path = tmp_path / "q.safetensors"
    q.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        Model.load(path)


def test_saving_into_a_directory_path_is_an_error_and_leaves_no_temporary_file(params, tmp_path):
    q = quantize_model(params, CFG, "w4-rtn")
    with pytest.raises(ValueError, match="directory"):
        q.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # quantizes the shipped model (GPTQ) and evaluates it
def test_quantize_then_eval_and_generate_from_the_cli(tmp_path, capsys):
    out = tmp_path / "w4.safetensors"
    assert main(["quantize", "--recipe", "w4-rtn-g128", "--out", str(out)]) == 0
    assert main(["eval", "--checkpoint", str(out), "--max-bytes", "4096", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["recipe"] == "w4-rtn-g128" and r["delta_ppl_ci95"][0] <= r["delta_ppl_pct"]
    assert main(["generate", "ROMEO:", "-n", "20", "--checkpoint", str(out)]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
