"""Checkpoints: the params dict in a safetensors file, the config and training metadata as JSON.

File layout (safetensors, https://github.com/huggingface/safetensors): an 8-byte little-endian
header length, a JSON header (tensor dtypes/shapes/offsets and a ``__metadata__`` map of
strings), then the raw tensor bytes. Ours stores, in ``__metadata__``:

    format     "tinyquant-llm/1"
    config     JSON of ``Config``
    tokenizer  "bytes" (token id = UTF-8 byte)
    training   JSON of the training metadata (steps, seed, val_loss, bytes seen, command, curve)
    sha256     hash of every tensor's name and bytes (safetensors itself has no checksum), so a
               flipped bit in the data is caught on load

Never pickle: loading a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from tinyquant.llm.model import Config, param_shapes

FORMAT = "tinyquant-llm/1"
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "shakespeare.safetensors"


def save_checkpoint(path: str | Path, params: dict, cfg: Config, metadata: dict) -> Path:
    """Write ``params`` (name → array) with ``cfg`` and JSON-able ``metadata`` to ``path``.

    >>> import tempfile, os
    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny(); p = init_params(cfg)
    >>> f = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> _ = save_checkpoint(f, p, cfg, {"steps": 0})
    >>> q, cfg2, meta = load_checkpoint(f)
    >>> cfg2 == cfg, meta["steps"], all((p[k] == q[k]).all() for k in p)
    (True, 0, True)
    """
    from safetensors.numpy import save_file

    _check_params(params, cfg, where=str(path))
    path = check_output_path(path)
    header = {
        "format": FORMAT,
        "config": json.dumps(cfg.to_dict()),
        "tokenizer": "bytes",
        "training": json.dumps(metadata),
        "sha256": tensors_sha256(params),
    }
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=header)
        tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
    except OSError as err:
        raise ValueError(f"cannot write the checkpoint {path} ({err}); pick another path") from err
    finally:
        tmp.unlink(missing_ok=True)  # nothing half-written stays behind
    return path


def check_output_path(path: str | Path) -> Path:
    """``path`` as a writable file path (its folder created), checked before any work is done.

    >>> import tempfile
    >>> check_output_path(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: output path ... is a directory; give a file name such as .../model.safetensors
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"output path {path} is a directory; give a file name such as "
            f"{path / 'model.safetensors'}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the folder of {path} ({err}); pick another path") from err
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{path} is not writable; pick another output path")
    return path


def tensors_sha256(params: dict) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor, in name order.

    >>> len(tensors_sha256({"a": np.zeros(2, np.float32)}))
    64
    """
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _check_params(params: dict, cfg: Config, where: str) -> None:
    expected = param_shapes(cfg)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{where}: tensors do not match the config (missing {missing[:4]}, unexpected "
            f"{extra[:4]}); the file was written for another model — retrain or pick the right file"
        )
    for name, shape in expected.items():
        a = params[name]
        if tuple(a.shape) != shape:
            raise ValueError(
                f"{where}: {name} has shape {tuple(a.shape)} but the config implies "
                f"{shape}; the checkpoint and its config disagree — retrain it"
            )
        if np.asarray(a).dtype.kind != "f" or not np.isfinite(a).all():
            raise ValueError(
                f"{where}: {name} holds NaN/Inf or is not a float tensor; the weights are "
                "broken — retrain or pick another file"
            )


def read_header(path: str | Path | None = None) -> dict:
    """The JSON header of a safetensors file, checked against the file's size (any format).

    Raises ValueError for a truncated or malformed file, FileNotFoundError if it is missing.
    """
    path = SHIPPED if path is None else Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; pass the .safetensors file in it")
    if not path.is_file():
        hint = (
            "train one with `tinyquant train`"
            if path == SHIPPED
            else "check the path, or omit it to use the shipped checkpoint"
        )
        raise FileNotFoundError(f"checkpoint {path} does not exist; {hint}")
    size = path.stat().st_size
    bad = f"{path} is not a valid safetensors checkpoint"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{bad} (file is {size} bytes); re-download or retrain it")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"{bad} (header claims {n} bytes, file is {size}); is it truncated?")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{bad} (unreadable header: {err}); re-save it") from err
    if not isinstance(header, dict):
        raise ValueError(f"{bad} (header is not a JSON object); re-save it")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise ValueError(f"{bad} (a tensor entry lacks data_offsets); re-save it") from err
    if 8 + n + max(ends, default=0) > size:
        raise ValueError(f"{bad}: tensor data is cut short ({size} bytes); the file is truncated")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{bad} (__metadata__ is not a map of strings); re-save it")
    header["__metadata__"] = meta
    return header


def read_metadata(path: str | Path | None = None) -> dict[str, str]:
    """The ``__metadata__`` strings of a tinyquant model checkpoint, validating its header."""
    path = SHIPPED if path is None else Path(path)
    meta = read_header(path)["__metadata__"]
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a safetensors file but not a tinyquant model checkpoint "
            f"(format {meta.get('format')!r}); write it with save_checkpoint"
        )
    return meta


def load_checkpoint(path: str | Path | None = None) -> tuple[dict, Config, dict]:
    """(params, cfg, metadata) from ``path``; ``None`` means the shipped Shakespeare model."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = SHIPPED if path is None else Path(path)
    meta = read_metadata(path)
    try:
        cfg = Config(**json.loads(meta["config"]))
        training = json.loads(meta.get("training", "{}"))
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path}: config metadata is missing or malformed ({err}); retrain"
        ) from err
    try:
        params = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read tensors ({err}); the file is corrupted") from err
    _check_params(params, cfg, where=str(path))
    if "sha256" in meta and tensors_sha256(params) != meta["sha256"]:
        raise ValueError(f"{path}: tensor data does not match its checksum; the file is corrupted")
    return params, cfg, training
