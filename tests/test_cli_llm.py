"""The train / eval / generate commands: help, JSON output, defaults, one-line errors."""

import json

import pytest

from tinyquant.cli import main


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    rc = main(
        ["train", "--preset", "tiny", "--steps", "3", "--batch-size", "2", "--warmup", "1"]
        + ["--eval-every", "0", "--out", str(path)]
    )
    assert rc == 0
    return path


@pytest.mark.parametrize("command", ["train", "eval", "generate", "quantize", "compare", "bench"])
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "usage: tinyquant " + command in capsys.readouterr().out


def test_train_records_its_command_in_the_checkpoint(tiny_checkpoint):
    from tinyquant.llm.checkpoint import load_checkpoint

    _, cfg, meta = load_checkpoint(tiny_checkpoint)
    assert meta["command"].startswith("tinyquant train --preset tiny --steps 3")
    assert meta["steps"] == 3 and cfg.d_model == 32


def test_eval_json_prints_one_object_with_the_four_numbers(tiny_checkpoint, capsys):
    capsys.readouterr()
    assert (
        main(["eval", "--checkpoint", str(tiny_checkpoint), "--max-bytes", "3000", "--json"]) == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert set(r) == {"val_loss", "perplexity", "bits_per_byte", "tokens"}
    assert r["tokens"] == 2999


def test_generate_prints_the_prompt_and_its_continuation(tiny_checkpoint, capsys):
    capsys.readouterr()
    assert main(["generate", "ROMEO:", "-n", "10", "--checkpoint", str(tiny_checkpoint)]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")


def test_eval_uses_the_shipped_checkpoint_by_default(capsys):
    capsys.readouterr()
    assert main(["eval", "--max-bytes", "600", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 599


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--checkpoint", "no/such/file.safetensors"], "does not exist"),
        (["generate", "x", "--temperature", "0"], "temperature"),
        (["generate", "x", "--top-k", "0"], "top_k"),
        (["generate", "x" * 300], "longer than the context"),
    ],
)
def test_bad_input_is_a_one_line_error_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_file_that_is_not_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_text("hello")
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    assert "not a valid safetensors" in capsys.readouterr().err
