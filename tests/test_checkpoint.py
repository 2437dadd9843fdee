"""Checkpoints: bit-exact round trip; every malformed file fails with a clear error."""

import json

import numpy as np
import pytest

from tinyquant.llm.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from tinyquant.llm.model import Config, init_params

CFG = Config.tiny()


@pytest.fixture
def saved(tmp_path):
    params = init_params(CFG, seed=4)
    path = save_checkpoint(tmp_path / "m.safetensors", params, CFG, {"steps": 7, "val_loss": 1.5})
    return path, params


def test_save_then_load_is_bit_exact(saved):
    path, params = saved
    loaded, cfg, meta = load_checkpoint(path)
    assert cfg == CFG and meta == {"steps": 7, "val_loss": 1.5}
    assert set(loaded) == set(params)
    for k in params:
        assert loaded[k].dtype == params[k].dtype
        assert loaded[k].tobytes() == params[k].tobytes()


def test_float64_params_round_trip_bit_exact(tmp_path):
    params = init_params(CFG, seed=4, dtype=np.float64)
    loaded, _, _ = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", params, CFG, {}))
    assert all(loaded[k].tobytes() == params[k].tobytes() for k in params)


def test_metadata_records_the_config_and_the_byte_tokenizer(saved):
    meta = read_metadata(saved[0])
    assert json.loads(meta["config"]) == CFG.to_dict()
    assert meta["tokenizer"] == "bytes"


def test_missing_file_raises_file_not_found_with_a_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_file_raises_a_clear_error(saved, tmp_path):
    raw = saved[0].read_bytes()
    for cut in (4, 100, len(raw) // 2, len(raw) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="truncated|not a valid|cut short"):
            load_checkpoint(bad)


def test_corrupted_header_raises_a_clear_error(saved, tmp_path):
    raw = bytearray(saved[0].read_bytes())
    raw[10:20] = b"\xff" * 10
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="not a valid"):
        load_checkpoint(bad)


def test_a_file_that_is_not_safetensors_is_rejected(tmp_path):
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"\x80\x04\x95 this is a pickle, not a checkpoint")
    with pytest.raises(ValueError, match="not a valid safetensors"):
        load_checkpoint(bad)


def test_a_foreign_safetensors_file_is_rejected(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(ValueError, match="not a tinyquant model checkpoint"):
        load_checkpoint(path)


def test_config_that_does_not_match_the_tensors_is_rejected(saved, tmp_path):
    from safetensors.numpy import load_file, save_file

    path, _ = saved
    tensors = load_file(str(path))
    meta = read_metadata(path)
    meta["config"] = json.dumps(Config.tiny().to_dict() | {"d_ff": 96})
    bad = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(bad)


def test_missing_tensor_is_rejected(saved, tmp_path):
    from safetensors.numpy import load_file, save_file

    path, _ = saved
    tensors = load_file(str(path))
    del tensors["blk.1.ffn_up.weight"]
    bad = tmp_path / "missing.safetensors"
    save_file(tensors, str(bad), metadata=read_metadata(path))
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(bad)


def test_saving_params_that_do_not_fit_the_config_is_refused(tmp_path):
    params = init_params(CFG)
    params["output.weight"] = params["output.weight"][:, :3]
    with pytest.raises(ValueError, match="shape"):
        save_checkpoint(tmp_path / "x.safetensors", params, CFG, {})


def test_a_flipped_byte_in_the_tensor_data_is_caught_by_the_checksum(saved, tmp_path):
    raw = bytearray(saved[0].read_bytes())
    raw[-5] ^= 0x40  # inside the last tensor's bytes
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(bad)


def _shipped():
    from tinyquant.llm.checkpoint import SHIPPED

    if not SHIPPED.exists():
        pytest.fail("the shipped checkpoint is missing; run the README's `tinyquant train` command")
    return load_checkpoint()


def test_shipped_checkpoint_is_a_finished_run_of_the_default_preset():
    _, cfg, meta = _shipped()
    assert cfg == Config()
    assert meta["complete"] and meta["steps"] == meta["train_config"]["steps"]
    assert meta["command"].startswith("tinyquant train")


def test_shipped_checkpoint_prefix_validation_loss_matches_its_metadata():
    from tinyquant.llm.data import val_bytes
    from tinyquant.llm.nll import eval_loss

    params, cfg, meta = _shipped()
    n = meta["train_config"]["eval_bytes"]
    got = eval_loss(params, cfg, val_bytes(), max_bytes=n)["val_loss"]
    assert abs(got - meta["curve"][-1]["val_loss_prefix"]) < 1e-4


@pytest.mark.slow
def test_shipped_checkpoint_full_validation_loss_matches_its_metadata():
    from tinyquant.llm.data import val_bytes
    from tinyquant.llm.nll import eval_loss

    params, cfg, meta = _shipped()
    got = eval_loss(params, cfg, val_bytes())
    assert got["tokens"] == meta["val_tokens"]
    assert abs(got["val_loss"] - meta["val_loss"]) < 1e-4
