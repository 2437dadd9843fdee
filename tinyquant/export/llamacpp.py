"""llama.cpp itself, through llama-cpp-python, as the oracle for our GGUF files.

Two calls: llama.cpp's own quantizer (``llama_model_quantize``, what ``llama-quantize`` runs) on a
GGUF file, optionally with an importance matrix; and llama.cpp's forward pass on a token
sequence (all positions' logits). Both need the optional package ``llama-cpp-python`` (dev
extras), which builds llama.cpp from source with the machine's compiler.

Refs: llama.cpp include/llama.h (llama_model_quantize_params, llama_model_imatrix_data);
llama-cpp-python's low-level bindings (llama_cpp.llama_cpp).
Shapes: T tokens, V vocabulary; logits (T, V) float32.
"""

from __future__ import annotations

import ctypes
import io
import os
import sys
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import numpy as np

__all__ = ["llama_cpp_quantize", "llama_cpp_logits", "llama_cpp_greedy",
           "llama_cpp_decode_tokens_per_s"]  # fmt: skip


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as err:
        raise ValueError("llama-cpp-python is not installed; pip install -e '.[dev]'") from err
    return llama_cpp


@contextmanager
def _c_stderr_silenced():
    """llama.cpp logs each tensor it quantizes — from C to file descriptor 2, and through
    llama-cpp-python's log callback to ``sys.stderr``; send both to /dev/null meanwhile."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def llama_cpp_quantize(src, dst, ftype: str, imatrix: dict | None = None, threads: int = 1) -> Path:
    """Quantize GGUF ``src`` to ``dst`` with llama.cpp (``ftype`` e.g. "Q4_K_M", "Q8_0")."""
    lc = _llama_cpp()
    p = lc.llama_model_quantize_default_params()
    code = getattr(lc, f"LLAMA_FTYPE_MOSTLY_{ftype}", None)
    if code is None:
        raise ValueError(f"llama.cpp has no file type {ftype!r}")
    p.ftype, p.nthread = code, threads
    keep = []  # the float buffers must outlive the call
    if imatrix:
        arr = (lc.llama_model_imatrix_data * (len(imatrix) + 1))()  # NULL-name terminated
        for i, (name, v) in enumerate(imatrix.items()):
            v = np.ascontiguousarray(v, np.float32)
            keep.append(v)
            arr[i].name, arr[i].size = name.encode(), v.size
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[len(imatrix)].name = None
        p.imatrix = ctypes.cast(arr, ctypes.POINTER(lc.llama_model_imatrix_data))
    with _c_stderr_silenced():
        rc = lc.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    if rc != 0:
        raise ValueError(f"llama_model_quantize({src} → {ftype}) failed with code {rc}")
    return Path(dst)


def llama_cpp_logits(path, tokens: np.ndarray, f32_cache: bool = True, n_batch: int = 512):
    """llama.cpp's logits (T, V) for every position of ``tokens`` (T,), one sequence from 0.

    ``f32_cache`` keeps the KV cache in float32 (llama.cpp's default is F16). ``n_batch`` 1
    decodes token by token: the llama-cpp-python 0.3.36 build here segfaults in batched decode
    of quantized weights (its own Q8_0 files too), never token by token.
    """
    lc = _llama_cpp()
    kw = {"type_k": lc.GGML_TYPE_F32, "type_v": lc.GGML_TYPE_F32} if f32_cache else {}
    llm = lc.Llama(model_path=str(path), logits_all=True, n_ctx=max(256, len(tokens)),
                   n_threads=1, n_batch=n_batch, n_ubatch=n_batch, verbose=False, **kw)  # fmt: skip
    try:
        llm.eval([int(t) for t in tokens])
        return np.array(llm.scores[: len(tokens)], np.float32)
    finally:
        llm.close()


def llama_cpp_greedy(path, tokens: np.ndarray, n: int) -> list[int]:
    """``tokens`` followed by llama.cpp's ``n`` greedy (argmax) next tokens, KV cache in F32.

    The argmax is ours, over llama.cpp's logits, so no sampler setting can change it.
    """
    lc = _llama_cpp()
    llm = lc.Llama(model_path=str(path), n_ctx=max(256, len(tokens) + n), n_threads=1,
                   logits_all=True, type_k=lc.GGML_TYPE_F32, type_v=lc.GGML_TYPE_F32,
                   verbose=False)  # fmt: skip
    try:
        out = [int(t) for t in tokens]
        llm.eval(out)
        for _ in range(n):
            out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval(out[-1:])
        return out
    finally:
        llm.close()


def llama_cpp_decode_tokens_per_s(
    path, vocab_size: int = 256, n_tokens: int = 64, prompt_len: int = 16, repeats: int = 3,
    threads: int = 1,
) -> float:  # fmt: skip
    """llama.cpp's batch-1 greedy decoding speed on a GGUF file, timed as we time ours.

    The same protocol as ``tinyquant.metrics.decode_tokens_per_s``: prefill ``prompt_len`` bytes
    (token by token, see ``llama_cpp_logits``), one untimed step, then ``n_tokens`` timed
    single-token steps, each taking the argmax of the last logits; median of ``repeats`` runs,
    ``threads`` CPU threads, KV cache in llama.cpp's default F16.
    """
    import statistics
    import time

    lc = _llama_cpp()
    prompt = [int(t) for t in (np.arange(prompt_len) * 7 + 65) % vocab_size]
    llm = lc.Llama(model_path=str(path), n_ctx=max(256, prompt_len + n_tokens + 2),
                   n_threads=threads, n_threads_batch=threads, n_batch=1, n_ubatch=1,
                   logits_all=True, verbose=False)  # fmt: skip
    try:
        times = []
        for _ in range(repeats):
            llm.reset()
            llm.eval(prompt)
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])  # warm step, untimed
            t0 = time.perf_counter()
            for _ in range(n_tokens):
                llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
            times.append(time.perf_counter() - t0)
        return n_tokens / statistics.median(times)
    finally:
        llm.close()
