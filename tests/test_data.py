"""The corpus: cleaning, the byte tokenizer, the split by play, the samplers."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tinyquant.llm import data as D


@given(st.text())
def test_decode_inverts_encode_for_any_text(text):
    assert D.decode(D.encode(text)) == text


@given(st.binary())
def test_encode_is_the_utf8_bytes(raw):
    text = raw.decode("utf-8", errors="replace")
    assert D.encode(text).tobytes() == text.encode("utf-8")


def test_corpus_has_all_38_plays_and_the_validation_plays_exist():
    plays = D.load_plays()
    assert len(plays) == 38
    assert set(D.VALIDATION_PLAYS) <= set(plays)


def test_no_play_is_in_both_splits():
    assert not set(D.train_plays()) & set(D.VALIDATION_PLAYS)
    assert set(D.train_plays()) | set(D.VALIDATION_PLAYS) == set(D.load_plays())


def test_validation_is_about_a_tenth_of_the_bytes():
    v, t = len(D.val_bytes()), len(D.train_bytes())
    assert 0.08 < v / (v + t) < 0.12


def test_cleaning_removes_markdown_and_keeps_speakers_and_lines():
    text = D.load_plays()["macbeth"]
    for mark in ("**", "_", "#", "\\"):
        assert mark not in text
    assert "\nMACBETH:\nSo foul and fair a day I have not seen.\n" in text


def test_cleaning_is_deterministic():
    md = "# T\n\n**A**  \nline one  \n_stage_ \\[x]\n"
    assert D.clean_markdown(md) == D.clean_markdown(md) == "T\n\nA:\nline one\nstage [x]\n"


def test_batches_are_reproducible_and_targets_are_inputs_shifted_by_one():
    data = D.train_bytes()
    x1, y1 = next(D.batches(data, 4, 64, seed=9))
    x2, y2 = next(D.batches(data, 4, 64, seed=9))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(x1[:, 1:], y1[:, :-1])


def test_calibration_samples_come_only_from_training_plays():
    samples = D.calibration_samples(16, 64, seed=0)
    plays = D.load_plays()
    train_text = [D.encode(plays[n]).tobytes() for n in D.train_plays()]
    val_text = [D.encode(plays[n]).tobytes() for n in D.VALIDATION_PLAYS]
    for row in samples:
        s = row.astype(np.uint8).tobytes()
        assert any(s in t for t in train_text)
        assert not any(s in v for v in val_text)


def test_calibration_samples_are_seeded():
    a = D.calibration_samples(4, 32, seed=1)
    assert np.array_equal(a, D.calibration_samples(4, 32, seed=1))
    assert not np.array_equal(a, D.calibration_samples(4, 32, seed=2))
