"""Malformed checkpoints and bad output paths give one-line errors; nothing half-written stays."""

import json
import struct

import numpy as np
import pytest

from tinyquant.llm.checkpoint import load_checkpoint, save_checkpoint
from tinyquant.llm.model import Config, init_params
from tinyquant.llm.train import TrainConfig, train


def _write(path, header, data=b""):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "header,match",
    [
        ({"__metadata__": ["a"], "t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
         "__metadata__"),
        ({"__metadata__": {"format": "tinyquant-llm/1"}, "t": {"dtype": "F32", "shape": [1]}},
         "data_offsets"),
        ({"t": [1, 2]}, "data_offsets"),
    ],
)  # fmt: skip
def test_a_malformed_header_is_a_one_line_error(tmp_path, header, match):
    p = _write(tmp_path / "bad.safetensors", header, b"\0" * 4)
    with pytest.raises(ValueError) as err:
        load_checkpoint(p)
    assert match in _one_line(err)


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path)
    assert "directory" in _one_line(err)


def test_a_config_with_zero_heads_is_refused_on_load(tmp_path):
    cfg = Config.tiny()
    p = save_checkpoint(tmp_path / "m.safetensors", init_params(cfg), cfg, {})
    raw = p.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    c = json.loads(header["__metadata__"]["config"]) | {"n_heads": 0}
    header["__metadata__"]["config"] = json.dumps(c)
    h = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])
    with pytest.raises(ValueError) as err:
        load_checkpoint(p)
    assert "n_heads" in _one_line(err)


def test_train_refuses_a_directory_as_output_before_training(tmp_path, monkeypatch):
    import tinyquant.llm.train as T

    monkeypatch.setattr(T, "loss_and_grads", lambda *a: pytest.fail("training started"))
    data = np.frombuffer(b"to be or not to be " * 20, dtype=np.uint8)
    tc = TrainConfig(steps=1, batch_size=1, warmup=0, eval_every=0)
    with pytest.raises(ValueError) as err:
        train(Config.tiny(), tc, data, data, out=tmp_path, progress=False)
    assert "directory" in _one_line(err)


def test_a_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    import safetensors.numpy

    def broken(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    cfg = Config.tiny()
    with pytest.raises(ValueError) as err:
        save_checkpoint(tmp_path / "m.safetensors", init_params(cfg), cfg, {})
    assert "disk full" in _one_line(err)
    assert list(tmp_path.iterdir()) == []
