"""Calibration texts are what they claim, and the committed calibration study
(``tinyquant calibration --json notebooks/figures/calibration.json``) is what the code computes."""

import json
import platform
from pathlib import Path

import numpy as np
import pytest

import tinyquant as tq
from tinyquant.calibration_study import (
    RECIPES,
    REDRAWN,
    REDRAWS,
    TEXTS,
    WINDOWS,
    calibration_text,
    stdlib_bytes,
)
from tinyquant.evaluate import EvalSample, Evaluator
from tinyquant.llm.data import calibration_samples

STUDY = json.loads(
    (Path(__file__).parent.parent / "notebooks/figures/calibration.json").read_text()
)


def test_every_text_is_deterministic_and_the_three_texts_differ():
    a = {t: calibration_text(t, 4, 64, seed=1) for t in TEXTS}
    for t in TEXTS:
        assert np.array_equal(a[t], calibration_text(t, 4, 64, seed=1))
        assert a[t].shape == (4, 64) and a[t].dtype == np.int64
    assert not np.array_equal(a["plays"], a["python"]) and not np.array_equal(
        a["python"], a["random"]
    )


def test_python_windows_are_slices_of_the_standard_library_source():
    src = stdlib_bytes()
    for w in calibration_text("python", 3, 40, seed=2):
        assert bytes(w.astype(np.uint8)) in src


def test_play_windows_are_the_training_play_samples_every_command_uses():
    assert np.array_equal(calibration_text("plays", 5, 32, seed=0), calibration_samples(5, 32, 0))


def test_the_committed_study_has_every_recipe_at_every_size_and_text():
    have = {(r["recipe"], r["text"], r["windows"]) for r in STUDY["rows"]}
    n = STUDY["text_windows"]
    want = {(m, "plays", w) for m in RECIPES for w in WINDOWS} | {
        (m, t, n) for m in RECIPES for t in TEXTS
    }
    assert want <= have
    redrawn = {(r["recipe"], r["windows"], r["seed"]) for r in STUDY["rows"] if r["seed"]}
    assert redrawn == {(m, w, s) for m in REDRAWN for w in WINDOWS for s in REDRAWS}


def test_a_committed_row_is_re_scored_to_the_same_figures():
    import dataclasses

    from tinyquant.presets import get_recipe
    from tinyquant.qmodel import quantize_model

    m = tq.load()
    ev = Evaluator(m.params, m.cfg, EvalSample(**STUDY["sample"]))
    row = next(
        r
        for r in STUDY["rows"]
        if (r["recipe"], r["text"], r["windows"], r["seed"])
        == ("w8a8-o3", "plays", min(WINDOWS), 0)
    )
    recipe = dataclasses.replace(get_recipe("w8a8-o3"), calib_windows=None)
    calib = calibration_text("plays", min(WINDOWS), m.cfg.context, seed=0)
    r = ev.evaluate(quantize_model(m.params, m.cfg, recipe, calib).params)
    assert r.delta_ppl_pct == pytest.approx(row["delta_ppl_pct"], rel=1e-6, abs=1e-9)


@pytest.mark.skipif(
    platform.python_version() != STUDY["python"],
    reason="the standard library's source differs between Python versions",
)
def test_the_standard_library_text_is_the_one_the_committed_study_read():
    assert len(stdlib_bytes()) == STUDY["stdlib_bytes"]
