"""GGUF v3 export and import: the model as a file llama.cpp runs, quantized as llama-quantize does.

A GGUF file is a header, key–value metadata, tensor infos, then aligned tensor data:

    [ "GGUF" | version 3 | n_tensors | n_kv ][ kv: general.architecture = "llama", llama.* … ]
    [ tensor info: name, dims (ne0 = row length first), ggml type, offset ] … [ pad to 32 ]
    [ tensor data, each aligned to 32 bytes ]

What we write (gguf-py's GGUFWriter): architecture ``llama`` with context length, embedding
length, block count, feed-forward length, head count (kv), RoPE base and RMSNorm ε; a tokenizer
of model ``llama`` (SentencePiece) whose 256 tokens are ``<0x00>`` … ``<0xFF>``, all of type
BYTE: SPM is the one llama.cpp tokenizer with byte tokens built in (byte fallback), so each of
our byte ids maps to exactly that byte in llama.cpp's detokenizer, with no merges and no
byte-to-unicode table (GPT-2 BPE would need both). The tensors keep our names (they are GGUF's).

RoPE: we rotate halves (x_i, x_{i+hd/2}); llama.cpp's ``llama`` rotates adjacent pairs
(x_{2i}, x_{2i+1}). Rows of attn_q / attn_k are permuted per head on export, as
convert_hf_to_gguf.py's ``permute`` does — row r = 2i + h of a head takes our row h·hd/2 + i:
    W.reshape(n_head, 2, hd/2, d).swapaxes(1, 2).reshape(W.shape)
and un-permuted on import. Per-tensor types follow llama-quantize's mixes (mix.py).

Refs: ggml docs/gguf.md (the file format, v3); llama.cpp convert_hf_to_gguf.py
(LlamaModel.permute), src/llama-quant.cpp; gguf-py (GGUFWriter, GGUFReader).
Shapes: W (O, I) our Linear layout = ggml ne [I, O]; hd head dim; d model width.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tinyquant.export.mix import FILE_TYPES, tensor_types
from tinyquant.llm.model import Config
from tinyquant.quant.gguf_blocks import dequantize_gguf, quantize_gguf
from tinyquant.quant.kquants import dequantize_kquant, quantize_kquant

__all__ = ["export_gguf", "import_gguf", "permute_qk", "unpermute_qk", "encode_tensor"]

BLOCK_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
K_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def gguf_py():
    """The ``gguf`` package (llama.cpp's gguf-py), an optional dependency (dev extras)."""
    try:
        import gguf
    except ImportError as err:
        raise ValueError("GGUF files need the gguf package: pip install gguf") from err
    return gguf


@contextmanager
def written_beside(path: Path, suffix: str):
    """Yield a temp file in ``path``'s directory; on success rename it to ``path`` (atomic),
    on any failure remove it — a GGUF file is written complete or not at all."""
    try:
        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_and_close(w) -> None:
    """A ``GGUFWriter``'s header, key-values and tensors, in file order; then close it."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rotate-half rows → llama.cpp's adjacent-pair rows, per head (convert_hf_to_gguf permute).

    >>> permute_qk(np.arange(4.0)[:, None], 1)[:, 0].tolist()     # hd 4: rows 0, 2, 1, 3
    [0.0, 2.0, 1.0, 3.0]
    """
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_qk.

    >>> w = np.arange(16.0).reshape(8, 2)
    >>> bool((unpermute_qk(permute_qk(w, 2), 2) == w).all())
    True
    """
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def encode_tensor(w: np.ndarray, ggml_type: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """float32 (…, n) → the array GGUFWriter stores: float32/16 values or uint8 block bytes.

    >>> encode_tensor(np.ones((2, 256), np.float32), "Q4_K").shape
    (2, 144)
    """
    if ggml_type == "F32":
        return np.ascontiguousarray(w, np.float32)
    if ggml_type == "F16":
        return np.ascontiguousarray(w, np.float16)
    if ggml_type in BLOCK_TYPES:
        return quantize_gguf(w, ggml_type.lower(), imatrix)
    if ggml_type in K_TYPES:
        return quantize_kquant(w, ggml_type.lower(), imatrix)
    raise ValueError(f"GGML type {ggml_type!r} is not one we write; use one of "
                     f"F32, F16, {', '.join(BLOCK_TYPES + K_TYPES)}")  # fmt: skip


def decode_tensor(data: np.ndarray, ggml_type: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of encode_tensor: stored data → float32 of ``shape`` (our (O, I) order)."""
    n = shape[-1]
    if ggml_type in ("F32", "F16"):
        return np.asarray(data, np.float32).reshape(shape)
    rows = np.asarray(data, np.uint8).reshape(int(np.prod(shape[:-1], dtype=np.int64)), -1)
    if ggml_type in BLOCK_TYPES:
        return dequantize_gguf(rows, ggml_type.lower(), n).reshape(shape)
    if ggml_type in K_TYPES:
        return dequantize_kquant(rows, ggml_type.lower(), n).reshape(shape)
    raise ValueError(f"GGML type {ggml_type} is not one tinyquant reads; "
                     f"it reads F32, F16, {', '.join(BLOCK_TYPES + K_TYPES)}")  # fmt: skip


def _ordered(params: dict, cfg: Config) -> list[str]:
    """llama.cpp's conventional order: embeddings, blocks 0…L−1, final norm, head."""
    names = ["token_embd.weight"]
    for i in range(cfg.n_layers):
        names += sorted(n for n in params if n.startswith(f"blk.{i}."))
    return names + ["output_norm.weight", "output.weight"]


def _check_imatrix(imatrix: dict, params: dict) -> None:
    for name, v in imatrix.items():
        if name not in params or np.shape(v) != (params[name].shape[-1],):
            shape = params[name].shape if name in params else "absent"
            raise ValueError(f"imatrix entry {name} {np.shape(v)} does not fit this model "
                             f"(tensor {shape}); compute it for this model")  # fmt: skip


def export_gguf(
    params: dict,
    cfg: Config,
    path: str | Path,
    ftype: str = "F32",
    imatrix: dict[str, np.ndarray] | None = None,
    name: str = "tinyquant-shakespeare",
) -> dict[str, str]:
    """Write the model as a GGUF v3 file of file type ``ftype``; returns {tensor: GGML type}.

    The file appears only when complete (written to a temp file, then renamed).
    """
    gguf = gguf_py()
    if ftype not in FILE_TYPES:
        raise ValueError(f"unknown GGUF type {ftype!r}; choose from {', '.join(FILE_TYPES)}")
    imatrix = imatrix or {}
    _check_imatrix(imatrix, params)
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: directory {path.parent} does not exist")
    names = _ordered(params, cfg)
    types = tensor_types({n: params[n].shape for n in names}, ftype, cfg.n_heads, cfg.n_kv_heads,
                         has_imatrix=bool(imatrix))  # fmt: skip
    with written_beside(path, ".gguf.tmp") as tmp:
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name(name)
        w.add_context_length(cfg.context)
        w.add_embedding_length(cfg.d_model)
        w.add_block_count(cfg.n_layers)
        w.add_feed_forward_length(cfg.d_ff)
        w.add_head_count(cfg.n_heads)
        w.add_head_count_kv(cfg.n_kv_heads)
        w.add_rope_dimension_count(cfg.d_model // cfg.n_heads)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_vocab_size(cfg.vocab_size)
        w.add_file_type(int(gguf.LlamaFileType[f"MOSTLY_{ftype}" if ftype != "F32" else "ALL_F32"]))
        w.add_tokenizer_model("llama")
        n_byte = min(256, cfg.vocab_size)  # ids ≥ 256 (random-weight benchmark shapes only):
        w.add_token_list([f"<0x{b:02X}>" for b in range(n_byte)]  # plain placeholder tokens
                         + [f"<tok{b}>" for b in range(n_byte, cfg.vocab_size)])  # fmt: skip
        w.add_token_scores([0.0] * cfg.vocab_size)
        w.add_token_types([gguf.TokenType.BYTE] * n_byte
                          + [gguf.TokenType.NORMAL] * (cfg.vocab_size - n_byte))  # fmt: skip
        w.add_add_bos_token(False)
        w.add_add_eos_token(False)
        for n in names:
            x = np.asarray(params[n], np.float32)
            if n.endswith(("attn_q.weight", "attn_k.weight")):  # k has n_kv_heads heads
                x = permute_qk(x, cfg.n_heads if n.endswith("attn_q.weight") else cfg.n_kv_heads)
            t = types[n]
            data = encode_tensor(x, t, imatrix.get(n))
            raw = None if t in ("F32", "F16") else gguf.GGMLQuantizationType[t]
            w.add_tensor(n, data, raw_dtype=raw)
        write_and_close(w)
    return types


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        raise ValueError(f"GGUF file has no {key}; it is not a llama model tinyquant can read")
    return f.contents()


def import_gguf(path: str | Path) -> tuple[dict, Config, dict[str, str]]:
    """Read a llama-architecture GGUF into (params of float32 (O, I) weights, cfg, types).

    Quantized tensors are dequantized; attn_q / attn_k rows are un-permuted back to ours.
    """
    gguf = gguf_py()
    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # gguf-py raises ValueError, struct or numpy errors on bad bytes
        raise ValueError(f"{path} is not a readable GGUF file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None  # fmt: skip
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: architecture {arch!r}, tinyquant reads only 'llama'")
    a = "llama."
    n_head = int(_field(reader, a + "attention.head_count"))
    cfg = Config(
        vocab_size=len(_field(reader, "tokenizer.ggml.tokens")),
        d_model=int(_field(reader, a + "embedding_length")),
        n_layers=int(_field(reader, a + "block_count")),
        n_heads=n_head,
        d_ff=int(_field(reader, a + "feed_forward_length")),
        context=int(_field(reader, a + "context_length")),
        rope_theta=float(_field(reader, a + "rope.freq_base")),
        norm_eps=float(_field(reader, a + "attention.layer_norm_rms_epsilon")),
        n_kv_heads=int(_field(reader, a + "attention.head_count_kv")),
    )
    params, types = {}, {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))  # ne reversed = (O, I)
        ttype = t.tensor_type.name
        x = decode_tensor(t.data, ttype, shape)
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            x = unpermute_qk(x, n_head if t.name.endswith("attn_q.weight") else cfg.n_kv_heads)
        params[t.name], types[t.name] = x, ttype
    return params, cfg, types
