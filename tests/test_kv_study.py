"""The committed KV study (``tinyquant kv --json notebooks/figures/kv.json``) is what the code
computes: its bytes from the stored blocks, a re-scored row, the incremental-decoding check."""

import json
from pathlib import Path

import numpy as np
import pytest

import tinyquant as tq
from tinyquant.evaluate import EvalSample, Evaluator
from tinyquant.kv_quant import kv_cache, parse_kv
from tinyquant.kv_study import SWEEP, cache_bytes
from tinyquant.llm.data import val_bytes

STUDY = json.loads((Path(__file__).parent.parent / "notebooks/figures/kv.json").read_text())


@pytest.fixture(scope="module")
def setup():
    m = tq.load()
    s = STUDY["sample"]
    ev = Evaluator(m.params, m.cfg, EvalSample(s["n_windows"], s["length"], s["n_boot"], s["seed"]))
    return m, ev


def test_the_committed_study_covers_the_whole_sweep_in_order():
    assert [r["spec"] for r in STUDY["rows"]] == [n for g in SWEEP.values() for n in g]
    for r in STUDY["rows"]:
        spec = parse_kv(r["spec"])
        assert (r["fmt"], r["key_axis"], r["group_size"], r["residual"], r["pre_rope"]) == (
            spec.fmt,
            spec.key_axis,
            spec.group_size,
            spec.residual,
            spec.pre_rope,
        )


def test_every_committed_byte_count_is_recounted_from_the_stored_blocks(setup):
    m, ev = setup
    s, n = ev.windows[0]
    window = val_bytes()[s : s + n].astype(np.int64)
    for r in STUDY["rows"]:
        b = cache_bytes(r["spec"], m.params, m.cfg, window)
        assert {k: r[k] for k in b} == b, r["spec"]


def test_a_committed_row_is_re_scored_to_the_same_figures(setup):
    m, ev = setup
    row = next(r for r in STUDY["rows"] if r["spec"] == "int2")
    r = ev.evaluate(m.params, kv_cache=kv_cache("int2", m.cfg))
    assert r.delta_ppl_pct == pytest.approx(row["delta_ppl_pct"], rel=1e-6, abs=1e-9)
    assert r.kl == pytest.approx(row["kl"], rel=1e-6)
    assert list(r.delta_ppl_ci95) == pytest.approx(row["delta_ppl_ci95"], rel=1e-6, abs=1e-9)


def test_token_by_token_decoding_agreed_with_the_one_call_forward_in_the_committed_run():
    inc = STUDY["incremental"]
    assert inc["same_argmax_share"] > 0.99 and inc["max_abs_logit_difference"] < 0.1
