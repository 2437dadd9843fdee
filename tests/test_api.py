"""The Python API: load → quantize → evaluate → save → load reads as a notebook would."""

import numpy as np
import pytest

import tinyquant as tq


def test_the_fp32_model_evaluated_against_itself_has_zero_deltas_and_zero_width_intervals():
    r = tq.evaluate(tq.load(), sample=tq.EvalSample.quick())
    assert (r.delta_ppl_pct, r.delta_ppl_ci95, r.kl, r.kl_ci95, r.top1) == (
        0.0, (0.0, 0.0), 0.0, (0.0, 0.0), 1.0)  # fmt: skip


def test_quantize_save_load_evaluates_to_the_same_figures(tmp_path):
    q = tq.quantize(tq.load(), "w4-rtn-g128")
    q.save(tmp_path / "w4.safetensors")
    back = tq.load(tmp_path / "w4.safetensors")
    s = tq.EvalSample.quick()
    assert tq.evaluate(back, sample=s).as_dict() == tq.evaluate(q, sample=s).as_dict()
    assert back.base_sha256 == tq.load().base_sha256


def test_a_recipe_can_be_written_in_python_and_read_from_json(tmp_path):
    r = tq.Recipe("mine", (tq.Rule(("blk.*",), tq.Weights("uint4", 64)),
                           tq.Rule(("blk.*.ffn_down",), tq.Weights("uint8", 64))))  # fmt: skip
    path = tmp_path / "mine.json"
    path.write_text(r.to_json())
    q = tq.quantize(tq.load(), path)
    assert q.recipe == r
    assert q.bits_per_weight == pytest.approx(
        (4 + 3 / 8) * (1 - 4 * 256 * 768 / q_weights(q))
        + (8 + 3 / 8) * 4 * 256 * 768 / q_weights(q)
    )


def q_weights(q):
    return sum(q.params[n].in_features * q.params[n].out_features for n in q.quantized_names)


def test_quantizing_a_quantized_model_is_an_error():
    q = tq.quantize(tq.load(), "w8a16")
    with pytest.raises(ValueError, match="already quantized"):
        tq.quantize(q, "w4-rtn")


def test_the_int_path_gives_the_same_greedy_text_for_w8a8():
    q = tq.quantize(tq.load(), "w8a8")
    a = q.generate("ROMEO:", 24, top_k=1)
    assert a == q.with_path("int").generate("ROMEO:", 24, top_k=1)
    assert np.array_equal(q.logits(np.arange(10)), q.with_path("int").logits(np.arange(10)))
