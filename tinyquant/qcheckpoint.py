"""Quantized checkpoints: packed codes, scales, zeros and rotation seeds in one safetensors file.

    tensors    every float tensor as stored (float32, float16, or bfloat16 bits as uint16) and,
               for each quantized Linear, its arrays under ``name.codes``, ``name.scale``,
               ``name.zero`` (``name.inner.…`` for wrapped Linears, ``name.scale.…`` for a
               double-quantized scale)
    metadata   format "tinyquant-quantized/1", the model config, the recipe (JSON), a layout
               entry per parameter (``{"type": "QuantLinear", …}`` or ``{"type": "array",
               "storage": …}``), the FP32 checkpoint's sha256, and a sha256 of every tensor

Loading rebuilds each Linear from its own layout (``Linear.from_state``) and checks every array
against the shape and dtype that layout and the config imply; the loaded model computes the
in-memory model's logits bit for bit. ``Model.save`` and ``tq.load`` (qmodel.py, api.py)
call these two functions. Never pickle: loading a file cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyquant.linears import linear_from_state
from tinyquant.llm.checkpoint import read_header, tensors_sha256
from tinyquant.llm.model import Config, param_shapes
from tinyquant.recipe import Recipe

__all__ = ["FORMAT", "write_quantized", "read_quantized", "is_quantized"]

FORMAT = "tinyquant-quantized/1"


def _to_stored(a: np.ndarray, storage: str | None) -> np.ndarray:
    if storage == "fp16":
        return a.astype(np.float16)
    if storage == "bf16":  # the top 16 bits of float32 (the values are bf16-exact already)
        return (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return np.ascontiguousarray(a)


def _from_stored(a: np.ndarray, storage: str, name: str) -> np.ndarray:
    want = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16}.get(storage)
    if want is None or a.dtype != want:
        raise ValueError(f"{name}: stored as {a.dtype}, but its layout says {storage!r}")
    if storage == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def write_quantized(
    path: str | Path,
    params: dict,
    cfg: Config,
    recipe: Recipe,
    storage: dict[str, str],
    base_sha256: str | None,
) -> Path:
    """Write a quantized model's parts to ``path``; atomic (a temporary file, renamed)."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name such as model.safetensors")
    tensors, layout = {}, {}
    for name, t in params.items():
        if isinstance(t, np.ndarray):
            kind = storage.get(name, "fp32")
            tensors[name] = _to_stored(t, kind)
            layout[name] = {"type": "array", "storage": kind}
        else:
            arrays, layout[name] = t.to_state(name + ".")
            tensors |= {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    meta = {
        "format": FORMAT,
        "config": json.dumps(cfg.to_dict()),
        "recipe": recipe.to_json(),
        "layout": json.dumps(layout),
        "base_sha256": base_sha256 or "",
        "sha256": tensors_sha256(tensors),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror}; check the directory") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def is_quantized(path: str | Path) -> bool:
    """True if ``path`` is a quantized checkpoint (False for a plain model checkpoint)."""
    return read_header(path)["__metadata__"].get("format") == FORMAT


def read_quantized(path: str | Path) -> tuple[dict, Config, Recipe, dict[str, str], str | None]:
    """(params, cfg, recipe, storage, base_sha256) written by ``write_quantized``; any
    inconsistency is a one-line ValueError."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    meta = read_header(path)["__metadata__"]
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a quantized tinyquant checkpoint (format {meta.get('format')!r}); "
            "write one with `tinyquant quantize`"
        )
    try:
        cfg = Config(**json.loads(meta["config"]))
        recipe = Recipe.from_json(meta["recipe"])
        layout = json.loads(meta["layout"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: metadata is missing or malformed ({err!r}); re-save it") from err
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read tensors ({err}); the file is corrupted") from err
    if tensors_sha256(arrays) != meta.get("sha256"):
        raise ValueError(f"{path}: tensor data does not match its checksum; the file is corrupted")
    shapes = param_shapes(cfg)
    if not isinstance(layout, dict) or set(layout) != set(shapes):
        raise ValueError(f"{path}: its parameters do not match the config; re-save it")
    params, storage = {}, {}
    for name, entry in layout.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: layout of {name} is not an object; re-save it")
        if entry.get("type") == "array":
            if name not in arrays:
                raise ValueError(f"{path}: tensor {name} is missing")
            params[name] = _from_stored(arrays[name], entry.get("storage", ""), name)
            if entry["storage"] != "fp32":
                storage[name] = entry["storage"]
            got = params[name].shape
        else:
            params[name] = linear_from_state(arrays, entry, name + ".")
            got = (params[name].out_features, params[name].in_features)
        if tuple(got) != shapes[name]:
            raise ValueError(f"{path}: {name} has shape {tuple(got)}, the config implies "
                             f"{shapes[name]}")  # fmt: skip
        if isinstance(params[name], np.ndarray) and not np.isfinite(params[name]).all():
            raise ValueError(f"{path}: {name} holds NaN or Inf")
    return params, cfg, recipe, storage, meta.get("base_sha256") or None
