"""QAT (tinyquant/qat.py): prepare starts at PTQ's grid, convert reproduces the trained forward,
training is deterministic and learns, the control is the same loop, bad input fails in one line."""

import numpy as np
import pytest

from tinyquant.cli import main
from tinyquant.llm import data as D
from tinyquant.llm.model import Config, forward, init_params
from tinyquant.methods import quantize_rtn
from tinyquant.qat import (
    ALL_BLOCKS,
    QATConfig,
    convert,
    fake_params,
    prepare,
    qat_loss_and_grads,
    qat_scheme,
    train_qat,
)
from tinyquant.qmodel import Model, linear_names, quantize_model
from tinyquant.recipe import Recipe, Rule, Weights

CFG = Config.tiny()
P = init_params(CFG, seed=0)
DATA = D.train_bytes()[:40_000]
VAL = D.val_bytes()[:4_000]
QC = QATConfig(steps=3, batch_size=2, warmup=1, eval_every=0, eval_bytes=1024)
X = np.arange(2 * 16).reshape(2, 16) % 256


def test_prepare_starts_from_ptqs_rtn_grid_so_the_first_forward_is_ptqs():
    w = Weights("uint2", 16)
    lat, st = prepare(P, CFG, w)
    ptq = quantize_model(P, CFG, Recipe("r", (Rule(ALL_BLOCKS, w),)))
    fq = fake_params(lat, CFG, st)
    for n in linear_names(CFG):
        assert np.array_equal(fq[n], ptq.params[n].qtensor.dequantize()), n


@pytest.mark.parametrize("scheme", [Weights("uint2", 16), Weights("uint4", 32), "ternary",
                                    Weights("uint3")])  # fmt: skip
def test_converted_model_reproduces_the_trained_fake_quant_forward_bit_for_bit(scheme):
    lat, st, _ = train_qat(P, CFG, scheme, QC, DATA, VAL, progress=False)
    fq = fake_params(lat, CFG, st)
    m = convert(lat, CFG, st, P, "qat-test", QC)
    for n in linear_names(CFG):  # the converted weights are the trained ŵ, to the bit
        assert np.array_equal(m.params[n].qtensor.dequantize(), fq[n]), n
    # the same function: the Linear runs (B·T, I) @ Ŵᵀ, the array forward (B, T, I) @ Ŵᵀ, and
    # BLAS may sum the two in another order (an ulp); with 2-D inputs they agree to the bit
    assert np.allclose(m.logits(X), forward(fq, X, CFG), rtol=0, atol=1e-6)
    h = np.random.default_rng(0).standard_normal((5, CFG.d_model)).astype(np.float32)
    n = "blk.0.attn_q.weight"
    assert np.array_equal(m.params[n].forward(h), h @ fq[n].T)


def test_converted_model_runs_on_the_integer_path_and_round_trips_through_a_file(tmp_path):
    lat, st, _ = train_qat(P, CFG, Weights("uint2", 16), QC, DATA, VAL, progress=False)
    m = convert(lat, CFG, st, P, "qat-w2-g16", QC)
    assert m.with_path("int").path == "int"
    assert np.allclose(m.with_path("int").logits(X), m.logits(X), atol=1e-3)
    m.save(tmp_path / "q.safetensors")
    back = Model.load(tmp_path / "q.safetensors")
    assert back.recipe == m.recipe and back.recipe.rules[0].method.name == "qat"
    assert np.array_equal(back.logits(X), m.logits(X))


def test_qat_gradients_are_the_model_gradient_through_the_clipped_ste():
    from tinyquant.llm.backward import loss_and_grads
    from tinyquant.quant.qat_ops import clipped_ste_bwd

    lat, st = prepare(P, CFG, Weights("uint4", 16))
    fq = fake_params(lat, CFG, st)
    x, y = X, (X + 1) % 256
    _, g_fq = loss_and_grads(fq, CFG, x, y)  # ∂L/∂ŵ from the model's own backward
    _, g, q = qat_loss_and_grads(lat, CFG, st, x, y)
    n = "blk.1.ffn_gate.weight"
    from tinyquant.qat import _fwd

    assert np.array_equal(g[n], clipped_ste_bwd(g_fq[n], _fwd(lat[n], n, st)[1]))
    assert q["s:" + n].shape == st.log_scale[n].shape


def test_qat_training_with_a_fixed_seed_is_deterministic():
    a = train_qat(P, CFG, Weights("uint2", 16), QC, DATA, VAL, progress=False)
    b = train_qat(P, CFG, Weights("uint2", 16), QC, DATA, VAL, progress=False)
    assert all(np.array_equal(a[0][k], b[0][k]) for k in a[0])
    assert all(np.array_equal(a[1].log_scale[k], b[1].log_scale[k]) for k in a[1].log_scale)
    assert a[2]["curve"] == b[2]["curve"]


def test_lsq_moves_the_step_sizes_and_a_frozen_grid_keeps_them():
    lat0, st0 = prepare(P, CFG, Weights("uint2", 16))
    _, st, _ = train_qat(P, CFG, Weights("uint2", 16), QC, DATA, VAL, progress=False)
    n = "blk.0.attn_q.weight"
    assert not np.array_equal(st.log_scale[n], st0.log_scale[n])
    frozen = QATConfig(steps=3, batch_size=2, warmup=1, eval_every=0, learn_scale=False)
    _, st_f, _ = train_qat(P, CFG, Weights("uint2", 16), frozen, DATA, VAL, progress=False)
    assert np.array_equal(st_f.log_scale[n], st0.log_scale[n])


def test_a_short_qat_run_lowers_the_2_bit_models_training_loss():
    qc = QATConfig(steps=40, batch_size=8, lr=3e-3, scale_lr=3e-3, warmup=5, eval_every=0)
    tiny = Config.tiny()
    from tinyquant.llm.train import TrainConfig, train

    p, _ = train(tiny, TrainConfig(steps=60, batch_size=8, lr=1e-2, min_lr=1e-3, warmup=5,
                                   eval_every=0), DATA, VAL, progress=False)  # fmt: skip
    _, _, meta = train_qat(p, tiny, Weights("uint2", 16), qc, DATA, VAL, progress=False)
    losses = [c["loss"] for c in meta["curve"] if "loss" in c]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_the_fp32_control_is_the_same_loop_without_quantization():
    lat, st, _ = train_qat(P, CFG, "fp32", QC, DATA, VAL, progress=False)
    assert st.weights is None and not st.log_scale
    assert fake_params(lat, CFG, st) is lat
    assert not np.array_equal(lat["blk.0.attn_q.weight"], P["blk.0.attn_q.weight"])
    assert np.array_equal(lat["token_embd.weight"], P["token_embd.weight"])  # Linears only
    assert convert(lat, CFG, st, P, "c", QC).recipe.name == "fp32-control"


def test_distillation_from_the_model_itself_starts_at_zero_loss():
    qc = QATConfig(steps=1, batch_size=2, warmup=1, eval_every=0, distill=True)
    _, _, meta = train_qat(P, CFG, "fp32", qc, DATA, VAL, progress=False)
    assert abs(meta["curve"][1]["loss"]) < 1e-6


def test_qat_scheme_names_the_ptq_twins_grid():
    assert qat_scheme("w4-rtn-g128") == qat_scheme("w4-g128") == Weights("uint4", 128)
    ptq = quantize_rtn(P["blk.0.ffn_down.weight"], Rule(ALL_BLOCKS, qat_scheme("w2-g64")))
    assert ptq.scale.dtype == np.float16  # stored as PTQ stores it


@pytest.mark.parametrize("argv, msg", [
    (["--recipe", "w9", "--steps", "3"], "unknown QAT recipe"),
    (["--recipe", "nf4", "--steps", "3"], "without a trainable uniform grid"),
    (["--recipe", "w2-g64", "--steps", "0"], "must be a finite number > 0"),
    (["--recipe", "w2-g64", "--steps", "3", "--lr", "-1"], "must be a finite number > 0"),
])  # fmt: skip
def test_bad_qat_arguments_fail_in_one_line(argv, msg, tmp_path, capsys):
    assert main(["qat", *argv, "--out", str(tmp_path / "q.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err
    assert not (tmp_path / "q.safetensors").exists()


def test_a_control_with_another_config_is_refused(tmp_path, capsys):
    from tinyquant.llm.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "tiny.safetensors", P, CFG, {})
    rc = main(
        [
            "qat",
            "--recipe",
            "w2-g64",
            "--steps",
            "1",
            "--control",
            str(tmp_path / "tiny.safetensors"),
            "--out",
            str(tmp_path / "q.safetensors"),
        ]
    )
    assert rc == 2 and "another config" in capsys.readouterr().err


SHIPPED_TWINS = {"qat-w4-g128": "w4-rtn-g128", "qat-w3": "w3-rtn", "qat-w2-g64": "w2-rtn-g64"}


@pytest.mark.parametrize("name, twin", SHIPPED_TWINS.items())
def test_a_shipped_qat_checkpoint_stores_exactly_the_bits_of_its_ptq_twin(name, twin):
    from tinyquant.compare import SavedScheme, resolve_scheme

    s = resolve_scheme(name)
    assert isinstance(s, SavedScheme)
    m = Model.load(s.path)
    assert m.recipe.rules[0].method.name == "qat"
    full = Config()
    ptq = quantize_model(init_params(full, seed=0), full, twin)
    assert m.bits_per_weight == ptq.bits_per_weight and m.nbytes == ptq.nbytes


def test_the_shipped_ternary_checkpoint_is_ternary_codes_with_one_scale_per_row():
    from tinyquant.compare import saved_schemes

    m = Model.load(saved_schemes()["qat-ternary"].path)
    qt = m.params["blk.0.ffn_down.weight"].qtensor
    assert qt.fmt.name == "ternary" and qt.block_size == (1, 768) and qt.zero is None
    assert set(np.unique(qt.unpacked_codes())) <= {-1, 0, 1}
